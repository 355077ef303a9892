"""`chunkvault run` as a real daemon: the seed's POST /upload over HTTP, real S3 peers."""

from __future__ import annotations

import contextlib
import http.client
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support.cli import CLI, run_cli, write_config
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.peerhealth import PROBE_MAX_AGE, PROBE_WAIT

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
    """``start(api=..., umask=..., endpoints=..., **sections) -> Daemon`` (``endpoints``:
    peers other than the shared ``moto_peers``); stopped after the test.
    ``start.again(daemon)`` runs a stopped daemon's vault again (same config and port)."""
    started: list[subprocess.Popen[str]] = []

    def start(
        api: dict | None = None,
        umask: int = -1,
        before_run: Callable[[Path], None] | None = None,
        endpoints: list[str] | None = None,
        **sections: dict,
    ) -> Daemon:
        port = free_port()
        (tmp_path / "inbox").mkdir(exist_ok=True)
        config = write_config(
            tmp_path / "cv.yaml", endpoints or moto_peers.endpoints, unique_bucket(),
            api={"listen": f"127.0.0.1:{port}", "token": TOKEN, **(api or {})},
            watch={"path": str(tmp_path / "inbox"), **sections.pop("watch", {})}, **sections,
        )  # fmt: skip
        assert run_cli(config, "init", env=PW).returncode == 0
        if before_run is not None:
            before_run(tmp_path / "state" / "staging")
        return launch(config, port, umask)

    def launch(config: Path, port: int, umask: int = -1) -> Daemon:
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

    def again(daemon: Daemon) -> Daemon:
        assert daemon.proc.poll() is not None, "stop the daemon first"
        return launch(daemon.config, int(daemon.base.rsplit(":", 1)[1]))

    start.again = again  # type: ignore[attr-defined]
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
    """Data objects (chunk objects and packs of small chunks) on every peer."""
    return sum(
        1
        for peer in build_peers(load_config(config))
        for prefix in ("test/chunks/", "test/packs/")
        for _ in peer.list(prefix)
    )


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
    assert stored == 4  # c3 and the pack of c1 (under pack_threshold), two replicas each
    # Replay: same answer, nothing written.
    assert call(base, "POST", "/upload", request, content_type="application/json") == (200, body)
    assert object_count(config) == stored
    other = json.dumps({"chunks": [{"id": "c1", "size_in_KB": 120}], "request_id": "1234"})
    status, err = call(base, "POST", "/upload", other.encode(), content_type="application/json")
    assert status == 409
    assert json.loads(err) == {"error": "request_id already used with another body: 1234"}
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


# --- issue 9 item 3: a dead peer shown as up; under-replicated ------------------------


