"""`check` beside a running agent that keeps storing files: it takes no lock, and a version
stored while it lists the peers is never taken for a lost one (it reads the catalog's
versions before it lists). The CLI and `chunkvault run` as subprocesses, moto peers."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "check beside agent passphrase"}


def test_check_beside_an_agent_storing_files_finds_nothing_wrong(tmp_path: Path, moto_peers):
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"settle_seconds": 0.2, "rescan_seconds": 0},
        replication={"replicas": 2, "min_replicas": 2},  # stored = on R peers
        chunking={"pack_flush_seconds": 0.2},
        api={"enabled": False},
    )  # fmt: skip
    (inbox / "first.txt").write_text("before the agent\n")
    log = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    with open(log, "ab") as out:
        agent = subprocess.Popen([CLI, "--config", str(config), "run"], env=env,
                                 stdout=out, stderr=out)  # fmt: skip
    stop = threading.Event()

    def keep_writing() -> None:
        i = 0
        while not stop.is_set():
            (inbox / f"d{i % 3}").mkdir(exist_ok=True)
            (inbox / f"d{i % 3}" / f"f{i:04}.bin").write_bytes(os.urandom(4000 + i))
            i += 1
            time.sleep(0.02)

    writer = threading.Thread(target=keep_writing)
    try:
        deadline = time.monotonic() + 30
        while b"watching" not in log.read_bytes():
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        writer.start()
        time.sleep(1.0)
        for _ in range(3):
            result = run_cli(config, "check", env=PW)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "no problems" in result.stdout
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        agent.terminate()
        agent.wait(timeout=20)
    assert agent.returncode == 0, log.read_text()
