"""An erasure-coded vault's upkeep through the real path (the CLI as a subprocess, moto
peers over HTTP; five peers, each a bucket of its own on the session's servers):
`check` counts shares and, with --read-data, names the one share that is damaged;
`repair` rebuilds missing and damaged shares onto the right peers; `peers drain` moves
every share off a peer; `gc` deletes every share of what no version needs. Every file
restores exactly after each step."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import yaml
from support.cli import run_cli
from support.moto_peers import MotoPeers, unique_bucket
from support.vault_objects import copies, on_peer

from chunkvault.backends.base import Peer
from chunkvault.layout import parse_data_key

PW = {"CHUNKVAULT_PASSPHRASE": "erasure upkeep passphrase"}


def write_config(tmp_path: Path, endpoints: list[str], n: int, **sections: object) -> Path:
    data = {
        "vault": {"id": "test", "state_dir": str(tmp_path / "state")},
        "watch": {"path": str(tmp_path / "inbox")},
        "replication": {"erasure": {"data": 3, "parity": 2}, "min_replicas": 2},
        "chunking": {"min_size": "64KiB", "avg_size": "128KiB", "max_size": "256KiB",
                     "pack_threshold": "100KiB"},
        "transfer": {"timeout_seconds": 5, "retries": 1},
        "peers": [
            {"name": f"p{i}", "endpoint": endpoints[i % len(endpoints)],
             "bucket": unique_bucket(f"ec{i}"), "access_key": "testing",
             "secret_key": "testing"}
            for i in range(n)
        ],
        **sections,
    }  # fmt: skip
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def vault(tmp_path: Path, moto_peers: MotoPeers) -> tuple[Path, dict[str, bytes]]:
    """Five peers, 3+2, a pushed tree of big files (chunk objects) and small ones (packs)."""
    config = write_config(tmp_path, moto_peers.endpoints, 5)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    assert run_cli(config, "init", env=PW).returncode == 0
    rng = random.Random(12)
    files = {f"small/s{i:02}.txt": rng.randbytes(rng.randint(100, 9000)) for i in range(20)}
    files |= {f"big/b{i}.bin": rng.randbytes(rng.randint(300_000, 600_000)) for i in range(4)}
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr
    return config, files


def shares(config: Path) -> dict[tuple[str, str], dict[str, int]]:
    """(kind, id) -> {peer: share index}, as the peers list them."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for key, where in copies(config).items():
        if "/chunks/" not in key and "/packs/" not in key:
            continue
        found = parse_data_key("test", key)
        assert found.share is not None, key  # nothing but shares
        for peer in where:
            out.setdefault((found.kind, found.id), {})[peer] = found.share
    return out


def share_key_of(config: Path, kind: str, peer: str) -> str:
    """The key of some share of a ``kind`` object that ``peer`` holds."""
    return sorted(k for k, where in copies(config).items() if f"/{kind}s/" in k and peer in where)[
        0
    ]


def restores(config: Path, tmp_path: Path, files: dict[str, bytes], name: str) -> None:
    shutil.rmtree(tmp_path / "state", ignore_errors=True)  # a fresh machine
    out = tmp_path / name
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert {rel: (out / rel).read_bytes() for rel in files} == files


