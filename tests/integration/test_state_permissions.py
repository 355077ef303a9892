"""The state dir is the owner's only: the catalog lists every path with a plain SHA-256 of
each file. Whatever the umask, every directory in it is 0700 and every file 0600, and an
older, looser state dir is tightened. The CLI as a subprocess, real HTTP S3 peers."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from support.cli import CLI, run_cli, write_config
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "private state passphrase"}


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW


def with_umask_000(config: Path, *args: str) -> list[str]:
    """The command line of ``chunkvault ARGS`` run with umask 000 (a wrapper shell execs)."""
    return ["sh", "-c", 'umask 000 && exec "$0" "$@"', CLI, "--config", str(config), *args]


def run_with_umask_000(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        with_umask_000(config, *args), capture_output=True, text=True, env=cli_env(), timeout=120
    )


def modes(state: Path) -> dict[str, int]:
    """Relative path -> permission bits of the state dir and everything in it."""
    found = {".": stat.S_IMODE(state.stat().st_mode)}
    for dirpath, dirs, files in os.walk(state):
        for name in dirs + files:
            path = Path(dirpath) / name
            found[str(path.relative_to(state))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(state: Path) -> dict[str, int]:
    found = modes(state)
    loose = {
        rel: oct(mode)
        for rel, mode in found.items()
        if mode != (0o700 if (state / rel).is_dir() else 0o600)
    }
    assert loose == {}, f"not owner-only: {loose}"
    return found


def test_umask_000_still_makes_every_state_dir_0700_and_file_0600(tmp_path, moto_peers):
    state = tmp_path / "var" / "lib" / "chunkvault"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = write_config(
        tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket(),
        vault={"state_dir": str(state)}, watch={"path": str(inbox), "settle_seconds": 0.2},
        api={"enabled": False},
    )  # fmt: skip
    result = run_with_umask_000(config, "init")
    assert result.returncode == 0, result.stderr
    for name in ("var", "var/lib"):  # parents chunkvault created are private too
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o700
    (inbox / "a").mkdir()
    (inbox / "a" / "secret-name.txt").write_bytes(b"some content\n")
    result = run_with_umask_000(config, "push")
    assert result.returncode == 0, result.stderr
    assert {"keyring.json", "catalog.db"} <= set(assert_private(state))

    # While the agent runs, SQLite's -wal and -shm exist: they are private too.
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            with_umask_000(config, "run"), env=cli_env(), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while b"watching" not in log.read_bytes():
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        (inbox / "b.txt").write_bytes(b"more\n")
        deadline = time.monotonic() + 30
        while b"stored b.txt" not in log.read_bytes():
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert {"catalog.db-wal", "catalog.db-shm"} <= set(assert_private(state))
    finally:
        agent.terminate()
        agent.wait(timeout=20)
    assert_private(state)


def test_a_state_dir_left_open_by_an_older_version_is_tightened(tmp_path, moto_peers):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "f.txt").write_bytes(b"content\n")
    config = write_config(
        tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket(), watch={"path": str(inbox)}
    )
    for args in (("init",), ("push",)):
        result = run_cli(config, *args, env=PW)
        assert result.returncode == 0, result.stderr
    state = tmp_path / "state"
    os.chmod(state, 0o755)  # what earlier versions left (umask 022)
    os.chmod(state / "catalog.db", 0o644)
    (state / "catalog.db-wal").write_bytes(b"")  # as a crash would leave it
    os.chmod(state / "catalog.db-wal", 0o644)

    result = run_cli(config, "--debug", "ls", env=PW)

    assert result.returncode == 0, result.stderr
    assert f"{state} was mode 755 (readable by other users): now 700" in result.stderr
    assert f"{state / 'catalog.db'} was mode 644 (readable by other users): now 600" in (
        result.stderr
    )
    assert_private(state)
