"""The reverse proxy of attnviz.cluster: a real nginx with the generated configuration, in front of two
small HTTP servers that answer with their own port (the real app behind it: tests/app/test_cluster_load.py).

Checks: a browser without the cookie goes round-robin and gets a cookie naming its process; with the
cookie it stays there; when its process is gone it is moved to a live one and the cookie rewritten.
"""

from __future__ import annotations

import http.cookies
import os
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from attnviz import cluster as cluster_module
from attnviz.cluster import Cluster, find_nginx, nginx_config
from attnviz.errors import AttnvizError

NGINX = find_nginx()
pytestmark = pytest.mark.skipif(NGINX is None and not os.environ.get("ATTNVIZ_REQUIRE_BROWSER"),
                                reason="nginx is not installed (make test installs it where it can)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Named(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"ok" if self.path == "/_stcore/health" else str(self.server.server_port).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(tmp_path):
    backends = [ThreadingHTTPServer(("127.0.0.1", 0), _Named) for _ in range(2)]
    for server in backends:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = _free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_config(port, [s.server_port for s in backends], tmp_path), encoding="utf-8")
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", backends
    finally:
        process.terminate()
        process.wait(timeout=20)
        for server in backends:
            server.shutdown()
            server.server_close()


def _get(url: str, cookie: str | None = None) -> tuple[str, str, str]:
    """(body, X-Attnviz-Backend, the attnviz_backend cookie set) of one request."""
    request = urllib.request.Request(url, headers={"Cookie": f"attnviz_backend={cookie}"} if cookie else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        jar = http.cookies.SimpleCookie(response.headers.get("Set-Cookie", ""))
        return response.read().decode(), response.headers["X-Attnviz-Backend"], jar["attnviz_backend"].value


def test_new_browsers_go_round_robin_and_stay_with_their_process(proxy):
    base, backends = proxy
    ports = sorted(str(s.server_port) for s in backends)
    first_visits = [_get(base + "/") for _ in range(4)]
    assert sorted(body for body, _, _ in first_visits) == sorted(ports * 2)  # two each
    for body, header, cookie in first_visits:
        assert header == cookie == f"127.0.0.1:{body}"  # the cookie names the process that answered
    body, _, cookie = first_visits[0]
    assert {_get(base + "/page", cookie)[0] for _ in range(6)} == {body}


def test_a_browser_whose_process_is_gone_moves_to_a_live_one(proxy):
    base, backends = proxy
    gone, alive = backends
    gone.shutdown()
    gone.server_close()
    body, header, cookie = _get(base + "/", cookie=f"127.0.0.1:{gone.server_port}")
    assert body == str(alive.server_port) and cookie == header == f"127.0.0.1:{alive.server_port}"


def test_a_cookie_naming_no_process_of_the_cluster_goes_round_robin(proxy):
    base, backends = proxy
    body, _, cookie = _get(base + "/", cookie="10.0.0.1:22")
    assert body in {str(s.server_port) for s in backends} and cookie == f"127.0.0.1:{body}"


@pytest.mark.parametrize("arguments, words", [
    ({"processes": 0}, "between 1 and 64"),
    ({"port": 80}, "between 1024"),
    ({"port": 8601, "base_port": 8601}, "also an app process's port"),
    ({"threads_per_process": 0}, "threads per app process"),
])
def test_bad_cluster_settings_are_refused_in_one_sentence(tmp_path, arguments, words):
    with pytest.raises(AttnvizError) as err:
        Cluster(home=tmp_path, **arguments)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_app_processes_get_the_threads_asked_for_else_the_apps_default(tmp_path, monkeypatch):
    from attnviz import device

    monkeypatch.delenv("ATTNVIZ_THREADS", raising=False)
    assert cluster_module.SERVING_THREADS_ENV == device.SERVING_THREADS_ENV
    assert "ATTNVIZ_THREADS" not in Cluster(home=tmp_path).child_environment()
    env = Cluster(home=tmp_path, threads_per_process=3).child_environment()
    assert env["ATTNVIZ_THREADS"] == "3" and device.serving_threads(env) == 3
    assert env["ATTNVIZ_HOME"] == str(tmp_path) and len(env["STREAMLIT_SERVER_COOKIE_SECRET"]) == 64
