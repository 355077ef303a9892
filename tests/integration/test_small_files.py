"""Small files through packs and manifest batches (issue 12), through the real path: the CLI
as a subprocess, moto peers over HTTP, real files.

- a tree of 2,000 small files leaves few objects on the peers, every pack on exactly R
  distinct peers, and restores byte-identical, also from an empty state dir;
- nothing readable reaches a peer; a duplicate small file adds no object;
- a pack replica corrupted on one peer is detected and the restore is still exact;
- a push SIGKILLed mid-run and run again loses nothing and stores each file once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.cli import CLI, init_vault, run_cli
from support.hostile_proxy import Forward, Reply, Request
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.journal import JournalStore
from chunkvault.keystore import KeyStore
from chunkvault.packs import HEADER
from chunkvault.peerset import place
from chunkvault.seal_workers import BATCH_FILES, BATCHES_AHEAD

PW = {"CHUNKVAULT_PASSPHRASE": "packs test passphrase"}
KiB = 1024


def small_tree(root: Path, count: int, seed: int = 7) -> dict[str, bytes]:
    """``count`` files of 6-10 KiB over nested directories; every fifth is text."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        size = rng.randint(6 * KiB, 10 * KiB)
        if i % 5 == 0:
            words = " ".join(f"secret-word-{rng.randint(0, 999)}" for _ in range(size // 12))
            data = words.encode()[:size]
        else:
            data = rng.randbytes(size)
        rel = f"dir{i % 7}/sub{i % 3}/small-file-{i:05d}.dat"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    return files


def digest(root: Path) -> dict[str, tuple[str, int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(root).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o777, st.st_mtime_ns,
            )  # fmt: skip
    return out


def objects(config: Path) -> dict[str, dict[str, tuple[bytes, dict[str, str]]]]:
    """peer -> key -> (body, metadata)."""
    out: dict[str, dict[str, tuple[bytes, dict[str, str]]]] = {}
    for peer in build_peers(load_config(config)):
        try:
            out[peer.name] = {
                info.key: (peer.get(info.key), dict(peer.stat(info.key).metadata))
                for info in peer.list("")
            }
        finally:
            peer.close()
    return out


def data_objects(config: Path) -> set[str]:
    return {
        k for held in objects(config).values() for k in held if "/chunks/" in k or "/packs/" in k
    }


@pytest.fixture
def small_vault(tmp_path: Path, moto_peers) -> tuple[Path, Path]:
    return init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip


@pytest.mark.slow
def test_two_thousand_small_files_pack_and_restore_byte_identical(
    small_vault: tuple[Path, Path], tmp_path: Path
) -> None:
    config, inbox = small_vault
    files = small_tree(inbox, 2000)
    pushed = run_cli(config, "push", env=PW, timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    assert "2000 stored" in pushed.stdout

    held = objects(config)
    everything = [k for keys in held.values() for k in keys]
    assert len(everything) <= 200, len(everything)
    assert not any("/chunks/" in k for k in everything)  # every chunk is under the threshold
    packs: dict[str, list[str]] = {}
    for peer, keys in held.items():
        for key, (body, meta) in keys.items():
            if "/packs/" in key:
                packs.setdefault(key, []).append(peer)
                assert body.startswith(HEADER)
                assert meta["cv-sha256"] == hashlib.sha256(body).hexdigest()
    assert packs
    for key, peers in packs.items():
        assert len(peers) == 2 == len(set(peers)), (key, peers)  # exactly R distinct peers

    # Nothing readable reaches a peer: names, paths or content.
    needles = [b"small-file-", b"dir3/", b"sub1", b"secret-word-"]
    for data in list(files.values())[::97]:
        needles += [data[:32], data[len(data) // 2 : len(data) // 2 + 32], data[-32:]]
    for peer, keys in held.items():
        for key, (body, meta) in keys.items():
            haystack = key.encode() + body + json.dumps(meta).encode()
            for needle in needles:
                assert needle not in haystack, (peer, key, needle[:20])

    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW, timeout=600)
    assert restored.returncode == 0, restored.stderr
    assert digest(out) == digest(inbox)

    # A fresh machine: only the passphrase and the peer list.
    shutil.rmtree(tmp_path / "state")
    fresh = tmp_path / "fresh"
    again = run_cli(config, "restore", "--to", str(fresh), env=PW, timeout=600)
    assert again.returncode == 0, again.stderr
    assert digest(fresh) == digest(inbox)
    # The rebuilt catalog knows the packed chunks: nothing is stored twice.
    repush = run_cli(config, "push", env=PW, timeout=600)
    assert repush.returncode == 0, repush.stderr
    assert data_objects(config) == set(packs)


def test_a_duplicate_small_file_adds_no_object(small_vault: tuple[Path, Path]) -> None:
    config, inbox = small_vault
    files = small_tree(inbox, 20)
    assert run_cli(config, "push", env=PW).returncode == 0
    before = data_objects(config)
    first = next(iter(files))
    shutil.copy(inbox / first, inbox / "copy-of-a-small-file.dat")
    again = run_cli(config, "push", env=PW)
    assert again.returncode == 0, again.stderr
    assert "1 stored" in again.stdout and "0 new chunk(s)" in again.stdout
    assert data_objects(config) == before


def test_a_corrupted_pack_replica_is_detected_and_restore_is_exact(
    tmp_path: Path, moto_peers
) -> None:
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    small_tree(inbox, 60)
    assert run_cli(config, "push", env=PW).returncode == 0
    peers = build_peers(load_config(config))
    try:
        # Every replica of every pack damaged (bytes flipped all over, metadata kept):
        # nothing is restored from them, every damaged copy is named, no file is left.
        originals: dict[str, tuple[object, bytes, dict[str, str]]] = {}
        for peer in peers:
            for info in peer.list("test/packs/"):
                meta = dict(peer.stat(info.key).metadata)
                body = peer.get(info.key)
                originals.setdefault(info.key, (peer, body, meta))
                damaged = bytearray(body)
                for at in range(len(HEADER), len(damaged), 997):
                    damaged[at] ^= 0x5A
                peer.put(info.key, bytes(damaged), meta)
        assert originals
        bad = tmp_path / "bad"
        result = run_cli(config, "restore", "--to", str(bad), env=PW)
        assert result.returncode == 1
        assert "damaged" in result.stderr and "Traceback" not in result.stderr
        assert not [p for p in bad.rglob("*") if p.is_file()]
        # One good replica back on one peer, the other still damaged: restored exactly.
        for key, (peer, body, meta) in originals.items():
            peer.put(key, body, meta)  # type: ignore[attr-defined]
    finally:
        for peer in peers:
            peer.close()
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert digest(out) == digest(inbox)


@pytest.mark.slow
def test_push_killed_mid_run_and_rerun_loses_nothing(
    small_vault: tuple[Path, Path], tmp_path: Path
) -> None:
    config, inbox = small_vault
    small_tree(inbox, 1500, seed=21)
    # Larger files too, so the kill lands while packs and chunk objects are in flight.
    rng = random.Random(4)
    for i in range(6):
        (inbox / f"big-{i}.bin").write_bytes(rng.randbytes(3 * 1024 * KiB))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    state = tmp_path / "state"
    for delay in (0.9, 1.6):
        proc = subprocess.Popen(
            [CLI, "--config", str(config), "push"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)  # our child, not yet reaped: its PID is its own
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert state.exists()
    result = run_cli(config, "push", env=PW, timeout=600)
    assert result.returncode == 0, result.stderr
    listing = json.loads(run_cli(config, "ls", "--json", "--versions", env=PW).stdout)
    assert len(listing) == 1506
    assert all(entry["versions"] == 1 for entry in listing)  # each file stored once
    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW, timeout=600)
    assert restored.returncode == 0, restored.stderr
    assert digest(out) == digest(inbox)
    # From the peers alone too: every version names chunks that really are there.
    shutil.rmtree(state)
    fresh = tmp_path / "fresh"
    again = run_cli(config, "restore", "--to", str(fresh), env=PW, timeout=600)
    assert again.returncode == 0, again.stderr
    assert digest(fresh) == digest(inbox)


def test_restoring_many_small_files_reads_packs_in_spans_not_chunk_by_chunk(
    tmp_path: Path, moto_peers, hostile_proxy_factory
) -> None:
    """300 small files whose chunks sit in one or two packs: the restore reads them with a
    handful of ranged GETs (one per span of adjacent bodies), not one per chunk."""
    gets: list[str] = []
    lock = threading.Lock()

    def count(request: Request, forward: Forward) -> Reply | None:
        if request.method == "GET" and "/packs/" in request.path:
            with lock:
                gets.append(request.headers.get("Range", ""))
        return None

    proxies = []
    for server in moto_peers.servers[:3]:
        proxy = hostile_proxy_factory(server.endpoint)
        proxy.add(count)
        proxies.append(proxy)
    config, inbox = init_vault(
        tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    small_tree(inbox, 300, seed=5)
    assert run_cli(config, "push", env=PW).returncode == 0
    gets.clear()
    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW)
    assert restored.returncode == 0, restored.stderr
    assert digest(out) == digest(inbox)
    assert all(r.startswith("bytes=") for r in gets)  # ranged, never a whole pack
    assert 1 <= len(gets) <= 30, len(gets)


def test_a_purged_file_leaves_no_entry_in_any_batch_and_its_batch_mates_stay(
    tmp_path: Path, moto_peers
) -> None:
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
        flows=[{"match": "scratch/**", "on_delete": "purge"}, {"match": "**"}],
    )  # fmt: skip
    (inbox / "scratch").mkdir()
    (inbox / "scratch" / "gone-secret-name.txt").write_text("temporary\n")
    (inbox / "kept.txt").write_text("stays\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "scratch" / "gone-secret-name.txt").unlink()
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr
    assert "1 purged" in pushed.stdout

    cfg = load_config(config)
    peers = build_peers(cfg)
    try:
        keys = KeyStore(cfg.vault.state_dir, cfg.vault.id, peers).open(
            PW["CHUNKVAULT_PASSPHRASE"]
        ).keys  # fmt: skip
        journal = JournalStore(cfg.vault.id, keys, place(cfg, peers), 2, 2)
        paths = []
        for name, holders in journal.names():
            assert len(holders) == 2  # rewritten on every peer that held it
            paths += [e.manifest.path for e in journal.read(name)]
    finally:
        for peer in peers:
            peer.close()
    assert paths == ["kept.txt"]
    listing = json.loads(run_cli(config, "ls", "--json", "--deleted", env=PW).stdout)
    assert [f["path"] for f in listing] == ["kept.txt"]
    shutil.rmtree(tmp_path / "state")  # from the peers alone, too
    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), "--deleted", env=PW)
    assert restored.returncode == 0, restored.stderr
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["kept.txt"]


def test_each_written_pack_commits_its_files_and_a_push_writes_its_last_pack_at_once(
    tmp_path: Path, moto_peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real Ingestor over moto peers, with every timer far away (pack flush, batch
    delay, the pipeline's idle spell) and packs written only when full: the files of a
    written pack are committed at once, and once push says it has submitted everything,
    the last open pack goes without waiting for any timer."""
    from chunkvault import packs, pipeline
    from chunkvault.cli.context import CliContext
    from chunkvault.ingest import Ingestor

    monkeypatch.setattr(pipeline, "IDLE_FLUSH_SECONDS", 60)
    monkeypatch.setattr(packs, "EARLY_FRACTION", 1)
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        chunking={"pack_size": "1MiB", "pack_flush_seconds": 60},
    )  # fmt: skip
    names = [f"f{i:02d}.bin" for i in range(7)]
    for name in names:  # sealed a little over 200 KiB each: five fill a 1 MiB pack
        (inbox / name).write_bytes(os.urandom(200 * KiB))
    monkeypatch.setenv("CHUNKVAULT_PASSPHRASE", PW["CHUNKVAULT_PASSPHRASE"])
    with CliContext(config).vault(writer=True) as vault:
        ingestor = Ingestor(vault, readers=1)
        try:
            results = [ingestor.submit(name) for name in names]
            first = [r.result(20) for r in results[:5]]  # their pack went: committed
            assert [r.action for r in first] == ["stored"] * 5
            time.sleep(0.5)
            assert not any(r.done() for r in results[5:])  # in the open pack: waiting
            ingestor.all_submitted()
            rest = [r.result(20) for r in results[5:]]
            assert [r.action for r in rest] == ["stored"] * 2
        finally:
            ingestor.close()
        batches = {v.batch for v in vault.catalog.latest_all()}
    assert len(batches) == 2  # one per pack


def test_small_files_sealed_by_a_worker_process_and_one_lost_mid_push_lose_nothing(
    tmp_path: Path, moto_peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real Ingestor with a seal worker over moto peers: its files restore exactly,
    and a worker killed after its first batch leaves every other file to the push."""
    from chunkvault.cli.context import CliContext
    from chunkvault.ingest import Ingestor

    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    files = small_tree(inbox, 400, seed=3)
    (inbox / "twin.dat").write_bytes(files["dir0/sub0/small-file-00000.dat"])  # dedup
    monkeypatch.setenv("CHUNKVAULT_PASSPHRASE", PW["CHUNKVAULT_PASSPHRASE"])
    with CliContext(config).vault(writer=True) as vault:
        ingestor = Ingestor(vault, readers=1, seal_workers=1)
        try:
            workers = ingestor._seal
            assert workers is not None and len(workers) == 1
            send, receive = workers.send, workers.receive
            batches: list[int] = []
            calls: list[str] = []

            queued = threading.Event()  # every file queued before the first batch goes

            def send_counted(i: int, requests: list) -> None:
                assert queued.wait(60)
                calls.append("send")
                send(i, requests)

            def receive_then_die(i: int, requests: list) -> list:
                calls.append("receive")
                batches.append(len(requests))
                answers = receive(i, requests)
                if len(batches) == 1:
                    proc = workers._procs[i]
                    assert proc is not None
                    os.kill(proc.pid, signal.SIGKILL)  # our own child
                    proc.wait()
                return answers

            monkeypatch.setattr(workers, "send", send_counted)
            monkeypatch.setattr(workers, "receive", receive_then_die)
            results = [ingestor.submit(rel) for rel in [*files, "twin.dat"]]
            ingestor.all_submitted()
            queued.set()
            actions = [r.result(120).action for r in results]
            dropped = workers._procs == [None]  # before close() drops it anyway
        finally:
            ingestor.close()
    assert actions == ["stored"] * (len(files) + 1)
    # Answers already in the pipe may still be read; then the worker is found lost.
    assert len(batches) >= 2 and dropped
    # Batches were sent ahead of the first answer awaited: every batch (at least 401 / 64)
    # up to BATCHES_AHEAD.
    ahead = calls.index("receive")
    assert min(BATCHES_AHEAD, -(-(len(files) + 1) // BATCH_FILES)) <= ahead <= BATCHES_AHEAD
    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert digest(out) == digest(inbox)


def test_a_seal_worker_cuts_files_as_the_reader_does_under_any_chunking(
    tmp_path: Path, moto_peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a min_size below the pack threshold, a 400 KiB file is several content-defined
    chunks: the worker leaves it to the reader rather than seal it whole (the same content
    must make the same chunks whichever path stored it), and an empty file has none."""
    from chunkvault.chunking import Chunker
    from chunkvault.cli.context import CliContext
    from chunkvault.ingest import Ingestor

    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        chunking={"min_size": "64KiB", "avg_size": "128KiB", "max_size": "1MiB"},
    )  # fmt: skip
    files = {"medium.bin": os.urandom(400 * KiB), "small.bin": os.urandom(8 * KiB),
             "edge.bin": os.urandom(64 * KiB + 1), "empty": b""}  # fmt: skip
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    monkeypatch.setenv("CHUNKVAULT_PASSPHRASE", PW["CHUNKVAULT_PASSPHRASE"])
    with CliContext(config).vault(writer=True) as vault:
        ingestor = Ingestor(vault, readers=1, seal_workers=1)
        try:
            results = [ingestor.submit(name) for name in files]
            ingestor.all_submitted()
            assert [r.result(60).action for r in results] == ["stored"] * len(files)
        finally:
            ingestor.close()
        chunking = vault.config.chunking
        chunker = Chunker(chunking.mode, chunking.min_size, chunking.avg_size, chunking.max_size)
        for name, data in files.items():
            manifest = vault.read_version(vault.catalog.latest(name))
            expected = [len(c) for c in chunker.split(io.BytesIO(data))]
            assert [c.size for c in manifest.chunks] == expected, name
    assert len(list(chunker.split(io.BytesIO(files["medium.bin"])))) > 1  # a real case