def test_daemon_status_sees_a_killed_peer_like_the_cli(start_daemon, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(3)]
    d = start_daemon(endpoints=[s.endpoint for s in servers])
    for i in range(10):
        (d.inbox / f"f{i}.bin").write_bytes(os.urandom(20_000))  # one chunk each

    def status() -> dict[str, Any]:
        code, body = d.call("GET", "/status")
        assert code == 200, body
        report: dict[str, Any] = json.loads(body)
        return report

    wait_for(lambda: status()["extra"]["chunks"] == 10 and status()["queue_depth"] == 0,
             what="the agent to store the files")  # fmt: skip
    before = status()
    assert [p["up"] for p in before["peers"]] == [True, True, True]
    assert before["under_replicated"] == 0
    held = {p["name"]: p["chunks"] for p in before["peers"]}
    victim = max(held, key=lambda name: held[name])
    assert held[victim] > 0

    servers[int(victim[1:])].kill()
    # The daemon does no peer I/O while idle: GET /status itself finds the peer dead (its
    # probes are at most PROBE_MAX_AGE = 5 s old).
    wait_for(lambda: not status()["peers"][int(victim[1:])]["up"], timeout=20,
             what="GET /status to see the killed peer down")  # fmt: skip
    after = status()
    assert {p["name"]: p["up"] for p in after["peers"]} == {n: n != victim for n in held}
    assert after["under_replicated"] == held[victim]
    # The CLI, beside the running daemon, says the same.
    cli_status = run_cli(d.config, "status", "--json", env=PW)
    assert cli_status.returncode == 0, cli_status.stderr
    cli_report = json.loads(cli_status.stdout)
    listed = run_cli(d.config, "peers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    for rows in (cli_report["peers"], json.loads(listed.stdout)):
        assert {p["name"]: p["up"] for p in rows} == {n: n != victim for n in held}
    assert cli_report["under_replicated"] == held[victim]


def test_daemon_status_answers_promptly_beside_a_hung_peer(start_daemon, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(2)]
    # A hung peer's probe fails only after 2 attempts x 20 s: /status must not wait for it.
    d = start_daemon(endpoints=[s.endpoint for s in servers], transfer={"timeout_seconds": 20})
    code, body = d.call("GET", "/status")
    assert code == 200 and [p["up"] for p in json.loads(body)["peers"]] == [True, True]
    servers[1].stop()  # SIGSTOP: connections are accepted, nothing answers
    time.sleep(PROBE_MAX_AGE)  # the probes of the first call age out
    for _ in range(2):  # the first call starts the probe; the second finds it in flight
        started = time.monotonic()
        code, body = d.call("GET", "/status", timeout=60)
        took = time.monotonic() - started
        assert code == 200 and took < PROBE_WAIT + 2, took
        p0, p1 = json.loads(body)["peers"]
        assert p0["up"] and not p1["up"]
        assert p1["error"].startswith("no answer to a probe for"), p1
    servers[1].cont()


# --- issue 9 item 8: Ctrl-C printed uvicorn's CancelledError traceback ------------------

# How a stop arrives. A terminal's Ctrl-C reaches the whole process group and `make run`
# forwards one more, so the daemon often gets a second SIGINT while it is shutting down.
STOPS: list[tuple[tuple[int, float], ...]] = [
    ((signal.SIGINT, 0), (signal.SIGINT, 0)),
    ((signal.SIGINT, 0), (signal.SIGINT, 0)),
    ((signal.SIGINT, 0), (signal.SIGINT, 0.05), (signal.SIGINT, 0.05)),
    ((signal.SIGINT, 0), (signal.SIGINT, 0.3)),  # while the vault closes, or later
    ((signal.SIGINT, 0), (signal.SIGINT, 0.6)),
    ((signal.SIGTERM, 0), (signal.SIGINT, 0)),
    ((signal.SIGINT, 0),),
]


def test_every_ctrl_c_stops_the_daemon_cleanly(start_daemon):
    d = start_daemon()
    for i, signals in enumerate(STOPS):
        if i:
            d = start_daemon.again(d)
        for sig, after in signals:
            time.sleep(after)
            if d.proc.poll() is None:
                d.proc.send_signal(sig)
        output, _ = d.proc.communicate(timeout=15)
        assert d.proc.returncode == 0, (signals, output)
        assert "Traceback" not in output and "Error" not in output, (signals, output)
        assert "stopping: 0 job(s)" in output  # the agent was stopped, not abandoned


def test_run_refuses_an_open_api(tmp_path, moto_peers):
    config = write_config(tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket())
    result = run_cli(config, "run", env=PW)
    assert result.returncode == 1 and "api.token is not set" in result.stderr


def chunk_keys(config: Path) -> set[tuple[str, str]]:
    """(peer, key) of every data object (chunk object or pack) on every peer."""
    return {
        (peer.name, info.key)
        for peer in build_peers(load_config(config))
        for prefix in ("test/chunks/", "test/packs/")
        for info in peer.list(prefix)
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
    assert len(before) == 2  # the file's one chunk (in a pack), two replicas

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

    # The known content was stored again, in a new object: nothing of the file's was
    # reused (both API chunks are small: one pack of theirs, two replicas).
    after = chunk_keys(d.config)
    assert before <= after and len(after - before) == 2
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


# --- issue 8 item 12: staging is streamed, bounded, expiring and private ------------------


def test_concurrent_large_puts_are_streamed_to_disk(start_daemon):
    d = start_daemon(api={"max_chunk_bytes": "64MiB", "staging_quota": "2GiB"})
    body = os.urandom(60 * MiB)
    d.reset_peak_rss()
    before = d.memory("VmRSS")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: d.put(f"big{i}", body, timeout=300), range(16)))
    assert [status for status, _ in answers] == [201] * 16, answers[0]
    grown = d.memory("VmHWM") - before
    # 960 MiB went through; held whole, that was 1.5 GB of RSS. Streamed, a piece at a time.
    assert grown < 64 * MiB, f"peak RSS grew by {grown / MiB:.0f} MiB"
    names = d.staged_files()
    assert names == sorted(f"c-big{i}" for i in range(16))
    assert all((d.staging / n).stat().st_size == 60 * MiB for n in names)
    assert (d.staging / "c-big7").read_bytes() == body


