"""Issue 15's black-box run: 5 peers, ``erasure: {data: 3, parity: 2}``.

A pushed 48 MiB random tree occupies at most 1.8x its size on the peers, each peer within
35 % of the mean; with any 2 peers stopped, a fresh machine restores it byte-identical;
the 2 come back empty, `repair` runs, 2 *other* peers are stopped, and the restore is still
byte-identical. Real moto processes, the CLI as subprocesses, real files.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import yaml
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket
from support.vault_objects import copies

PW = {"CHUNKVAULT_PASSPHRASE": "erasure passphrase"}
MiB = 1024 * 1024


def tree(rng: random.Random) -> dict[str, bytes]:
    """48 MiB of random files: big ones (chunk objects) and many small ones (packs)."""
    files: dict[str, bytes] = {}
    for i in range(40):
        files[f"small/{i % 4}/s{i:02}.bin"] = rng.randbytes(rng.randint(1000, 60_000))
    big = 48 * MiB - sum(map(len, files.values()))
    sizes = [big // 12] * 11 + [big - 11 * (big // 12)]
    for i, size in enumerate(sizes):
        files[f"big/b{i:02}.bin"] = rng.randbytes(size)
    assert sum(map(len, files.values())) == 48 * MiB
    return files


def restore_on_a_fresh_machine(config: Path, tmp_path: Path, name: str) -> dict[str, bytes]:
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
    out = tmp_path / name
    result = run_cli(config, "restore", "--to", str(out), env=PW, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_five_peers_three_plus_two_survive_any_two_lost_and_repair(
    tmp_path: Path, moto_peer_factory
) -> None:
    servers = [moto_peer_factory() for _ in range(5)]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], unique_bucket(), PW,
        replication={"erasure": {"data": 3, "parity": 2}, "min_replicas": 3},
    )  # fmt: skip
    rng = random.Random(15)
    files = tree(rng)
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    pushed = run_cli(config, "push", env=PW, timeout=300)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr

    # Storage: <= 1.8x the tree (manifests and all), spread evenly.
    held = copies(config)
    per_peer = {f"p{i}": 0 for i in range(5)}
    for key, where in held.items():
        for peer, size in where.items():
            if key != "test/keyring":
                per_peer[peer] += size
    total = sum(per_peer.values())
    assert total <= 1.8 * 48 * MiB, total / MiB
    mean = total / 5
    assert all(abs(b - mean) <= 0.35 * mean for b in per_peer.values()), per_peer
    assert not [k for k in held if "/chunks/" in k and ".ec3-2." not in k]  # shares only

    # Any 2 peers stopped: byte-identical from the other 3.
    first = rng.sample(range(5), 2)
    for i in first:
        servers[i].shutdown()
    assert restore_on_a_fresh_machine(config, tmp_path, "r1") == files

    # They come back empty; repair; 2 others stopped.
    data = yaml.safe_load(config.read_text())
    for i in first:
        servers[i] = moto_peer_factory()
        data["peers"][i]["endpoint"] = servers[i].endpoint
    config.write_text(yaml.safe_dump(data))
    assert run_cli(config, "peers", "init", env=PW).returncode == 0
    repaired = run_cli(config, "repair", env=PW, timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    second = rng.sample([i for i in range(5) if i not in first], 2)
    for i in second:
        servers[i].shutdown()
    assert restore_on_a_fresh_machine(config, tmp_path, "r2") == files
