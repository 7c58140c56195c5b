#!/usr/bin/env bash
# Called by `make test`: make sure the system programs some tests drive are installed (Debian's packages,
# as root or with password-less sudo): Chromium for the browser and load tests, nginx for the cluster
# tests (attnviz/cluster.py). Where they cannot be installed, say so in one line and go on: those tests
# are then skipped, except in CI (ATTNVIZ_REQUIRE_BROWSER=1), where they fail.
set -u
CHROMIUM=/usr/bin/chromium
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
[ -x "$CHROMIUM" ] && have_nginx && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  if [ "$SUDO" != "none" ]; then
    echo "installing Chromium and nginx for the browser and cluster tests (apt-get install chromium chromium-driver nginx-light)..."
    $SUDO apt-get update -qq >/dev/null 2>&1
    $SUDO apt-get install -y -qq chromium chromium-driver nginx-light >/dev/null 2>&1 \
      || $SUDO apt-get install -y -qq chromium chromium-driver nginx >/dev/null 2>&1
  fi
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "note: Chromium is not installed and could not be installed here (needs apt-get as root, and the network); the browser and load tests will be skipped."
fi
if ! have_nginx; then
  echo "note: nginx is not installed and could not be installed here; the cluster tests will be skipped."
fi
exit 0