def raw_put(
    base: str, chunk_id: str, pieces: list[bytes], length: int | None
) -> tuple[int, bytes] | None:
    """PUT over a bare socket: ``length`` is the declared Content-Length (the pieces may be
    fewer bytes, even none), or None for a chunked body. Returns (status, body), or None
    when the daemon answered early and the connection was reset under the rest of the body
    (a refused body is not read, as servers do; urllib cannot read such an answer)."""
    head = (
        f"PUT /chunks/{chunk_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n"
        + (
            f"Content-Length: {length}\r\n"
            if length is not None
            else "Transfer-Encoding: chunked\r\n"
        )
        + "\r\n"
    )
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        try:
            sock.sendall(head.encode())
            for piece in pieces:
                sock.sendall(piece if length is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
            if length is None:
                sock.sendall(b"0\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, response.read()
        except (BrokenPipeError, ConnectionResetError):
            return None


def test_staging_quota_refuses_with_507_and_stages_nothing(start_daemon):
    d = start_daemon(api={"max_chunk_bytes": "4MiB", "staging_quota": "10MiB"})
    blobs = [os.urandom(4 * MiB) for _ in range(3)]
    assert d.put("a", blobs[0])[0] == 201 and d.put("b", blobs[1])[0] == 201
    # A declared length that cannot fit is refused before any byte of the body is sent.
    status, body = raw_put(d.base, "c", [], 4 * MiB)
    assert status == 507, body
    assert "api.staging_quota" in json.loads(body)["error"]
    # Without a declared length the PUT fails once its bytes pass the quota.
    answer = raw_put(d.base, "c", [blobs[2][i : i + MiB] for i in range(0, 4 * MiB, MiB)], None)
    assert answer is None or answer[0] == 507, answer
    wait_for(lambda: d.staged_files() == ["c-a", "c-b"], 10, "the refused body's temp file to go")
    # Uploading frees the space.
    assert d.upload("ab", {"a": 4096, "b": 4096})[0] == 200
    assert d.staged_files() == []
    assert d.put("c", blobs[2])[0] == 201


def test_incomplete_and_oversized_bodies_leave_nothing_staged(start_daemon):
    d = start_daemon(api={"max_chunk_bytes": "4MiB"})
    host, port = d.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"PUT /chunks/cut HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {3 * MiB}\r\n\r\n".encode()
            + os.urandom(MiB)
        )
        # Streamed: the first MiB is in a temp file before the rest arrives (it never does).
        wait_for(lambda: [n for n in d.staged_files() if n.startswith(".tmp-")], 10, "temp")
    wait_for(lambda: d.staged_files() == [], 10, "the cut body's temp file to go")
    answer = raw_put(d.base, "big", [os.urandom(MiB) for _ in range(5)], None)  # over 4 MiB
    assert answer is None or answer[0] == 413, answer
    wait_for(lambda: d.staged_files() == [], 10, "the oversized body's temp file to go")
    assert d.upload("r", {"cut": 3072, "big": 5120})[0] == 200
    detail = json.loads(d.call("GET", "/upload/r")[1])["chunks"]
    assert [c["send"] for c in detail] == ["NOTOK", "NOTOK"]
    assert all("not staged" in c["reason"] for c in detail)


def _plant_stale(staging: Path) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    old = time.time() - 7200
    for name in ("c-stale", ".tmp-crashed"):
        (staging / name).write_bytes(b"x" * 1024)
        os.utime(staging / name, (old, old))
    (staging / "c-fresh").write_bytes(b"y" * 1024)


def test_expired_staged_chunks_are_removed_on_start(start_daemon):
    d = start_daemon(before_run=_plant_stale)  # api.staging_ttl_seconds: 3600 (default)
    assert d.staged_files() == ["c-fresh"]
    assert (d.staging / "c-fresh").stat().st_mode & 0o777 == 0o600  # was 0644
    assert d.upload("r", {"stale": 1, "fresh": 1})[0] == 200
    detail = json.loads(d.call("GET", "/upload/r")[1])["chunks"]
    assert [c["send"] for c in detail] == ["NOTOK", "OK"]
    assert "not staged" in detail[0]["reason"]


def test_expired_staged_chunks_are_removed_periodically(start_daemon):
    d = start_daemon(api={"staging_ttl_seconds": 1})
    assert d.put("soon-gone", b"z" * 2048)[0] == 201
    assert d.staged_files() == ["c-soon-gone"]
    wait_for(lambda: d.staged_files() == [], 10, "the sweeper to remove the expired chunk")
    assert d.upload("late", {"soon-gone": 2})[0] == 200
    detail = json.loads(d.call("GET", "/upload/late")[1])["chunks"][0]
    assert detail["send"] == "NOTOK" and "not staged" in detail["reason"]


def test_staging_is_private_whatever_the_umask(start_daemon):
    def loose_staging(staging: Path) -> None:  # as an older version left it
        staging.mkdir(parents=True)
        staging.chmod(0o755)

    d = start_daemon(umask=0, before_run=loose_staging)
    assert d.put("private", b"p" * 5000)[0] == 201
    assert (d.staging.stat().st_mode & 0o777) == 0o700
    assert (d.staging / "c-private").stat().st_mode & 0o777 == 0o600


def test_status_names_pending_files_whatever_their_names(start_daemon):
    """A job for a name that is not UTF-8 once made /status answer 500."""
    daemon = start_daemon(watch={"settle_seconds": 60, "rescan_seconds": 0})
    inbox = os.fsencode(daemon.inbox)
    with contextlib.ExitStack() as still_open:  # no close-write: they wait to settle
        for name in (b"caf\xe9.txt", b"new\nline.txt"):
            f = still_open.enter_context(open(inbox + b"/" + name, "wb"))
            f.write(b"still being written\n")
            f.flush()

        def pending() -> list[dict]:
            code, body = daemon.call("GET", "/status")
            assert code == 200, body
            return json.loads(body)["extra"]["pending"]

        deadline = time.monotonic() + 20
        while len(pending()) < 2:
            assert time.monotonic() < deadline, pending()
            time.sleep(0.2)
        entries = pending()
        cli = run_cli(daemon.config, "status", "--json", env=PW)
    assert {e["path"] for e in entries} == {r"caf\xe9.txt", "new\nline.txt"}
    latin = next(e for e in entries if "path_b64" in e)
    assert latin["path_b64"] == "Y2Fm6S50eHQ="  # the exact bytes
    assert cli.returncode == 0, cli.stderr
    assert {e["path"] for e in json.loads(cli.stdout)["extra"]["pending"]} == {
        r"caf\xe9.txt", "new\nline.txt",
    }  # fmt: skip


def test_gc_keeps_what_post_upload_stored(start_daemon):
    # Chunks of POST /upload are named by no file version, only by the API's map: gc
    # must keep them (and their packs) for GET /chunks/{id}, whatever their age.
    first = start_daemon(retention={"grace_hours": 0, "deleted_days": 0})
    blobs = {"small": os.urandom(5000), "large": os.urandom(700 * 1024)}
    for cid, data in blobs.items():
        assert first.call("PUT", f"/chunks/{cid}", data,
                          content_type="application/octet-stream")[0] == 201  # fmt: skip
    request = {"chunks": [{"id": c, "size_in_KB": math.ceil(len(d) / 1024)}
                          for c, d in blobs.items()], "request_id": "keep-me"}  # fmt: skip
    status, body = first.call("POST", "/upload", json.dumps(request).encode(),
                              content_type="application/json")  # fmt: skip
    assert status == 200 and all(c["send"] == "OK" for c in json.loads(body)["chunks"]), body
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=20) == 0
    stored = object_count(first.config)
    done = run_cli(first.config, "gc", "--json", env=PW, timeout=180)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["objects_deleted"] == 0, done.stdout
    assert object_count(first.config) == stored
    again = start_daemon.again(first)
    for cid, data in blobs.items():
        assert again.call("GET", f"/chunks/{cid}") == (200, data)
