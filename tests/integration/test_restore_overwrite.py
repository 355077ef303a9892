"""`restore --overwrite never|if-changed|always` (issue 9 item 5): a restore over existing
files never destroys a differing one unless asked, and says what it kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "overwrite passphrase"}


@pytest.fixture
def restored(tmp_path: Path, moto_peers) -> tuple[Path, Path]:
    """A vault holding docs/{a,b,c}.txt, restored once into tmp/out."""
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    (inbox / "docs").mkdir()
    for name in "abc":
        (inbox / "docs" / f"{name}.txt").write_text(f"stored {name}\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    out = tmp_path / "out"
    first = run_cli(config, "restore", "--to", str(out), env=PW)
    assert first.returncode == 0, first.stderr
    return config, out


def test_by_default_an_edited_file_is_kept_and_reported(restored):
    config, out = restored
    (out / "docs" / "a.txt").write_text("edited after the restore\n")
    (out / "docs" / "b.txt").unlink()
    again = run_cli(config, "restore", "docs/**", "--to", str(out), env=PW)
    assert again.returncode == 0, again.stderr
    assert (out / "docs" / "a.txt").read_text() == "edited after the restore\n"
    assert (out / "docs" / "b.txt").read_text() == "stored b\n"
    assert "kept: docs/a.txt: exists and differs" in again.stderr
    assert "1 file(s)" in again.stdout and "1 already identical" in again.stdout
    assert "1 kept as they are (--overwrite if-changed replaces them)" in again.stdout


def test_if_changed_replaces_only_what_differs(restored):
    config, out = restored
    (out / "docs" / "a.txt").write_text("edited\n")
    same = out / "docs" / "c.txt"
    inode = same.stat().st_ino
    os.chmod(same, 0o600)
    result = run_cli(config, "restore", "--to", str(out), "--overwrite", "if-changed", env=PW)
    assert result.returncode == 0, result.stderr
    assert (out / "docs" / "a.txt").read_text() == "stored a\n"
    assert same.stat().st_ino == inode  # identical content: not rewritten...
    assert same.stat().st_mode & 0o777 == 0o644  # ...but its mode is restored
    assert "1 file(s)" in result.stdout and "2 already identical" in result.stdout


def test_always_rewrites_every_file(restored):
    config, out = restored
    inodes = {p.name: p.stat().st_ino for p in (out / "docs").iterdir()}
    result = run_cli(config, "restore", "--to", str(out), "--overwrite", "always", env=PW)
    assert result.returncode == 0, result.stderr
    assert "3 file(s)" in result.stdout
    assert all(p.stat().st_ino != inodes[p.name] for p in (out / "docs").iterdir())


def test_never_keeps_a_symlink_and_writes_nothing_through_it(restored, tmp_path):
    config, out = restored
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    (out / "docs" / "a.txt").unlink()
    (out / "docs" / "a.txt").symlink_to(victim)
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert "kept: docs/a.txt: exists and is not a file" in result.stderr
    assert victim.read_text() == "not yours\n" and (out / "docs" / "a.txt").is_symlink()
