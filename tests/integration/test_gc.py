"""`chunkvault gc` through the real path (the CLI as a subprocess, moto peers over HTTP):
what retention no longer keeps is deleted, packs mostly garbage are repacked, every kept
file still restores exactly and `check --read-data` stays clean; `--dry-run` changes
nothing; a gc cut short (SIGKILL) is finished by the next; what no version references but
is younger than the grace period stays."""

from __future__ import annotations

import json
import os
import random
import re
import threading
from pathlib import Path

import pytest
import yaml
from support.cli import init_vault, kill_when, run_cli
from support.hostile_proxy import Reply
from support.moto_peers import unique_bucket
from support.vault_objects import copies, on_peer, stored_bytes

PW = {"CHUNKVAULT_PASSPHRASE": "gc test passphrase"}


def tree(root: Path, count: int, seed: int = 5) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"dir{i % 4}/f{i:03}.bin": rng.randbytes(rng.randint(4000, 30_000))
             for i in range(count)}  # fmt: skip
    for i in range(4):  # chunk objects of their own
        files[f"big/b{i}.bin"] = rng.randbytes(rng.randint(600_000, 800_000))
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def stored(config: Path) -> set[str]:
    return set(copies(config))


def data_bytes(config: Path) -> int:
    return stored_bytes(config, manifests=False)


def restores(config: Path, target: Path, files: dict[str, bytes]) -> None:
    result = run_cli(config, "restore", "--to", str(target), env=PW)
    assert result.returncode == 0, result.stderr
    got = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert got == files


def set_retention(config: Path, **values: object) -> None:
    data = yaml.safe_load(config.read_text())
    data["retention"] = {**data.get("retention", {}), **values}
    config.write_text(yaml.safe_dump(data))


def gc(config: Path, *args: str) -> dict:
    result = run_cli(config, "gc", "--json", *args, env=PW, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> tuple[Path, Path, dict[str, bytes]]:
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
    )  # fmt: skip
    files = tree(inbox, 80)
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    return config, inbox, files