def test_check_counts_shares_names_a_damaged_one_and_repair_rebuilds_them(
    vault: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    config, files = vault
    held = shares(config)
    assert held and all(sorted(w.values()) == [0, 1, 2, 3, 4] for w in held.values())
    assert {k for k, _ in held} == {"chunk", "pack"}
    check = run_cli(config, "check", "--read-data", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr

    # One share of a chunk object gone, one share of a pack flipped.
    gone = share_key_of(config, "chunk", "p1")
    on_peer(config, "p1", lambda p: p.delete(gone))
    flipped = share_key_of(config, "pack", "p3")

    def flip(peer: Peer) -> None:
        meta = dict(peer.stat(flipped).metadata)
        body = bytearray(peer.get(flipped))
        body[len(body) // 2] ^= 0x10
        peer.put(flipped, bytes(body), meta)

    on_peer(config, "p3", flip)
    restores(config, tmp_path, files, "r1")  # two shares short: still exact

    check = run_cli(config, "check", env=PW)
    assert check.returncode == 1
    short = parse_data_key("test", gone).id[:16]
    assert any(line.startswith("under-replicated:") and short in line and "4 of 5 shares" in line
               for line in check.stdout.splitlines()), check.stdout  # fmt: skip
    data = run_cli(config, "check", "--read-data", env=PW)
    assert data.returncode == 1
    damaged = [ln for ln in data.stdout.splitlines() if ln.startswith("damaged:")]
    index = parse_data_key("test", flipped).share
    assert len(damaged) == 1 and f"share {index} on p3" in damaged[0], data.stdout

    repaired = run_cli(config, "repair", env=PW)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert all(sorted(w.values()) == [0, 1, 2, 3, 4] for w in shares(config).values())
    clean = run_cli(config, "check", "--read-data", env=PW)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    restores(config, tmp_path, files, "r2")

    # Three shares of one chunk object flipped: nothing rebuilds it, and each share is then
    # judged alone, by the SHA-256 in its own metadata.
    chunk = next(k for k in held if k[0] == "chunk")
    flipped_on = sorted(held[chunk])[:3]
    for peer in flipped_on:
        key = next(k for k in copies(config) if chunk[1] in k and peer in copies(config)[k])

        def flip_one(p: Peer, key: str = key) -> None:
            meta = dict(p.stat(key).metadata)
            body = bytearray(p.get(key))
            body[-1] ^= 0x01
            p.put(key, bytes(body), meta)

        on_peer(config, peer, flip_one)
    broken = run_cli(config, "check", "--read-data", env=PW)
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    assert any(ln.startswith(f"unrebuildable: chunk {chunk[1][:16]}") for ln in lines), lines
    damaged = sorted(ln.split(" on ")[1].split(":")[0] for ln in lines
                     if ln.startswith(f"damaged: chunk {chunk[1][:16]}"))  # fmt: skip
    assert damaged == flipped_on, broken.stdout


def test_drain_moves_every_share_off_a_peer_and_gc_deletes_every_share_it_frees(
    vault: tuple[Path, dict[str, bytes]], tmp_path: Path, moto_peers: MotoPeers
) -> None:
    config, files = vault
    refused = run_cli(config, "peers", "drain", "p0", env=PW)  # 4 peers for 5 shares
    assert refused.returncode == 1 and "for the 5 shares of each object" in refused.stderr
    data = yaml.safe_load(config.read_text())
    data["peers"].append({**data["peers"][0], "name": "p5", "bucket": unique_bucket("ec5")})
    config.write_text(yaml.safe_dump(data))
    assert run_cli(config, "peers", "init", env=PW).returncode == 0
    drained = run_cli(config, "peers", "drain", "p0", env=PW)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    after = shares(config)
    assert all("p0" not in where and sorted(where.values()) == [0, 1, 2, 3, 4]
               for where in after.values()), after  # fmt: skip
    data["peers"] = [p for p in data["peers"] if p["name"] != "p0"]
    config.write_text(yaml.safe_dump(data))
    restores(config, tmp_path, files, "r1")
    clean = run_cli(config, "check", "--read-data", env=PW)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # The big files deleted and gc (deleted_days 0): no share of their chunks is left.
    inbox = tmp_path / "inbox"
    for rel in [r for r in files if r.startswith("big/")]:
        (inbox / rel).unlink()
    assert run_cli(config, "push", env=PW).returncode == 0
    data = yaml.safe_load(config.read_text())
    data["retention"] = {"deleted_days": 0}
    config.write_text(yaml.safe_dump(data))
    before = shares(config)
    swept = run_cli(config, "gc", env=PW)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    after = shares(config)
    assert [k for k in before if k[0] == "chunk"] and not [k for k in after if k[0] == "chunk"]
    assert all(sorted(w.values()) == [0, 1, 2, 3, 4] for w in after.values())
    kept = {rel: body for rel, body in files.items() if not rel.startswith("big/")}
    restores(config, tmp_path, kept, "r2")
