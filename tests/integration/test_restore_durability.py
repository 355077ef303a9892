"""A restore is durable as a whole: it flushes the target's file system once, at its end,
before it reports success, instead of an fsync per file and per directory (which cost a
2,000-file restore about 1 s of its 2.6 s); a flush that fails is an error, never a
success. The CLI as a subprocess (through a wrapper around the installed command's
``main`` that counts fsyncs and file-system flushes), real HTTP S3 peers (moto)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "restore durability passphrase"}

_WRAPPER = """
import atexit, ctypes, errno, json, os, sys
from chunkvault import fsutil
counts = {"fsync": 0, "syncfs": 0}
real_fsync = os.fsync
def fsync(fd):
    counts["fsync"] += 1
    return real_fsync(fd)
os.fsync = fsync
real_syncfs = fsutil._syncfs
def syncfs(fd):
    counts["syncfs"] += 1
    if os.environ.get("CV_TEST_SYNCFS_FAILS"):
        ctypes.set_errno(errno.EIO)
        return -1
    return real_syncfs(fd) if real_syncfs is not None else 0
fsutil._syncfs = syncfs
def report():
    with open(os.environ["CV_TEST_REPORT"], "w") as out:
        json.dump(counts, out)
atexit.register(report)
from chunkvault.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

FILES = {f"d{i % 5}/sub{i % 3}/f{i:03}.txt": os.urandom(3000 + i) for i in range(60)}


def pushed(tmp_path: Path, endpoints: list[str]) -> Path:
    config, inbox = init_vault(tmp_path, endpoints, unique_bucket(), PW)
    for rel, data in FILES.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    return config


def restore_counted(
    config: Path, target: Path, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    report = tmp_path / "report.json"
    full = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW | env
    full["CV_TEST_REPORT"] = str(report)
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "--config", str(config), "restore", "--to", str(target)],
        capture_output=True, text=True, env=full, timeout=120,
    )  # fmt: skip
    return result, json.loads(report.read_text())


def test_a_restore_flushes_its_file_system_once_instead_of_each_file(tmp_path, moto_peers):
    config = pushed(tmp_path, moto_peers.endpoints)
    target = tmp_path / "out"
    result, counts = restore_counted(config, target, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {rel: (target / rel).read_bytes() for rel in FILES} == FILES
    assert counts["syncfs"] == 1
    # Opening the vault may fsync a state file or two; 60 files in 15 directories would
    # take 120 or more, one per file and one per directory entry.
    assert counts["fsync"] < 10, counts


def test_a_flush_that_fails_is_an_error_not_a_success(tmp_path, moto_peers):
    config = pushed(tmp_path, moto_peers.endpoints)
    result, counts = restore_counted(config, tmp_path / "out", tmp_path, CV_TEST_SYNCFS_FAILS="1")
    assert result.returncode != 0
    assert counts["syncfs"] == 1
    assert "could not be written to disk" in result.stderr
    assert "restore: 60 file(s)" not in result.stdout


def test_a_restore_under_a_low_fd_limit_sizes_itself_to_it(tmp_path, moto_peers):
    """The files it keeps open (two fds each), the directory fds it keeps and the files it
    prepares ahead all follow RLIMIT_NOFILE: with 64 fds it neither runs out nor waits
    for an open-file slot forever."""
    files = {f"d{i % 7}/e{i % 4}/g{i:04}.bin": os.urandom(2000 + i) for i in range(400)}
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    assert run_cli(config, "push", env=PW).returncode == 0
    target = tmp_path / "out"

    def low_limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    result = subprocess.run(
        [CLI, "--config", str(config), "restore", "--to", str(target)],
        capture_output=True, text=True, env=env, timeout=90, preexec_fn=low_limit,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {rel: (target / rel).read_bytes() for rel in files} == files
