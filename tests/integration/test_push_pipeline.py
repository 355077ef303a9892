"""The push pipeline through the real path: the CLI as a subprocess, moto peers over HTTP
behind recording proxies (tests/support/hostile_proxy.py).

- chunks of many files are in flight at once (the pipeline does not wait per file);
- the byte budget, not the chunk count, bounds memory (peak RSS);
- a push SIGKILLed mid-pipeline and rerun stores every file exactly once, and no manifest
  on the peers names a chunk that is under min_replicas;
- a chunk that cannot be stored fails its file only.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from support.cli import CLI, init_vault, run_cli
from support.hostile_proxy import Forward, HostileProxy, Reply, Request
from support.moto_peers import unique_bucket
from support.peak_rss import run_cli_measured

from chunkvault.backends.base import NotFound
from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.journal import JournalStore
from chunkvault.keystore import KeyStore
from chunkvault.layout import chunk_key, pack_key
from chunkvault.manifest import Manifest, ManifestStore, parse_manifest_name
from chunkvault.peerset import place

PW = {"CHUNKVAULT_PASSPHRASE": "pipeline test passphrase"}
MiB = 1024 * 1024
SMALL_CHUNKS = {"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB"}
# Every chunk its own object (what the tests below count): packs are test_small_files.py's.
OBJECT_CHUNKS = {**SMALL_CHUNKS, "pack_threshold": 0}


class PutRecorder:
    """A proxy rule shared by every peer's proxy: counts object PUTs as they happen, can
    hold them (forwarded, so stored, but not answered yet), and knows how many distinct
    chunk objects were being written at the same moment."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.most_chunks_at_once = 0
        self.chunk_puts = 0
        self.manifest_puts = 0
        self.pack_puts = 0
        self.hold_after: Callable[[str, int], bool] | None = None  # (kind, count) -> hold?
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Request, forward: Forward) -> Reply | None:
        if request.method != "PUT" or not request.key:
            return None
        kind = (
            "chunk" if "/chunks/" in request.key
            else "pack" if "/packs/" in request.key
            else "manifest" if "/manifests/" in request.key  # manifest batches too
            else "other"
        )  # fmt: skip
        with self.lock:
            if kind == "chunk":
                self.chunk_puts += 1
                count = self.chunk_puts
                self.in_flight[request.key] += 1
                self.most_chunks_at_once = max(self.most_chunks_at_once, len(self.in_flight))
            elif kind == "manifest":
                self.manifest_puts += 1
                count = self.manifest_puts
            elif kind == "pack":
                self.pack_puts += 1
                count = self.pack_puts
            else:
                count = 0
        try:
            if self.delay and kind == "chunk":
                time.sleep(self.delay)
            reply = forward()
            hold = self.hold_after is not None and self.hold_after(kind, count)
            if hold:
                self.holding.set()  # stored upstream; the client has not heard so yet
                self.release.wait(30)
            return reply
        finally:
            with self.lock:
                if kind == "chunk":
                    self.in_flight[request.key] -= 1
                    if not self.in_flight[request.key]:
                        del self.in_flight[request.key]


def proxied_vault(
    tmp_path: Path,
    moto_peers,
    hostile_proxy_factory,
    recorder: PutRecorder,
    count: int = 3,
    **sections: dict,
) -> tuple[Path, Path]:
    proxies: list[HostileProxy] = []
    for server in moto_peers.servers[:count]:
        proxy = hostile_proxy_factory(server.endpoint)
        proxy.add(recorder)
        proxies.append(proxy)
    return init_vault(tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW, **sections)


