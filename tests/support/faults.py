"""The fault suite's agent: a vault it watches, started as `chunkvault run` subprocesses,
files written into its tree, and waiting until it has stored them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from support.cli import CLI, init_vault, run_cli
from support.moto_peers import MotoServer, unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "fault suite passphrase"}


def start_agent(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``env``: on top of the environment without CHUNKVAULT_* (default: the passphrase;
    ``{}`` for a write-only host)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | (
        PW if env is None else env
    )
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen([CLI, "--config", str(config), "run"], env=env,
                                stdout=out, stderr=out)  # fmt: skip
    deadline = time.monotonic() + 30
    while b"watching" not in log.read_bytes()[offset:]:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc


def agent_vault(
    tmp_path: Path, servers: list[MotoServer], min_replicas: int, **sections: dict
) -> tuple[Path, Path]:
    """A vault over ``servers`` (R=2) watched by an agent that settles quickly: (config,
    inbox)."""
    return init_vault(
        tmp_path, [s.endpoint for s in servers], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": min_replicas},
        watch={"settle_seconds": 0.3, "rescan_seconds": 0},
        api={"enabled": False},
        **sections,
    )  # fmt: skip


def write(inbox: Path, rel: str, data: bytes) -> None:
    (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
    (inbox / rel).write_bytes(data)


def wait_stored(
    config: Path,
    files: dict[str, bytes],
    agent: subprocess.Popen[bytes],
    log: Path,
    seconds: float,
    env: dict[str, str] | None = None,
) -> None:
    """Until ``ls`` lists every file (the agent must stay up meanwhile)."""
    deadline = time.monotonic() + seconds
    while stored_paths(config, env) != set(files):
        assert agent.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, sorted(set(files) - stored_paths(config, env))[:5]
        time.sleep(0.5)


def stored_paths(config: Path, env: dict[str, str] | None = None) -> set[str]:
    result = run_cli(config, "ls", "--json", env=PW if env is None else env)
    assert result.returncode == 0, result.stderr
    return {entry["path"] for entry in json.loads(result.stdout)}


def restore_matches(config: Path, target: Path, files: dict[str, bytes]) -> None:
    result = run_cli(config, "restore", "--to", str(target), env=PW, timeout=180)
    assert result.returncode == 0, result.stderr
    assert {rel: (target / rel).read_bytes() for rel in files} == files


def stop_agent(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM the agent if it still runs, and wait for it to finish what is in flight."""
    if agent.poll() is None:
        agent.terminate()
        agent.wait(timeout=30)


def assert_clean(config: Path) -> None:
    """`check --read-data` finds every object the versions need on R good copies."""
    check = run_cli(config, "check", "--read-data", env=PW, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
