"""`chunkvault repair` through the real path (the CLI as a subprocess, moto peers over
HTTP): copies deleted, damaged or on a peer replaced by an empty one are brought back to R
good copies, verified before they are copied; the keyring goes back where it is missing;
after it, `check --read-data` passes and every file restores exactly. What has no good copy
anywhere is named with its files, and the rest is still repaired."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import yaml
from support.cli import init_vault, run_cli
from support.hostile_proxy import Reply, named
from support.moto_peers import unique_bucket
from support.vault_objects import holders, on_peer

from chunkvault.backends.base import Peer
from chunkvault.packs import HEADER

PW = {"CHUNKVAULT_PASSPHRASE": "repair test passphrase"}


def tree(root: Path, count: int = 60) -> dict[str, bytes]:
    rng = random.Random(9)
    files = {f"dir{i % 5}/f{i:03}.bin": rng.randbytes(rng.randint(3000, 9000))
             for i in range(count)}  # fmt: skip
    files["big/one.bin"] = os.urandom(700 * 1024)  # a chunk object
    files["big/two.bin"] = os.urandom(900 * 1024)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def flip(peer: Peer, key: str, at: int) -> None:
    meta = dict(peer.stat(key).metadata)
    body = bytearray(peer.get(key))
    body[at] ^= 0x10
    peer.put(key, bytes(body), meta)


def restored_exactly(config: Path, tmp_path: Path, files: dict[str, bytes]) -> bool:
    out = tmp_path / f"out-{random.getrandbits(32):08x}"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    return {rel: (out / rel).read_bytes() for rel in files} == files


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> tuple[Path, dict[str, bytes]]:
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    files = tree(inbox)
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    return config, files


def test_deleted_and_damaged_copies_and_a_missing_keyring_are_repaired(
    vault: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    config, files = vault
    before = holders(config)
    pack = next(k for k in sorted(before) if "/packs/" in k)
    chunk = next(k for k in sorted(before) if "/chunks/" in k)
    batch = next(k for k in sorted(before) if "/manifests/batch/" in k)
    pack_peer, chunk_peer, batch_peer = (sorted(before[k])[0] for k in (pack, chunk, batch))
    on_peer(config, pack_peer, lambda p: p.delete(pack))
    on_peer(config, chunk_peer, lambda p: flip(p, chunk, -1))
    on_peer(config, batch_peer, lambda p: flip(p, batch, 40))
    on_peer(config, "p2", lambda p: p.delete("test/keyring"))
    assert run_cli(config, "check", "--read-data", env=PW).returncode == 1

    result = run_cli(config, "repair", env=PW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "found: under-replicated: pack" in result.stdout
    assert result.stdout.count("found: damaged:") == 2
    assert "the keyring on p2" in result.stdout
    after = holders(config)
    assert len(after[pack]) == 2 and chunk_peer in after[chunk] and batch_peer in after[batch]
    assert "test/keyring" in after and after["test/keyring"] == {"p0", "p1", "p2"}
    check = run_cli(config, "check", "--read-data", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr
    assert restored_exactly(config, tmp_path, files)
    again = run_cli(config, "repair", env=PW)  # nothing left to do
    assert again.returncode == 0 and "0 object(s) repaired" in again.stdout


def test_a_peer_replaced_by_an_empty_one_is_filled_again(
    tmp_path: Path, moto_peers, moto_peer_factory
) -> None:
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    files = tree(inbox, 40)
    assert run_cli(config, "push", env=PW).returncode == 0
    data = yaml.safe_load(config.read_text())
    empty = moto_peer_factory()
    data["peers"][1]["endpoint"] = empty.endpoint  # p1 lost everything
    config.write_text(yaml.safe_dump(data))
    assert run_cli(config, "peers", "init", env=PW).returncode == 0  # its bucket
    assert run_cli(config, "check", env=PW).returncode == 1

    result = run_cli(config, "repair", env=PW)
    assert result.returncode == 0, result.stdout + result.stderr
    data_keys = {k: v for k, v in holders(config).items() if "/chunks/" in k or "/packs/" in k}
    assert data_keys and all(len(peers) >= 2 for peers in data_keys.values())
    assert "p1" in set().union(*data_keys.values())
    assert run_cli(config, "check", "--read-data", env=PW).returncode == 0
    assert restored_exactly(config, tmp_path, files)


def test_what_has_no_good_copy_is_named_and_the_rest_is_repaired(
    vault: tuple[Path, dict[str, bytes]],
) -> None:
    config, _ = vault
    before = holders(config)
    packs = sorted(k for k in before if "/packs/" in k)
    lost, other = packs[0], next(k for k in sorted(before) if "/chunks/" in k)
    for name in before[lost]:
        on_peer(config, name, lambda p: flip(p, lost, len(HEADER) + 10))
    other_peer = sorted(before[other])[0]
    on_peer(config, other_peer, lambda p: p.delete(other))

    result = run_cli(config, "repair", env=PW)
    assert result.returncode == 1
    left = [line for line in result.stdout.splitlines() if line.startswith("left:")]
    assert len(left) == 1 and "unrepairable" in left[0] and lost.rsplit("/", 1)[-1][:16] in left[0]
    assert "affects" in left[0] and "dir" in left[0]
    assert holders(config)[other] == before[other]  # the other object was repaired
    assert "could not be repaired" in result.stderr


def test_a_new_machine_repairs_and_both_machines_then_check_clean(
    vault: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """On a catalog rebuilt from the peers a pack's SHA-256 is unknown: the copy repair
    writes is verified chunk by chunk, and the machine that wrote the pack (which knows
    its SHA-256) still finds every copy good."""
    config, files = vault
    fresh = tmp_path / "fresh.yaml"
    data = yaml.safe_load(config.read_text())
    data["vault"]["state_dir"] = str(tmp_path / "fresh-state")
    fresh.write_text(yaml.safe_dump(data))
    before = holders(config)
    pack = next(k for k in sorted(before) if "/packs/" in k)
    on_peer(config, sorted(before[pack])[0], lambda p: p.delete(pack))
    result = run_cli(fresh, "repair", env=PW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(holders(config)[pack]) == 2
    for machine in (fresh, config):
        check = run_cli(machine, "check", "--read-data", env=PW)
        assert check.returncode == 0, check.stdout + check.stderr
    assert restored_exactly(fresh, tmp_path, files)


def test_a_new_copy_whose_write_fails_goes_to_the_next_ranked_peer(
    tmp_path: Path, moto_peers, hostile_proxy_factory
) -> None:
    """p2 (behind a proxy, weighted to rank first for every object) lost a pack copy and
    now refuses writes: the copy goes to the next-ranked peer, the catalog forgets the
    copy p2 no longer holds, and `check` then passes."""
    proxy = hostile_proxy_factory(moto_peers[2].endpoint)
    endpoints = [moto_peers[0].endpoint, moto_peers[1].endpoint, proxy.endpoint]
    config, inbox = init_vault(
        tmp_path, endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    data = yaml.safe_load(config.read_text())
    data["peers"][2]["weight"] = 50
    config.write_text(yaml.safe_dump(data))
    files = tree(inbox, 30)
    assert run_cli(config, "push", env=PW).returncode == 0
    before = holders(config)
    pack = next(k for k in sorted(before) if "/packs/" in k and "p2" in before[k])
    on_peer(config, "p2", lambda p: p.delete(pack))
    proxy.add(named("refuse_puts", lambda request, forward: Reply(
        403, body=b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    ) if request.method == "PUT" else None))  # fmt: skip

    result = run_cli(config, "repair", env=PW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert proxy.hits("refuse_puts") >= 1
    assert holders(config)[pack] == {"p0", "p1"}
    check = run_cli(config, "check", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr
    assert restored_exactly(config, tmp_path, files)