def delete_half(inbox: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    """Delete every other file and push the tombstones; the files left."""
    kept = {}
    for i, (rel, data) in enumerate(sorted(files.items())):
        if i % 2:
            (inbox / rel).unlink()
        else:
            kept[rel] = data
    return kept


def test_gc_after_deleting_half_frees_at_least_40_percent_and_keeps_the_rest(
    vault: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    config, inbox, files = vault
    kept = delete_half(inbox, files)
    assert run_cli(config, "push", env=PW).returncode == 0
    before = data_bytes(config)

    # The default keeps deleted files 30 days: nothing to free yet.
    nothing = gc(config)
    assert nothing["versions_dropped"] == 0 and nothing["objects_deleted"] == 0
    assert data_bytes(config) == before

    set_retention(config, deleted_days=0)
    dry = gc(config, "--dry-run")
    # Each deleted file's content version and its tombstone.
    assert dry["versions_dropped"] == 2 * (len(files) - len(kept))
    assert data_bytes(config) == before  # a dry run changes nothing
    done = gc(config)
    after = data_bytes(config)
    assert done["problems"] == []
    for field in ("versions_dropped", "objects_deleted", "packs_repacked", "batches_rewritten"):
        assert dry[field] == done[field], field  # the dry run said what gc then did
    assert after <= 0.6 * before, (before, after)
    assert done["packs_repacked"] >= 1
    assert abs(done["freed_bytes"] - (before - after)) <= 0.02 * before
    restores(config, tmp_path / "out", kept)
    check = run_cli(config, "check", "--read-data", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr
    ls = run_cli(config, "ls", "--deleted", "--json", env=PW)
    assert {e["path"] for e in json.loads(ls.stdout)} == set(kept)
    again = gc(config)  # nothing left to do
    assert again["objects_deleted"] == 0 and again["versions_dropped"] == 0


def stall_once(method: str, pattern: str, reached: threading.Event, release: threading.Event):
    """A proxy rule: the first ``method`` request whose path matches ``pattern`` says so and
    hangs until released (the test kills the client meanwhile); the rest pass."""
    taken = threading.Lock()

    def rule(request, forward):
        if request.method != method or not re.search(pattern, request.path):
            return None
        if not taken.acquire(blocking=False):
            return None
        reached.set()
        release.wait(timeout=120)
        return Reply(503)

    return rule


@pytest.mark.parametrize(
    "method, pattern, orphans",
    [("PUT", r"/packs/", 1), ("PUT", r"/manifests/batch/", 0), ("DELETE", r"/(chunks|packs)/", 0)],
    ids=["writing-the-new-pack", "rewriting-a-batch", "deleting"],
)
def test_a_gc_killed_at_each_step_is_finished_by_the_next(
    tmp_path: Path, moto_peers, hostile_proxy_factory, method: str, pattern: str, orphans: int
) -> None:
    """Killed while writing a new pack, the half-written pack is an orphan left for the
    grace period; killed later, the next gc deletes all that the first one condemned."""
    reached, release = threading.Event(), threading.Event()
    proxies = [hostile_proxy_factory(endpoint) for endpoint in moto_peers.endpoints]
    config, inbox = init_vault(
        tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
        retention={"deleted_days": 0},
    )  # fmt: skip
    files = tree(inbox, 60)
    assert run_cli(config, "push", env=PW).returncode == 0
    kept = delete_half(inbox, files)
    assert run_cli(config, "push", env=PW).returncode == 0
    before = data_bytes(config)
    for proxy in proxies:
        proxy.add(stall_once(method, pattern, reached, release))
    kill_when(config, ["gc"], PW, reached, release)
    for proxy in proxies:
        proxy.clear()

    done = gc(config)
    assert done["problems"] == []
    restores(config, tmp_path / "out", kept)
    check = run_cli(config, "check", "--read-data", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr
    assert data_bytes(config) <= 0.6 * before
    again = gc(config)  # nothing was left behind
    assert again["objects_deleted"] == 0 and again["versions_dropped"] == 0
    assert again["packs_repacked"] == 0
    assert again["kept_young"]["objects"] <= orphans


def test_versions_keeps_the_newest_n_and_unreferenced_young_objects_stay(
    vault: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    config, inbox, files = vault
    rel = "dir0/f000.bin"
    history = [files[rel]]
    for i in range(3):  # three more versions of one file
        history.append(os.urandom(20_000 + i))
        (inbox / rel).write_bytes(history[-1])
        assert run_cli(config, "push", env=PW).returncode == 0
    files[rel] = history[-1]
    orphan = "test/chunks/ab/ab" + "0" * 62  # an upload whose commit never came
    on_peer(config, "p0", lambda peer: peer.put(orphan, b"x" * 5000))

    set_retention(config, versions=2)
    done = gc(config)
    assert done["versions_dropped"] == 2
    assert done["kept_young"]["objects"] == 1 and orphan in stored(config)
    ls = run_cli(config, "ls", "--versions", "--json", env=PW)
    entry = next(e for e in json.loads(ls.stdout) if e["path"] == rel)
    assert entry["versions"] == 2 and len(entry["history"]) == 2
    restores(config, tmp_path / "out", files)

    set_retention(config, grace_hours=0)
    assert gc(config)["objects_deleted"] == 1
    assert orphan not in stored(config)
    check = run_cli(config, "check", "--read-data", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr


def test_gc_refuses_while_a_peer_cannot_be_listed_and_deletes_nothing(
    vault: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    config, inbox, files = vault
    delete_half(inbox, files)
    assert run_cli(config, "push", env=PW).returncode == 0
    before = stored(config)
    original = config.read_text()
    data = yaml.safe_load(original)
    data["peers"][1]["endpoint"] = "http://127.0.0.1:9"  # nothing listens there
    data["retention"] = {"deleted_days": 0}
    config.write_text(yaml.safe_dump(data))
    result = run_cli(config, "gc", env=PW, timeout=180)
    assert result.returncode != 0
    assert "peer p1 cannot be listed" in result.stderr
    config.write_text(original)
    assert stored(config) == before