def write_files(root: Path, sizes: dict[str, int], seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        path.write_bytes(data)
        files[rel] = data
    return files


def test_chunks_of_many_files_are_in_flight_at_once(
    tmp_path: Path, moto_peers, hostile_proxy_factory
) -> None:
    """Twelve one-chunk files and one peer: a pipeline that waited for each file's chunk
    before reading the next would never have two chunk objects on the wire at once."""
    recorder = PutRecorder(delay=0.3)
    config, inbox = proxied_vault(
        tmp_path, moto_peers, hostile_proxy_factory, recorder, count=1,
        replication={"replicas": 1, "min_replicas": 1}, chunking=OBJECT_CHUNKS,
    )  # fmt: skip
    files = write_files(inbox, {f"f{i:02d}.bin": 20_000 + i for i in range(12)})
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    assert "12 stored" in result.stdout
    assert recorder.chunk_puts == len(files)
    assert recorder.most_chunks_at_once >= 4, recorder.most_chunks_at_once


@pytest.mark.slow
def test_byte_budget_bounds_memory_not_the_file_size(tmp_path: Path, moto_peers) -> None:
    """A 256 MiB file with a 16 MiB budget: peak RSS stays well below the file size (seen:
    ~150 MiB, where any command already peaks at ~116 MiB while the passphrase KDF holds
    its 64 MiB; the old window of 16 chunks in flight peaked at ~410 MiB)."""
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        chunking={"min_size": "1MiB", "avg_size": "4MiB", "max_size": "8MiB"},
        transfer={"concurrency": 16, "max_inflight_bytes": "16MiB", "timeout_seconds": 30},
    )  # fmt: skip
    big = inbox / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as out:
        for _ in range(256):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    result, peak = run_cli_measured(config, "push", env=PW, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "1 stored" in result.stdout
    assert peak < 176 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW, timeout=600)
    assert restored.returncode == 0, restored.stderr
    assert hashlib.sha256((out / "big.bin").read_bytes()).digest() == digest.digest()


