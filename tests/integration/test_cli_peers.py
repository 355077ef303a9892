"""`chunkvault peers ...` against real local S3 peers, as subprocesses of the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.cli import run_cli


def run(config: Path, *args: str):
    return run_cli(config, *args)


@pytest.fixture
def local_peers(tmp_path: Path):
    """`python -m chunkvault.localpeers` (what `make peers` runs), stopped by SIGTERM."""
    config = tmp_path / "demo" / "chunkvault.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkvault.localpeers", "--count", "3", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not config.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "local peers did not start"
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written in one go, but let the write finish
        yield config, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        proc.stdout.close()


def test_init_list_test_on_local_peers(local_peers):
    config, proc = local_peers
    data = yaml.safe_load(config.read_text())
    assert [p["name"] for p in data["peers"]] == ["peer-a", "peer-b", "peer-c"]
    assert all(p["endpoint"].startswith("http://127.0.0.1:") for p in data["peers"])

    # `make peers` created the buckets: the peers work at once, and init finds them there.
    first_test = run(config, "peers", "test")
    assert first_test.returncode == 0, first_test.stdout + first_test.stderr
    assert "NoSuchBucket" not in first_test.stdout + first_test.stderr
    again = run(config, "peers", "init")
    assert again.returncode == 0 and again.stdout.count("exists") == 3

    listed = run(config, "peers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["peer-a", "peer-b", "peer-c"]
    assert all(r["up"] and r["kind"] == "s3" and r["latency_ms"] >= 0 for r in rows)

    tested = run(config, "peers", "test")
    assert tested.returncode == 0, tested.stderr
    lines = [line for line in tested.stdout.splitlines() if line.strip().endswith("ok")]
    assert len(lines) == 6  # 2 sizes x 3 peers
    assert "12.0 MiB" in tested.stdout and "1.0 MiB" in tested.stdout

    # The demo runner stops its servers on SIGTERM, and nothing answers afterwards.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert "local peers stopped" in proc.stdout.read()
    down = run(config, "peers", "list", "--json")
    assert [r["up"] for r in json.loads(down.stdout)] == [False, False, False]


def test_a_dead_peer_shows_down_and_fails_the_round_trip(tmp_path, moto_peer_factory):
    alive, dead = moto_peer_factory(), moto_peer_factory()
    config = tmp_path / "cv.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "vault": {"id": "t", "state_dir": str(tmp_path / "state")},
                "replication": {"replicas": 1},
                "transfer": {"timeout_seconds": 2, "retries": 1},
                "peers": [
                    {
                        "name": "alive",
                        "endpoint": alive.endpoint,
                        "bucket": "cvtest",
                        "access_key": "testing",
                        "secret_key": "testing",
                    },
                    {
                        "name": "dead",
                        "endpoint": dead.endpoint,
                        "bucket": "cvtest",
                        "access_key": "testing",
                        "secret_key": "testing",
                    },
                    {"name": "disk", "path": str(tmp_path / "disk"), "weight": 2},
                ],
            }
        )
    )
    assert run(config, "peers", "init").returncode == 0
    dead.kill()
    listed = run(config, "peers", "list")
    assert listed.returncode == 0
    table = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert " up " in table["alive"] and " up " in table["disk"]
    assert " down " in table["dead"]
    tested = run(config, "peers", "test")
    assert tested.returncode == 1
    assert "dead" in tested.stderr and "Traceback" not in tested.stderr
    assert tested.stderr.count("\n") == 1  # one line: what failed and what to do
    assert "FAILED" in tested.stdout
    # The healthy peers still passed, the disk one via its directory.
    assert sum(1 for line in tested.stdout.splitlines() if line.endswith("ok")) == 4
    # Test objects (and their metadata sidecars) are cleaned up; empty directories may stay.
    assert [p for p in (tmp_path / "disk").rglob("*") if p.is_file()] == []
    failed_init = run(config, "peers", "init")
    assert failed_init.returncode == 1 and "dead" in failed_init.stderr


def test_peers_init_creates_a_directory_peer_idempotently(tmp_path):
    config = tmp_path / "cv.yaml"
    disk = tmp_path / "nested" / "disk"
    config.write_text(
        yaml.safe_dump(
            {"replication": {"replicas": 1}, "peers": [{"name": "disk", "path": str(disk)}]}
        )
    )
    assert run(config, "peers", "init").stdout.count("created") == 1
    assert disk.is_dir()
    assert "exists" in run(config, "peers", "init").stdout
    assert os.listdir(disk) == []
