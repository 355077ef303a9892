"""`chunkvault check` through the real path (the CLI as a subprocess, moto peers over HTTP):
a healthy vault passes; a replica deleted from one peer, a damaged copy (only
`--read-data` opens copies), a missing keyring and a peer that cannot be listed are each
reported once, with the files they affect, and make it exit non-zero; a lost object is
told apart from one merely unseen on a peer that is down."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.base import Peer
from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.packs import HEADER

PW = {"CHUNKVAULT_PASSPHRASE": "check test passphrase"}


def tree(root: Path, count: int = 40) -> dict[str, bytes]:
    rng = random.Random(5)
    files = {
        f"dir{i % 4}/f{i:03}.bin": rng.randbytes(rng.randint(3000, 9000)) for i in range(count)
    }
    files["big/whole.bin"] = os.urandom(700 * 1024)  # above pack_threshold: a chunk object
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.fixture
def pushed(tmp_path: Path, moto_peers) -> Path:
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    tree(inbox)
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    return config


def change_one_copy(
    config: Path, prefix: str, change: Callable[[Peer, str], None]
) -> tuple[str, str]:
    """Apply ``change`` to the first object under ``prefix`` on the first peer holding
    one: (that peer's name, the key)."""
    peers = build_peers(load_config(config))
    try:
        for peer in peers:
            keys = [info.key for info in peer.list(prefix)]
            if keys:
                change(peer, keys[0])
                return peer.name, keys[0]
    finally:
        for peer in peers:
            peer.close()
    raise AssertionError(f"nothing under {prefix}")


def delete(peer: Peer, key: str) -> None:
    peer.delete(key)


def flip(at: int, bits: int) -> Callable[[Peer, str], None]:
    """A change that flips ``bits`` of the byte at ``at`` (from the end if negative),
    keeping the object's metadata."""

    def change(peer: Peer, key: str) -> None:
        meta = dict(peer.stat(key).metadata)
        body = bytearray(peer.get(key))
        body[at] ^= bits
        peer.put(key, bytes(body), meta)

    return change


def test_a_healthy_vault_passes_with_and_without_reading_the_data(pushed: Path) -> None:
    result = run_cli(pushed, "check", env=PW)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no problems" in result.stdout and "41 version(s)" in result.stdout
    result = run_cli(pushed, "check", "--read-data", env=PW)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "read " in result.stdout and "no problems" in result.stdout


def test_a_replica_deleted_from_one_peer_is_one_under_replicated_line(pushed: Path) -> None:
    peer, key = change_one_copy(pushed, "test/packs/", delete)
    result = run_cli(pushed, "check", env=PW)
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if key.rsplit("/", 1)[-1][:16] in line]
    assert len(lines) == 1, result.stdout  # each problem once
    assert lines[0].startswith("under-replicated:") and "on 1 of 2 peers" in lines[0]
    assert f"recorded on {peer}, not there" in lines[0]
    assert "affects" in lines[0] and "dir" in lines[0]
    assert "1 problem(s) found" in result.stderr


def test_a_damaged_copy_is_found_only_by_reading_the_data_and_restore_is_exact(
    pushed: Path, tmp_path: Path
) -> None:
    # One bit, inside the first chunk's ciphertext.
    peer, _ = change_one_copy(pushed, "test/packs/", flip(len(HEADER) + 100, 0x01))
    assert run_cli(pushed, "check", env=PW).returncode == 0  # the structure is whole
    result = run_cli(pushed, "check", "--read-data", env=PW)
    assert result.returncode == 1
    damaged = [line for line in result.stdout.splitlines() if line.startswith("damaged:")]
    assert len(damaged) == 1 and f"copy on {peer}" in damaged[0], result.stdout
    assert "affects" in damaged[0]
    out = tmp_path / "out"
    assert run_cli(pushed, "restore", "--to", str(out), env=PW).returncode == 0
    inbox = tmp_path / "inbox"
    assert all((out / p.relative_to(inbox)).read_bytes() == p.read_bytes()
               for p in inbox.rglob("*") if p.is_file())  # fmt: skip


