"""`chunkvault run` as a real daemon: the seed's POST /upload over HTTP, real S3 peers."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.cli import CLI, run_cli, write_config
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config

PW = {"CHUNKVAULT_PASSPHRASE": "daemon passphrase"}
TOKEN = "test-token-123"
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(base: str, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
         content_type: str | None = None) -> tuple[int, bytes]:  # fmt: skip
    request = urllib.request.Request(base + path, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with _opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def daemon(tmp_path: Path, moto_peers):
    port = free_port()
    (tmp_path / "inbox").mkdir()
    config = write_config(
        tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket(),
        api={"listen": f"127.0.0.1:{port}", "token": TOKEN},
        watch={"path": str(tmp_path / "inbox")},
    )  # fmt: skip
    assert run_cli(config, "init", env=PW).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    proc = subprocess.Popen(
        [CLI, "--config", str(config), "run"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if call(base, "GET", "/health", token=None)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "daemon did not come up"
            time.sleep(0.1)
        yield base, config, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def object_count(config: Path) -> int:
    return sum(1 for peer in build_peers(load_config(config)) for _ in peer.list("test/chunks/"))


def test_seed_upload_example_over_http(daemon):
    base, config, _proc = daemon
    blobs = {cid: os.urandom(kib * 1024) for cid, kib in (("c1", 120), ("c2", 200), ("c3", 610))}
    for cid, data in blobs.items():
        status, body = call(
            base, "PUT", f"/chunks/{cid}", data, content_type="application/octet-stream"
        )
        assert status == 201, body
    request = json.dumps(
        {"chunks": [{"id": "c1", "size_in_KB": 120}, {"id": "c2", "size_in_KB": 999},
                    {"id": "c3", "size_in_KB": 610}], "request_id": "1234"}
    ).encode()  # fmt: skip
    status, body = call(base, "POST", "/upload", request, content_type="application/json")
    assert status == 200
    assert json.loads(body) == {
        "chunks": [{"id": "c1", "send": "OK"}, {"id": "c2", "send": "NOTOK"},
                   {"id": "c3", "send": "OK"}],
        "request_id": "1234",
    }  # fmt: skip
    stored = object_count(config)
    assert stored == 4  # c1 and c3, two replicas each
    # Replay: same answer, nothing written.
    assert call(base, "POST", "/upload", request, content_type="application/json") == (200, body)
    assert object_count(config) == stored
    other = json.dumps({"chunks": [{"id": "c1", "size_in_KB": 120}], "request_id": "1234"})
    status, err = call(base, "POST", "/upload", other.encode(), content_type="application/json")
    assert status == 409 and "error" in json.loads(err)
    # The stored bytes come back decrypted; details name the peers.
    assert call(base, "GET", "/chunks/c3") == (200, blobs["c3"])
    status, detail = call(base, "GET", "/upload/1234")
    chunks = json.loads(detail)["chunks"]
    assert [len(c["peers"]) for c in chunks] == [2, 0, 2]
    assert "size mismatch" in chunks[1]["reason"]
    assert math.ceil(len(blobs["c2"]) / 1024) == 200
    # No token, wrong token, malformed bodies: 4xx with a JSON error, never 5xx.
    assert call(base, "POST", "/upload", request, token=None, content_type="application/json")[
        0
    ] in (401, 422)
    assert call(base, "GET", "/status", token=None)[0] == 401
    assert call(base, "GET", "/status", token="wrong")[0] == 401
    for bad in (b"{", b"[]", b'{"chunks":[],"request_id":"x"}',
                b'{"chunks":[{"id":"c1","size_in_KB":"12"}],"request_id":"x"}'):  # fmt: skip
        status, err = call(base, "POST", "/upload", bad, content_type="application/json")
        assert 400 <= status < 500 and "error" in json.loads(err), (bad, status)
    status, body = call(base, "GET", "/status")
    report = json.loads(body)
    assert [p["up"] for p in report["peers"]] == [True, True, True]
    assert report["under_replicated"] == 0
    status, metrics = call(base, "GET", "/metrics")
    assert status == 200 and b"chunkvault_api_upload_chunks_total" in metrics


def test_sigterm_stops_the_daemon_cleanly(daemon):
    _base, _config, proc = daemon
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 10


def test_run_refuses_an_open_api(tmp_path, moto_peers):
    config = write_config(tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket())
    result = run_cli(config, "run", env=PW)
    assert result.returncode == 1 and "api.token is not set" in result.stderr
