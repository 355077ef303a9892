"""`push PATH...` (issue 9 item 7): paths relative to the current directory or to the tree
(as `ls` shows them); a path that is nowhere is an error, not "nothing to do"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "push paths passphrase"}


@pytest.fixture
def tree(tmp_path: Path, moto_peers) -> tuple[Path, Path]:
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    (inbox / "docs").mkdir()
    (inbox / "docs" / "usage.md").write_text("how to\n")
    (inbox / "other.txt").write_text("not pushed by a scoped push\n")
    return config, inbox


def stored(config: Path, *flags: str) -> list[str]:
    result = run_cli(config, "ls", "--json", *flags, env=PW)
    assert result.returncode == 0, result.stderr
    return [f["path"] for f in json.loads(result.stdout)]


def test_a_path_relative_to_the_tree_works_from_anywhere(tree, tmp_path):
    config, _ = tree
    # From the directory above the tree, as the README's tour is run.
    result = run_cli(config, "push", "docs/usage.md", env=PW, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored(config) == ["docs/usage.md"]
    # Relative to the current directory still works, as a shell means it.
    result = run_cli(config, "push", "inbox/other.txt", env=PW, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored(config) == ["docs/usage.md", "other.txt"]


def test_a_path_that_is_nowhere_is_an_error(tree, tmp_path):
    config, _ = tree
    for given in ("inbox/nonexistent.txt", "nonexistent.txt", "docs/nope"):
        result = run_cli(config, "push", given, env=PW, cwd=tmp_path)
        assert result.returncode == 1, (given, result.stdout)
        assert f"{given} does not exist in the watched tree" in result.stderr
        assert result.stderr.count("\n") == 1
    outside = run_cli(config, "push", str(tmp_path / "cv.yaml"), env=PW, cwd=tmp_path)
    assert outside.returncode == 1 and "outside the watched tree" in outside.stderr
    assert stored(config) == []


def test_a_deleted_path_the_vault_holds_pushes_its_deletion(tree, tmp_path):
    config, inbox = tree
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "docs" / "usage.md").unlink()
    result = run_cli(config, "push", "docs/usage.md", env=PW, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 deleted" in result.stdout
    assert stored(config) == ["other.txt"]
    assert "docs/usage.md" in stored(config, "--deleted")
