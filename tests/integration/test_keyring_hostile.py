"""Hostile and stale keyrings on the peers, and interrupted passphrase changes (issue 8
items 1, 3 and 6): CLI subprocesses over real HTTP S3 peers (moto_server)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config

A = "first passphrase"
LAPTOP = "laptop passphrase"
KEY = "test/keyring"


def env(passphrase: str = A, new: str | None = None) -> dict[str, str]:
    return {"CHUNKVAULT_PASSPHRASE": passphrase} | (
        {"CHUNKVAULT_NEW_PASSPHRASE": new} if new else {}
    )


def peers_of(config: Path):
    return build_peers(load_config(config))


def local_ring(config: Path) -> dict:
    return json.loads((config.parent / "state" / "keyring.json").read_text())


def fresh_machine(config: Path) -> None:
    shutil.rmtree(config.parent / "state", ignore_errors=True)


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> tuple[Path, Path]:
    return init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), env())


def test_an_old_keyring_with_a_raised_revision_does_not_win(vault):
    """The review's attack: one peer serves the pre-rotation keyring (which still holds a
    removed slot) with its revision raised to 1000000, and a fresh machine took it."""
    config, inbox = vault
    assert run_cli(config, "key", "add", "--label", "laptop", env=env(new=LAPTOP)).returncode == 0
    old = json.loads(peers_of(config)[0].get(KEY))
    assert run_cli(config, "key", "remove", "laptop", env=env()).returncode == 0
    rotated = run_cli(config, "key", "rotate-master", "--yes", env=env())
    assert rotated.returncode == 0, rotated.stderr
    honest = local_ring(config)["revision"]
    peers_of(config)[0].put(KEY, json.dumps(old | {"revision": 1_000_000}).encode())

    fresh_machine(config)
    (inbox / "new.txt").write_bytes(b"written after the rotation\n" * 100)
    pushed = run_cli(config, "push", env=env())
    assert pushed.returncode == 0, pushed.stderr
    ring = local_ring(config)
    assert ring["revision"] == honest
    assert [s["label"] for s in ring["slots"]] == ["default"]
    # New data is wrapped with the post-rotation master key...
    for peer in peers_of(config):
        for info in peer.list("test/chunks/"):
            assert peer.stat(info.key).metadata["cv-gen"] == "2"
    # ...and the removed passphrase opens nothing on a fresh machine: it does open the
    # forged copy's slot, whose MAC then fails (exit 4, "failed authentication").
    fresh_machine(config)
    refused = run_cli(config, "ls", env=env(LAPTOP))
    assert refused.returncode == 4 and "failed authentication" in refused.stderr
    assert not (config.parent / "state" / "keyring.json").exists()
    # `key verify` puts the honest keyring back on the lying peer.
    verified = run_cli(config, "key", "verify", env=env())
    assert verified.returncode == 0, verified.stderr
    assert json.loads(peers_of(config)[0].get(KEY))["revision"] == honest


def test_a_wrong_passphrase_on_a_fresh_machine_stores_nothing(vault):
    config, _ = vault
    fresh_machine(config)
    result = run_cli(config, "ls", env=env("not the passphrase"))
    assert result.returncode == 3
    assert not (config.parent / "state" / "keyring.json").exists()


def _infinite_revision(ring: dict) -> bytes:
    return json.dumps(ring).replace(f'"revision": {ring["revision"]}', '"revision": Infinity')\
        .encode()  # fmt: skip


def _costly_kdf(ring: dict) -> bytes:
    slot = ring["slots"][0]
    slot["kdf"]["params"] = {"memory_kib": 4 * 1024 * 1024, "iterations": 64, "lanes": 4}
    return json.dumps(ring | {"revision": ring["revision"] + 5}).encode()


def _many_slots(ring: dict) -> bytes:
    slot = ring["slots"][0]
    slots = [dict(slot, id=f"{i:08x}", label=f"s{i}") for i in range(100)]
    return json.dumps(ring | {"revision": ring["revision"] + 5, "slots": slots}).encode()


MALFORMED = {
    "infinity": _infinite_revision,
    "kdf-4GiB-x64": _costly_kdf,
    "100-slots": _many_slots,
    "nesting": lambda ring: b"[" * 100_000,
    "3MiB": lambda ring: b" " * (3 << 20),  # too big to be a keyring
    "bad-slots": lambda ring: json.dumps(ring | {"slots": "x"}).encode(),
}


def test_a_malformed_keyring_on_one_peer_is_skipped(vault):
    config, inbox = vault
    (inbox / "a.txt").write_text("hello\n")
    assert run_cli(config, "push", env=env()).returncode == 0
    honest = peers_of(config)[0].get(KEY)
    for name, body in MALFORMED.items():
        peers_of(config)[0].put(KEY, body(json.loads(honest)))
        fresh_machine(config)
        started = time.monotonic()
        result = run_cli(config, "ls", "--json", env=env(), timeout=60)
        assert result.returncode == 0, (name, result.stderr)
        assert time.monotonic() - started < 30, name
        assert [f["path"] for f in json.loads(result.stdout)] == ["a.txt"], name
        assert result.stderr.count("keyring on peer p0 ignored") == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr


def test_verify_adopts_a_newer_keyring_and_never_rolls_the_peers_back(tmp_path, vault):
    """Two machines, one vault: a passphrase changed on machine B must not be undone by
    `key verify` on machine A, which still has the older keyring."""
    config_a, _ = vault
    data = yaml.safe_load(config_a.read_text())
    config_b = tmp_path / "b" / "cv.yaml"
    config_b.parent.mkdir()
    shutil.copytree(config_a.parent / "state", config_b.parent / "state")
    data["vault"]["state_dir"] = str(config_b.parent / "state")
    config_b.write_text(yaml.safe_dump(data))
    changed = run_cli(config_b, "key", "passwd", env=env(new="changed on machine b"))
    assert changed.returncode == 0, changed.stderr
    newest = local_ring(config_b)["revision"]

    stale = run_cli(config_a, "key", "verify", env=env())
    assert stale.returncode == 1
    assert "does not open" in stale.stderr
    for peer in peers_of(config_a):
        assert json.loads(peer.get(KEY))["revision"] == newest  # not rolled back

    adopted = run_cli(config_a, "key", "verify", env=env("changed on machine b"))
    assert adopted.returncode == 0, adopted.stderr
    assert local_ring(config_a)["revision"] == newest


def _labels(config: Path) -> list[str]:
    return [s["label"] for s in local_ring(config)["slots"] if "superseded_by" not in s]


def _start_passwd(config: Path, old: str, new: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLI, "--config", str(config), "key", "passwd"],
        env={k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")}
        | env(old, new),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_after_first_save(config: Path, old: str, new: str) -> None:
    """Run `key passwd` and SIGKILL it the moment its first keyring save lands locally."""
    path = config.parent / "state" / "keyring.json"
    before = path.read_bytes()
    proc = _start_passwd(config, old, new)
    deadline = time.monotonic() + 30
    while path.read_bytes() == before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_an_interrupted_passwd_is_finished_by_a_rerun(vault):
    config, _ = vault
    _kill_after_first_save(config, A, "interrupted new one")
    ring = local_ring(config)
    assert _labels(config) == ["default"] and len(ring["slots"]) == 2
    # Both passphrases open the vault in this state: nothing is lost.
    for passphrase in (A, "interrupted new one"):
        assert run_cli(config, "ls", env=env(passphrase)).returncode == 0
    listed = run_cli(config, "key", "list", "--json")
    assert sorted(s["state"][:10] for s in json.loads(listed.stdout)) == ["active", "superseded"]

    rerun = run_cli(config, "key", "passwd", env=env(A, "the final one!"))
    assert rerun.returncode == 0, rerun.stderr
    assert "the old one no longer works" in rerun.stdout
    assert len(local_ring(config)["slots"]) == 1
    for gone in (A, "interrupted new one"):
        assert run_cli(config, "key", "verify", env=env(gone)).returncode == 3
    fresh_machine(config)  # and from the peers' copies too
    for gone in (A, "interrupted new one"):
        assert run_cli(config, "ls", env=env(gone)).returncode == 3
    assert run_cli(config, "ls", env=env("the final one!")).returncode == 0


def test_passwd_killed_at_random_points_never_accumulates_slots(vault):
    config, _ = vault
    current = A
    # Kill points across the command: the KDF, the new slot written, the old one removed.
    for i, delay in enumerate((0.2, 0.6, 1.0, 1.5)):
        new = f"passphrase number {i}"
        proc = _start_passwd(config, current, new)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert len(_labels(config)) == 1 and len(local_ring(config)["slots"]) <= 2
        if (
            run_cli(config, "key", "list").returncode == 0
            and run_cli(config, "ls", env=env(new)).returncode == 0
        ):
            current = new
    done = run_cli(config, "key", "passwd", env=env(current, "at last, done"))
    assert done.returncode == 0, done.stderr
    assert len(local_ring(config)["slots"]) == 1


def test_passwd_says_where_the_old_passphrase_still_works(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(3)]
    config, _ = init_vault(tmp_path, [s.endpoint for s in servers], unique_bucket(), env())
    servers[2].shutdown()
    result = run_cli(config, "key", "passwd", env=env(new="second passphrase"))
    assert result.returncode == 0, result.stderr
    assert "no longer works" not in result.stdout
    assert "the old one still opens the copies on p2" in result.stdout


def test_keyring_json_is_strict_about_what_a_peer_may_send(vault):
    """A forged MAC is refused with a clear error when it is the only copy."""
    config, _ = vault
    for peer in peers_of(config):
        ring = json.loads(peer.get(KEY))
        ring["mac"] = base64.b64encode(b"\0" * 32).decode()
        peer.put(KEY, json.dumps(ring).encode())
    fresh_machine(config)
    result = run_cli(config, "ls", env=env())
    assert result.returncode == 4 and "failed authentication" in result.stderr
    assert not (config.parent / "state" / "keyring.json").exists()


def test_verify_leaves_another_vaults_keyring_alone(vault):
    """A peer holding the keyring of another vault with this vault.id (a misconfigured
    shared bucket) is reported, never overwritten."""
    config, _ = vault
    other = json.loads(peers_of(config)[2].get(KEY)) | {"vault_uuid": "ab" * 16}
    body = json.dumps(other).encode()
    peers_of(config)[2].put(KEY, body)
    result = run_cli(config, "key", "verify", env=env())
    assert result.returncode == 1
    assert "p2 hold the keyring of another vault named 'test'" in result.stderr
    assert peers_of(config)[2].get(KEY) == body
