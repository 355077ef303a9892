"""`chunkvault run` as a real daemon: the seed's POST /upload over HTTP, real S3 peers."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import CLI, run_cli, write_config
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config

PW = {"CHUNKVAULT_PASSPHRASE": "daemon passphrase"}
TOKEN = "test-token-123"
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
OCTETS = "application/octet-stream"
JSON = "application/json"
MiB = 1024 * 1024
Answer = tuple[int, bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(base: str, method: str, path: str, body: Any = None, token: str | None = TOKEN,
         content_type: str | None = None, timeout: float = 30) -> tuple[int, bytes]:  # fmt: skip
    request = urllib.request.Request(base + path, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Daemon:
    """`chunkvault run` as a subprocess with its API on a free loopback port."""

    def __init__(self, proc: subprocess.Popen[str], base: str, config: Path, tmp: Path) -> None:
        self.proc = proc
        self.base = base
        self.config = config
        self.inbox = tmp / "inbox"
        self.staging = tmp / "state" / "staging"

    def call(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> Answer:
        return call(self.base, method, path, body, **kw)

    def put(self, chunk_id: str, data: Any, timeout: float = 30) -> Answer:
        return self.call("PUT", f"/chunks/{chunk_id}", data, content_type=OCTETS, timeout=timeout)

    def upload(self, request_id: str, chunks: dict[str, int]) -> Answer:
        body = {"chunks": [{"id": c, "size_in_KB": kib} for c, kib in chunks.items()],
                "request_id": request_id}  # fmt: skip
        return self.call("POST", "/upload", json.dumps(body).encode(), content_type=JSON)

    def staged_files(self) -> list[str]:
        return sorted(os.listdir(self.staging))

    def memory(self, field: str) -> int:
        """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of the child, in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) * 1024

    def reset_peak_rss(self) -> None:
        # Unlocking (Argon2, 64 MiB) set a peak that would hide a smaller rise after it.
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


@pytest.fixture
def start_daemon(tmp_path: Path, moto_peers):
    """``start(api=..., umask=..., **sections) -> Daemon``; stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(
        api: dict | None = None,
        umask: int = -1,
        before_run: Callable[[Path], None] | None = None,
        **sections: dict,
    ) -> Daemon:
        port = free_port()
        (tmp_path / "inbox").mkdir(exist_ok=True)
        config = write_config(
            tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket(),
            api={"listen": f"127.0.0.1:{port}", "token": TOKEN, **(api or {})},
            watch={"path": str(tmp_path / "inbox")}, **sections,
        )  # fmt: skip
        assert run_cli(config, "init", env=PW).returncode == 0
        if before_run is not None:
            before_run(tmp_path / "state" / "staging")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
        proc = subprocess.Popen(
            [CLI, "--config", str(config), "run"], env=env, umask=umask,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
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
        return Daemon(proc, base, config, tmp_path)

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


@pytest.fixture
def daemon(start_daemon):
    d = start_daemon()
    return d.base, d.config, d.proc


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


def chunk_keys(config: Path) -> set[tuple[str, str]]:
    """(peer, key) of every chunk object on every peer."""
    return {
        (peer.name, info.key)
        for peer in build_peers(load_config(config))
        for info in peer.list("test/chunks/")
    }


def wait_for(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# --- issue 8 item 7: the API cannot confirm what the vault holds --------------------------


def test_api_cannot_confirm_that_the_tree_holds_a_content(start_daemon):
    d = start_daemon()
    secret = os.urandom(100 * 1024)  # under chunking.min_size: the file is one chunk
    (d.inbox / "secret.bin").write_bytes(secret)

    def tree_stored() -> bool:
        status = json.loads(d.call("GET", "/status")[1])
        return status["extra"]["files"] == 1 and status["queue_depth"] == 0

    wait_for(tree_stored, what="the agent to store secret.bin")
    before = chunk_keys(d.config)
    assert len(before) == 2  # the file's one chunk, two replicas

    guess = os.urandom(100 * 1024)  # the same size, content the vault does not hold
    assert d.put("known", secret)[0] == 201 and d.put("unknown", guess)[0] == 201
    status, body = d.upload("probe", {"known": 100, "unknown": 100})
    assert status == 200
    assert json.loads(body)["chunks"] == [
        {"id": "known", "send": "OK"}, {"id": "unknown", "send": "OK"}
    ]  # fmt: skip
    detail = json.loads(d.call("GET", "/upload/probe")[1])["chunks"]
    known, unknown = ({k: v for k, v in c.items() if k != "id"} for c in detail)
    assert known["reason"] == unknown["reason"] == "stored"
    assert len(known["peers"]) == len(unknown["peers"]) == 2

    # The known content got a new object of its own: nothing of the file's was reused.
    after = chunk_keys(d.config)
    assert before <= after and len(after - before) == 4  # two API chunks, two replicas each
    file_ids = {key for _, key in before}
    assert not file_ids & {key for _, key in after - before}
    assert d.call("GET", "/chunks/known") == (200, secret)

    # Dedup among API chunks stays, and says the same: no new object for the same bytes.
    assert d.put("known-again", secret)[0] == 201
    status, body = d.upload("again", {"known-again": 100})
    again = json.loads(d.call("GET", "/upload/again")[1])["chunks"][0]
    assert again["send"] == "OK" and again["reason"] == "stored"
    assert sorted(again["peers"]) == sorted(known["peers"])
    assert chunk_keys(d.config) == after
