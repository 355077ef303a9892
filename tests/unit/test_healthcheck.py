"""``python -m chunkvault.healthcheck`` (the image's HEALTHCHECK) as Docker runs it: a
subprocess with $CHUNKVAULT_CONFIG, against a real HTTP listener on loopback."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import write_config


class _Handler(http.server.BaseHTTPRequestHandler):
    reply: tuple[int, bytes] = (200, b'{"status":"ok"}')

    def do_GET(self) -> None:
        status, body = self.reply if self.path == "/health" else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {}))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def check(tmp_path: Path, listen: str, **api: object) -> subprocess.CompletedProcess[str]:
    config = write_config(
        tmp_path / "cv.yaml", ["http://127.0.0.1:9"], "bucket", api={"listen": listen, **api}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")}
    return subprocess.run(
        [sys.executable, "-m", "chunkvault.healthcheck"],
        env=env | {"CHUNKVAULT_CONFIG": str(config)},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_healthy_agent_answers_ok(tmp_path, server):
    result = check(tmp_path, f"127.0.0.1:{server.server_port}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_wildcard_listen_is_probed_on_loopback(tmp_path, server):
    result = check(tmp_path, f"0.0.0.0:{server.server_port}")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "reply, expect",
    [
        ((500, b"{}"), "HTTP 500"),
        ((200, b'{"status":"starting"}'), "starting"),
        ((200, b"[]"), "[]"),
    ],
)
def test_anything_but_ok_is_unhealthy(tmp_path, server, reply, expect):
    server.RequestHandlerClass.reply = reply
    result = check(tmp_path, f"127.0.0.1:{server.server_port}")
    assert result.returncode == 1 and expect in result.stderr, result.stderr


def test_no_listener_is_unhealthy(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        result = check(tmp_path, f"127.0.0.1:{port}")
    assert result.returncode == 1 and "no answer" in result.stderr


def test_bad_config_is_unhealthy_with_the_reason(tmp_path):
    result = check(tmp_path, "127.0.0.1:99999")
    assert result.returncode == 1 and "api.listen" in result.stderr, result.stderr


def test_disabled_api_has_nothing_to_probe(tmp_path):
    result = check(tmp_path, "127.0.0.1:1", enabled=False)
    assert result.returncode == 0 and "api disabled" in result.stdout