def push_killed_when(config: Path, recorder: PutRecorder, hold: Callable[[str, int], bool]) -> None:
    """Start `chunkvault push`, SIGKILL it while a PUT chosen by ``hold`` is stored
    upstream but not yet answered, and reap it."""
    recorder.chunk_puts = recorder.manifest_puts = recorder.pack_puts = 0
    recorder.holding.clear()
    recorder.release.clear()
    recorder.hold_after = hold
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    proc = subprocess.Popen(
        [CLI, "--config", str(config), "push"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert recorder.holding.wait(60), "push ended before the kill point"
        os.kill(proc.pid, signal.SIGKILL)  # our child, not yet reaped: its PID is its own
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        recorder.hold_after = None
        recorder.release.set()


def pending_commits(tmp_path: Path) -> int:
    with closing(sqlite3.connect(tmp_path / "state" / "catalog.db")) as db:
        rows = db.execute("SELECT count(*) FROM meta WHERE key LIKE 'pending_manifest:%'")
        return int(rows.fetchone()[0])


def vault_on_peers(config: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """(file path -> its version names, chunk id -> replicas of its object or its pack) as
    the peers hold them."""
    cfg = load_config(config)
    peers = build_peers(cfg)
    try:
        keys = KeyStore(cfg.vault.state_dir, cfg.vault.id, peers).open(PW[
            "CHUNKVAULT_PASSPHRASE"
        ]).keys  # fmt: skip
        placed = place(cfg, peers)
        manifests: list[Manifest] = []
        names: list[str] = []
        store = ManifestStore(cfg.vault.id, keys, placed, 2, 2)
        for name, _holders in store.names():
            assert parse_manifest_name(cfg.vault.id, name) is not None
            manifests.append(store.read(name))
            names.append(name)
        journal = JournalStore(cfg.vault.id, keys, placed, 2, 2)
        for batch, _holders in journal.names():
            for entry in journal.read(batch):
                manifests.append(entry.manifest)
                names.append(entry.name)
        versions: dict[str, list[str]] = {}
        replicas: dict[str, int] = {}
        for name, manifest in zip(names, manifests, strict=True):
            versions.setdefault(manifest.path, []).append(name)
            for ref in manifest.chunks:
                if ref.id in replicas:
                    continue
                key = pack_key(cfg.vault.id, ref.pack) if ref.pack else chunk_key(
                    cfg.vault.id, ref.id
                )  # fmt: skip
                held = 0
                for peer in peers:
                    try:
                        peer.stat(key)
                        held += 1
                    except NotFound:
                        pass
                replicas[ref.id] = held
        return versions, replicas
    finally:
        for peer in peers:
            peer.close()


@pytest.mark.slow
def test_push_killed_mid_pipeline_and_rerun_stores_every_file_once(
    tmp_path: Path, moto_peers, hostile_proxy_factory
) -> None:
    recorder = PutRecorder()
    config, inbox = proxied_vault(
        tmp_path, moto_peers, hostile_proxy_factory, recorder,
        replication={"replicas": 2, "min_replicas": 2}, chunking=SMALL_CHUNKS,
        transfer={"timeout_seconds": 30, "retries": 1},
    )  # fmt: skip
    sizes = {f"small/s{i:02d}.txt": 3_000 + 97 * i for i in range(16)}
    sizes |= {f"mid/m{i}.bin": 1_500_000 + 10_000 * i for i in range(5)}
    sizes |= {"big/b.bin": 5 * MiB, "empty.txt": 0}
    files = write_files(inbox, sizes)

    # Killed while: a chunk object is stored on a peer but not yet recorded; a pack of
    # small chunks likewise; a manifest batch is stored on one peer but
    # not yet in the catalog (the window where a rerun would write a second version of
    # the same files); and on both peers, still not in the catalog.
    push_killed_when(config, recorder, lambda kind, n: kind == "chunk" and n == 2)
    push_killed_when(config, recorder, lambda kind, n: kind == "pack" and n == 1)
    push_killed_when(config, recorder, lambda kind, n: kind == "manifest" and n == 1)
    push_killed_when(config, recorder, lambda kind, n: kind == "manifest" and n == 2)
    # The cut-short commit is pending; a reader (ls, no writer lock) leaves it alone, as
    # it could be a commit in flight; the next push completes it.
    assert pending_commits(tmp_path) >= 1
    listed = run_cli(config, "ls", env=PW)
    assert listed.returncode == 0, listed.stderr
    assert pending_commits(tmp_path) >= 1

    result = run_cli(config, "push", env=PW, timeout=300)
    assert result.returncode == 0, result.stderr
    assert pending_commits(tmp_path) == 0
    again = run_cli(config, "push", env=PW)
    assert again.returncode == 0, again.stderr
    assert f"{len(files)} unchanged" in again.stdout, again.stdout

    versions, replicas = vault_on_peers(config)
    assert {path: len(names) for path, names in versions.items()} == dict.fromkeys(files, 1)
    under = {cid: n for cid, n in replicas.items() if n < 2}
    assert not under, under

    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW, timeout=300)
    assert restored.returncode == 0, restored.stderr
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data, rel


def test_a_chunk_that_cannot_be_stored_fails_only_its_file(
    tmp_path: Path, moto_peers, hostile_proxy_factory
) -> None:
    """Every peer refuses chunk objects over 50 KB (chunks of the one big file; the small
    files are one small chunk each): that file fails and is named; the others are stored
    and restorable."""

    refused = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"

    def refuse_big(request: Request, forward: Forward) -> Reply | None:
        big = len(request.body) > 50_000
        if request.method == "PUT" and "/chunks/" in request.target and big:
            return Reply(403, [("Content-Type", "application/xml")], refused)
        return None

    proxies = []
    for server in moto_peers.servers[:3]:
        proxy = hostile_proxy_factory(server.endpoint)
        proxy.add(refuse_big)
        proxies.append(proxy)
    config, inbox = init_vault(
        tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW,
        chunking=OBJECT_CHUNKS, transfer={"retries": 0},
    )  # fmt: skip
    write_files(inbox, {f"ok{i}.txt": 5_000 + i for i in range(6)} | {"big.bin": 600_000})
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 1, result.stderr
    assert "failed: big.bin" in result.stderr
    assert "6 stored" in result.stdout and "1 failed" in result.stdout
    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW)
    assert restored.returncode == 0, restored.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"ok{i}.txt" for i in range(6))