def test_a_damaged_chunk_object_copy_is_named(pushed: Path) -> None:
    change_one_copy(pushed, "test/chunks/", flip(-1, 0x80))  # in the tag
    result = run_cli(pushed, "check", "--read-data", env=PW)
    assert result.returncode == 1
    damaged = [line for line in result.stdout.splitlines() if line.startswith("damaged:")]
    assert damaged == [line for line in damaged if "big/whole.bin" in line and "chunk " in line]
    assert len(damaged) == 1, result.stdout


def test_a_missing_keyring_is_reported(pushed: Path) -> None:
    peer, _ = change_one_copy(pushed, "test/keyring", delete)
    result = run_cli(pushed, "check", env=PW)
    assert result.returncode == 1
    assert f"keyring: keyring on peer {peer}: missing" in result.stdout


def test_a_peer_that_cannot_be_listed_leaves_its_objects_unseen_not_lost(
    tmp_path: Path, moto_peer_factory
) -> None:
    servers = [moto_peer_factory(), moto_peer_factory()]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    tree(inbox, 10)
    assert run_cli(config, "push", env=PW).returncode == 0
    servers[1].kill()
    result = run_cli(config, "check", env=PW)
    assert result.returncode == 1
    out = result.stdout
    assert "peer: peer p1: cannot be listed" in out
    assert "lost:" not in out
    assert "under-replicated:" in out  # what p0 holds is on 1 of 2 peers as far as is known


@pytest.mark.parametrize("bad", ["0%", "101%", "ten", "-5%"])
def test_a_subset_that_is_not_a_percentage_is_refused(pushed: Path, bad: str) -> None:
    result = run_cli(pushed, "check", "--read-data-subset", bad, env=PW)
    assert result.returncode == 2
    assert "not a percentage" in result.stderr


def test_a_subset_reads_some_copies(pushed: Path) -> None:
    result = run_cli(pushed, "check", "--read-data-subset", "100%", env=PW)
    assert result.returncode == 0, result.stdout + result.stderr
    full = int(result.stdout.split("read ")[1].split()[0])
    assert full > 0


def test_on_a_new_machine_packs_are_checked_chunk_by_chunk(pushed: Path, tmp_path: Path) -> None:
    """A catalog rebuilt from the peers knows no pack's SHA-256 (nor a size to trust: it
    came from a listing): each copy is read up to its last chunk and every chunk opened."""
    fresh = tmp_path / "fresh.yaml"
    data = yaml.safe_load(pushed.read_text())
    data["vault"]["state_dir"] = str(tmp_path / "fresh-state")
    fresh.write_text(yaml.safe_dump(data))
    result = run_cli(fresh, "check", "--read-data", env=PW)
    assert result.returncode == 0, result.stdout + result.stderr
    peer, _ = change_one_copy(pushed, "test/packs/", flip(-20, 0x01))  # in the last chunk
    result = run_cli(fresh, "check", "--read-data", env=PW)
    assert result.returncode == 1
    damaged = [line for line in result.stdout.splitlines() if line.startswith("damaged:")]
    assert len(damaged) == 1 and f"copy on {peer}" in damaged[0], result.stdout


def test_json_lists_each_problem_with_its_files(pushed: Path) -> None:
    peer, key = change_one_copy(pushed, "test/packs/", delete)
    result = run_cli(pushed, "check", "--json", env=PW)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["versions"] == 41 and report["objects"]["pack"] >= 1
    (problem,) = report["problems"]
    assert problem["kind"] == "under-replicated"
    assert problem["subject"] == f"pack {key.rsplit('/', 1)[-1][:16]}"
    assert f"recorded on {peer}" in problem["detail"]
    assert problem["files"] and all(set(f) == {"path"} for f in problem["files"])
    read = run_cli(pushed, "check", "--json", "--read-data-subset", "100%", env=PW)
    assert json.loads(read.stdout)["copies_read"] > 0
