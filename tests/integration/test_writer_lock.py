"""One writer per vault, and no silent gaps (issue 8 item 2): `run`, `push` and the key
commands exclude each other through the lock in the state dir; `ls` and `restore` fail,
naming them, when stored versions cannot be read; an old keyring cannot come back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.crypto.envelope import seal_blob
from chunkvault.crypto.material import MasterKeys
from chunkvault.manifest import KIND, Manifest, new_manifest_name

PW = {"CHUNKVAULT_PASSPHRASE": "lock passphrase"}


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> tuple[Path, Path]:
    return init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW, api={"enabled": False})


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    proc = subprocess.Popen(
        [CLI, "--config", str(config), "run"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lock = config.parent / "state" / "lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = lock.read_text() if lock.exists() else ""
        if text and json.loads(text)["pid"] == proc.pid:
            return proc
        assert proc.poll() is None, "the agent exited"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the agent did not take the lock")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_key_commands_push_repair_and_gc_refuse_while_the_agent_runs(vault):
    config, inbox = vault
    (inbox / "a.txt").write_text("stored by the agent\n")
    agent = start_agent(config)
    try:
        for args in (
            ["key", "rotate-master", "--yes"],
            ["key", "passwd"],
            ["key", "add", "--label", "x"],
            ["push"],
            ["repair"],
            ["gc"],
        ):
            busy = run_cli(config, *args, env=PW | {"CHUNKVAULT_NEW_PASSPHRASE": "new one!!"})
            assert busy.returncode == 11, (args, busy.stderr)
            assert f"in use by PID {agent.pid} (chunkvault run" in busy.stderr
            assert busy.stderr.count("\n") == 1
        # Readers take no lock: restore, ls, check and gc --dry-run work beside the agent.
        assert run_cli(config, "ls", env=PW).returncode == 0
        assert run_cli(config, "check", env=PW).returncode == 0
        assert run_cli(config, "gc", "--dry-run", env=PW).returncode == 0
    finally:
        stop(agent)
    assert agent.returncode == 0
    rotated = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    assert rotated.returncode == 0, rotated.stderr


def test_a_killed_writer_leaves_no_stale_lock(vault):
    config, inbox = vault
    agent = start_agent(config)
    stop(agent, signal.SIGKILL)
    (inbox / "b.txt").write_text("pushed after the agent died\n")
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr


def test_unreadable_versions_make_ls_and_restore_fail_naming_them(vault, tmp_path):
    config, inbox = vault
    for name in ("a.txt", "b.txt"):
        (inbox / name).write_text(f"content of {name}\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    # A version wrapped with a key this keyring does not hold (as files stored by an agent
    # that kept a rotated-away key generation were).
    cfg = load_config(config)
    stranger = MasterKeys.generate(b"\x01" * 16)
    manifest = Manifest("c.txt", 5, 0, 0o100644, "00" * 32)
    name = new_manifest_name(cfg.vault.id, stranger, manifest)
    for peer in build_peers(cfg)[:2]:
        peer.put(name, seal_blob(stranger, KIND, name, manifest.to_json()))
    shutil.rmtree(tmp_path / "state")  # a fresh machine

    listed = run_cli(config, "ls", "--json", env=PW)
    assert listed.returncode == 1
    assert [f["path"] for f in json.loads(listed.stdout)] == ["a.txt", "b.txt"]
    assert "1 stored file version(s) could not be read" in listed.stderr and name in listed.stderr
    restored = run_cli(config, "restore", "--to", str(tmp_path / "out"), env=PW)
    assert restored.returncode == 1 and name in restored.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]


def test_a_keyring_backup_from_before_a_rotation_is_refused(vault):
    config, inbox = vault
    (inbox / "a.txt").write_text("old\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    backup = run_cli(config, "key", "export").stdout
    assert run_cli(config, "key", "rotate-master", "--yes", env=PW).returncode == 0
    imported = run_cli(config, "key", "import", input=backup, env=PW)
    assert imported.returncode == 4, imported.stderr
    assert "older than this vault's data" in imported.stderr
    # And a stale keyring put in place by hand is refused before any data is written.
    (config.parent / "state" / "keyring.json").write_text(backup)
    (inbox / "b.txt").write_text("new\n")
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 4 and "older than this vault's data" in pushed.stderr
