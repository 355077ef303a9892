"""Parallel restore (issue 11): many files and the chunks of one file fetched at once, under
the byte budget, byte-identical with mode and mtime, through damaged peers and SIGKILL.

The CLI as a subprocess over real HTTP S3 peers (moto), each reached through
``support.hostile_proxy`` so the test sees every chunk GET. Concurrency is shown by
behaviour, not timing: :class:`ChunkGets` holds the first GETs until several are in flight
together, which a one-at-a-time restore never achieves (it only waits out the hold).
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import CLI, init_vault, run_cli
from support.hostile_proxy import Forward, HostileProxy, Reply, Request, replace_body
from support.moto_peers import MotoPeers, MotoServer, unique_bucket
from support.peak_rss import run_cli_measured

PW = {"CHUNKVAULT_PASSPHRASE": "parallel restore passphrase"}
KiB = 1024
MiB = 1024 * KiB
# Chunk objects, read one GET each (what these tests count): packed chunks are read in
# spans, tests/integration/test_small_files.py.
SMALL_CHUNKS = {"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB", "pack_threshold": 0}
BASE_MTIME_NS = 1_650_000_000_123_456_789


class ChunkGets:
    """A proxy rule (one instance shared by every peer's proxy) that watches chunk GETs.

    - counts those in flight and the most ever in flight together (``peak``);
    - holds each of the first ``hold`` GETs until ``hold`` are in flight at once, or
      ``wait`` seconds pass: a client that fetches several at once meets, a serial one
      just waits;
    - with ``stall_after``, every GET after that many waits for :meth:`release` (at most
      ``stall_seconds``), so a test can freeze a restore half-way.
    """

    def __init__(
        self,
        hold: int = 0,
        wait: float = 5.0,
        stall_after: int | None = None,
        stall_seconds: float = 60.0,
    ) -> None:
        self.hold, self.wait = hold, wait
        self.stall_after, self.stall_seconds = stall_after, stall_seconds
        self.in_flight = self.peak = self.started = 0
        self._cond = threading.Condition()
        self._released = threading.Event()
        self.name = "chunk_gets"

    def __call__(self, request: Request, forward: Forward) -> Reply | None:
        if request.method != "GET" or "/chunks/" not in request.key:
            return None
        with self._cond:
            number = self.started
            self.started += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self._cond.notify_all()
            if number < self.hold:
                self._cond.wait_for(lambda: self.in_flight >= self.hold, timeout=self.wait)
        try:
            if self.stall_after is not None and number >= self.stall_after:
                self._released.wait(self.stall_seconds)
            return forward()
        finally:
            with self._cond:
                self.in_flight -= 1

    def release(self) -> None:
        self._released.set()


def write_files(inbox: Path, files: dict[str, bytes]) -> None:
    for n, (rel, data) in enumerate(sorted(files.items())):
        path = inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, (0o600, 0o640, 0o755, 0o444)[n % 4])
        os.utime(path, ns=(BASE_MTIME_NS, BASE_MTIME_NS + n * 1_000_003))


def tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every regular file below ``root`` (temp files included): content, mode, mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            rel = path.relative_to(root).as_posix()
            out[rel] = (path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".cv-restore-*")]


def proxied_vault(
    tmp_path: Path,
    endpoints: list[str],
    start_proxy: Callable[[str], HostileProxy],
    files: dict[str, bytes],
    **sections: dict,
) -> tuple[Path, Path, list[HostileProxy]]:
    """A vault over ``endpoints``, each behind a proxy, with ``files`` pushed."""
    proxies = [start_proxy(endpoint) for endpoint in endpoints]
    config, inbox = init_vault(
        tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW, **sections
    )
    write_files(inbox, files)
    pushed = run_cli(config, "push", env=PW, timeout=300)
    assert pushed.returncode == 0, pushed.stderr
    return config, inbox, proxies


def watch_gets(proxies: list[HostileProxy], rule: ChunkGets) -> ChunkGets:
    for proxy in proxies:
        proxy.clear()
        proxy.add(rule)
    return rule


def small_files(count: int, seed: int) -> dict[str, bytes]:
    """Files of one chunk each (below the 64 KiB minimum chunk size)."""
    rng = random.Random(seed)
    return {
        f"d{i % 3}/small-{i:02d}.bin": rng.randbytes(rng.randrange(1, 60 * KiB))
        for i in range(count)
    }


@pytest.fixture
def mixed_vault(
    tmp_path: Path, moto_peers: MotoPeers, hostile_proxy_factory: Callable[[str], HostileProxy]
) -> tuple[Path, Path, list[HostileProxy]]:
    rng = random.Random(21)
    files = small_files(30, seed=22) | {
        "media/big.bin": rng.randbytes(12 * MiB),  # ~48 chunks
        "media/zeros.bin": bytes(3 * MiB),  # one chunk, three times
        "a/b/c/deep.txt": b"deep text\n" * 20_000,
        "empty.txt": b"",
    }
    return proxied_vault(
        tmp_path, moto_peers.endpoints, hostile_proxy_factory, files,
        chunking=SMALL_CHUNKS, transfer={"timeout_seconds": 5, "retries": 0},
    )  # fmt: skip


def test_many_files_and_a_big_one_restore_identical_also_past_a_forged_and_a_dead_peer(
    mixed_vault: tuple[Path, Path, list[HostileProxy]], tmp_path: Path
) -> None:
    config, inbox, proxies = mixed_vault
    want = tree(inbox)
    assert len(want) == 34

    gets = watch_gets(proxies, ChunkGets(hold=4, wait=2.0))
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree(out) == want  # content, mode and mtime; no temp file left
    assert "34 file(s)" in result.stdout
    assert gets.peak >= 4, gets.peak

    # p0 serves forged bodies for every chunk: each is refused and read from another replica.
    for proxy in proxies:
        proxy.clear()
    proxies[0].add(replace_body(r"/chunks/", os.urandom(3000), name="forged"))
    forged = tmp_path / "forged"
    result = run_cli(config, "restore", "--to", str(forged), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree(forged) == want
    assert proxies[0].hits("forged") >= 1
    # Warned once per kind (a forged body fails authentication, or is too big for a small
    # chunk), never once per chunk.
    warned = [ln for ln in result.stderr.splitlines() if "WARNING" in ln and "p0" in ln]
    assert 1 <= len(warned) <= 2, result.stderr
    assert all("damaged" in ln or "more than the" in ln for ln in warned), warned

    # p1 is gone (connections refused): every chunk has its other replica on p0 or p2.
    proxies[0].clear()
    proxies[1].stop()
    dead = tmp_path / "dead"
    result = run_cli(config, "restore", "--to", str(dead), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree(dead) == want


def test_many_small_files_are_fetched_at_once(
    tmp_path: Path, moto_peers: MotoPeers, hostile_proxy_factory: Callable[[str], HostileProxy]
) -> None:
    files = small_files(12, seed=5)
    config, inbox, proxies = proxied_vault(
        tmp_path, moto_peers.endpoints, hostile_proxy_factory, files, chunking=SMALL_CHUNKS
    )
    gets = watch_gets(proxies, ChunkGets(hold=4, wait=1.0))
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree(out) == tree(inbox)
    assert gets.started == 12  # one GET per file: a file is one chunk
    assert gets.peak >= 4, f"at most {gets.peak} chunk GET(s) in flight at once"


def test_one_big_file_is_fetched_over_many_connections(
    tmp_path: Path, moto_peers: MotoPeers, hostile_proxy_factory: Callable[[str], HostileProxy]
) -> None:
    files = {"one/big.bin": random.Random(6).randbytes(8 * MiB)}
    config, inbox, proxies = proxied_vault(
        tmp_path, moto_peers.endpoints, hostile_proxy_factory, files, chunking=SMALL_CHUNKS
    )
    gets = watch_gets(proxies, ChunkGets(hold=6, wait=1.0))
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree(out) == tree(inbox)
    assert gets.started >= 16  # many chunks
    assert gets.peak >= 6, f"at most {gets.peak} chunk GET(s) in flight at once"


def test_a_restore_killed_half_way_leaves_no_partial_file_and_a_rerun_completes(
    tmp_path: Path, moto_peers: MotoPeers, hostile_proxy_factory: Callable[[str], HostileProxy]
) -> None:
    rng = random.Random(31)
    files = {
        f"f/{i:02d}.bin": rng.randbytes(rng.randrange(200 * KiB, 900 * KiB)) for i in range(24)
    }
    files["big/last.bin"] = rng.randbytes(6 * MiB)
    config, inbox, proxies = proxied_vault(
        tmp_path, moto_peers.endpoints, hostile_proxy_factory, files, chunking=SMALL_CHUNKS
    )
    want = tree(inbox)
    gets = watch_gets(proxies, ChunkGets(stall_after=20))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    proc = subprocess.Popen(
        [CLI, "--config", str(config), "restore", "--to", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # Half-way: the first GETs were served, later ones hang, some temp files exist.
        while gets.started <= 20 or not temp_files(out):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the restore never got half-way"
            time.sleep(0.05)
        time.sleep(0.3)  # let the served chunks land in their temp files
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        gets.release()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    after_kill = tree(out)
    finals = {rel: v for rel, v in after_kill.items() if not Path(rel).name.startswith(".")}
    assert len(finals) < len(want)  # it really was killed before the end
    for rel, restored in finals.items():
        assert restored == want[rel], f"{rel} is under its final name but not complete"

    rerun = run_cli(config, "restore", "--to", str(out), env=PW)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finals)} already identical" in rerun.stdout or not finals
    restored = {rel: v for rel, v in tree(out).items() if not Path(rel).name.startswith(".")}
    assert restored == want
    # What a SIGKILL leaves is only ever a temp file (the push default ignores *.tmp).
    assert all(p.name.endswith(".tmp") for p in temp_files(out))


@pytest.mark.slow
def test_restoring_a_large_file_stays_within_the_byte_budget(
    tmp_path: Path, moto_peer_factory: Callable[[], MotoServer]
) -> None:
    """128 MiB, 64 workers, an 8 MiB budget: the restore holds the budget's worth of
    chunks, not a window of ``concurrency`` chunks (64 chunks of 2 MiB on average: the old
    one peaked at 426 MiB restoring 256 MiB).

    The bound is over what restoring a one-byte file peaks at in the same vault (the
    passphrase KDF alone takes 64 MiB), so it measures the data path only."""
    servers = [moto_peer_factory() for _ in range(3)]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], unique_bucket(), PW,
        chunking={"min_size": "512KiB", "avg_size": "2MiB", "max_size": "4MiB"},
        transfer={"concurrency": 64, "max_inflight_bytes": "8MiB", "timeout_seconds": 30},
        replication={"replicas": 1},
    )  # fmt: skip
    (inbox / "tiny.txt").write_bytes(b"x")
    big = inbox / "large.bin"
    with big.open("wb") as f:
        for _ in range(128):
            f.write(os.urandom(MiB))
    os.utime(big, ns=(BASE_MTIME_NS, BASE_MTIME_NS))
    pushed = run_cli(config, "push", env=PW, timeout=600)
    assert pushed.returncode == 0, pushed.stderr

    out = tmp_path / "out"
    result, baseline = run_cli_measured(config, "restore", "tiny.txt", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    result, peak = run_cli_measured(
        config, "restore", "large.bin", "--to", str(out), env=PW, timeout=600
    )
    assert result.returncode == 0, result.stderr
    restored = out / "large.bin"
    assert restored.stat().st_size == 128 * MiB
    assert restored.stat().st_mtime_ns == BASE_MTIME_NS
    with big.open("rb") as a, restored.open("rb") as b:
        while block := a.read(8 * MiB):
            assert block == b.read(8 * MiB)
    # The budget is 8 MiB of plaintext; a chunk briefly exists as body, ciphertext and
    # plaintext: 48 MiB over the baseline is generous, and far below the file's 128 MiB.
    assert peak - baseline < 48 * MiB, (
        f"restore of a 128 MiB file peaked at {peak / MiB:.0f} MiB, "
        f"{(peak - baseline) / MiB:.0f} MiB over a one-byte restore"
    )
