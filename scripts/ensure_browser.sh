#!/usr/bin/env bash
# Called by `make test`: make sure the Chromium the browser tests drive is installed (Debian's package,
# as root or with password-less sudo). Where it cannot be installed, say so in one line and go on: the
# browser tests are then skipped, except in CI (ATTNVIZ_REQUIRE_BROWSER=1), where they fail.
set -u
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  if [ "$SUDO" != "none" ]; then
    echo "installing Chromium for the browser tests (apt-get install chromium chromium-driver)..."
    $SUDO apt-get update -qq >/dev/null 2>&1
    $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1
  fi
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "note: Chromium is not installed and could not be installed here (needs apt-get as root, and the network); the browser and load tests will be skipped."
fi
exit 0
