"""`push` over a tree with directories its user cannot read: one warning per directory,
exit 6 (incomplete), nothing inside them marked deleted, counted by `status`; stored once
readable. Root reads every directory: the CLI runs with file permissions applying to it
(see support.unprivileged)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import write_config
from support.moto_peers import unique_bucket
from support.unprivileged import permissions_apply, run_cli_restricted

PW = {"CHUNKVAULT_PASSPHRASE": "unreadable dirs passphrase"}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    if not permissions_apply(tmp_path):
        pytest.fail("cannot run the CLI with file permissions applying to it (prctl refused)")
    yield tmp_path
    for path in tmp_path.rglob("*"):  # give back what the test locked
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli_restricted(config, *args, env=PW)


def ls(home: Path, config: Path) -> dict[str, dict]:
    result = run(config, "ls", "--json", "--deleted")
    assert result.returncode == 0, result.stderr
    return {entry["path"]: entry for entry in json.loads(result.stdout)}


def status(home: Path, config: Path) -> dict:
    result = run(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["extra"]


def test_push_warns_once_per_unreadable_dir_keeps_its_files_and_stores_them_once_readable(
    home, moto_peers
):
    inbox = home / "inbox"
    files = {
        "ok.txt": b"readable\n",
        "private/secret.txt": b"stored while readable\n",
        "private/deep/x.bin": os.urandom(70_000),
        "listonly/y.txt": b"in a dir that can be listed but not entered\n",
        "sealed/z.txt": b"never readable before\n",
    }
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    (inbox / "sealed").chmod(0)
    bucket = unique_bucket()
    config = write_config(home / "cv.yaml", moto_peers.endpoints, bucket,
                          watch={"path": str(inbox)}, api={"enabled": False})  # fmt: skip
    assert run(config, "init").returncode == 0

    first = run(config, "push")
    assert first.returncode == 6, first.stderr
    assert "warning: cannot read directory sealed (permission denied)" in first.stderr
    assert "1 directory could not be read and was skipped" in first.stderr
    assert set(ls(home, config)) == {"ok.txt", "private/secret.txt", "private/deep/x.bin",
                                     "listonly/y.txt"}  # fmt: skip

    # Two more become unreadable: no read+search (private) and no search (listonly, 0444:
    # names can be listed, files cannot be opened or even stat-ed).
    (inbox / "private").chmod(0)
    (inbox / "listonly").chmod(0o444)
    (inbox / "new.txt").write_text("a new readable file\n")
    second = run(config, "push")
    assert second.returncode == 6, second.stderr
    warnings = [line for line in second.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: cannot read directory {d} (permission denied): skipped; what the vault "
        "holds from it is kept"
        for d in ("listonly", "private", "sealed")
    ]
    assert "internal error" not in second.stderr
    assert "error: 3 directories could not be read and were skipped" in second.stderr
    held = ls(home, config)
    assert "new.txt" in held
    for rel in ("private/secret.txt", "private/deep/x.bin", "listonly/y.txt"):
        assert held[rel]["deleted"] is False, f"{rel} was marked deleted"
    report = status(home, config)
    assert report["unreadable_dirs"] == 3
    assert report["unreadable"] == ["listonly", "private", "sealed"]
    text = run(config, "status")
    assert "warning: 3 directories in the tree cannot be read" in text.stderr

    # A path inside an unreadable dir is not gone either.
    scoped = run(config, "push", str(inbox / "private" / "secret.txt"))
    assert scoped.returncode == 6, scoped.stderr
    assert "cannot read directory private " in scoped.stderr
    assert ls(home, config)["private/secret.txt"]["deleted"] is False

    # Readable again: stored, and no longer counted.
    for name in ("private", "listonly", "sealed"):
        (inbox / name).chmod(0o755)
    (inbox / "private" / "secret.txt").write_bytes(b"changed while unreadable\n")
    third = run(config, "push")
    assert third.returncode == 0, third.stderr
    assert "warning" not in third.stderr
    assert status(home, config)["unreadable_dirs"] == 0
    assert "sealed/z.txt" in ls(home, config)

    # Everything restores byte-identical from the peers alone (an empty state dir).
    fresh = write_config(home / "fresh" / "cv.yaml", moto_peers.endpoints, bucket,
                         watch={"path": str(inbox)}, api={"enabled": False})  # fmt: skip
    out = home / "restored"
    restored = run(fresh, "restore", "--to", str(out))
    assert restored.returncode == 0, restored.stderr
    for path in inbox.rglob("*"):
        if path.is_file():
            rel = path.relative_to(inbox)
            assert (out / rel).read_bytes() == path.read_bytes(), rel
