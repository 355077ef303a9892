"""Nothing outside the watched tree is ever read: a directory in the tree swapped for a
symlink (after the event, or after ``push`` resolved its argument) must not make the
agent or ``push`` store a file it points to. Real HTTP S3 peers (moto), the real
Ingestor, the CLI as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.cli.context import CliContext
from chunkvault.ingest import Ingestor
from chunkvault.watcher.scan import scan_tree

PW = {"CHUNKVAULT_PASSPHRASE": "tree passphrase"}
PUBLIC = b"the plan everybody may see\n"
SECRET = b"-----BEGIN PRIVATE KEY----- outside the tree, never to be stored\n"


def history(config: Path) -> dict[str, list[dict]]:
    result = run_cli(config, "ls", "--json", "--deleted", "--versions", env=PW)
    assert result.returncode == 0, result.stderr
    return {row["path"]: row["history"] for row in json.loads(result.stdout)}


def assert_secret_not_stored(config: Path, tmp_path: Path) -> None:
    secret_sha = hashlib.sha256(SECRET).hexdigest()
    versions = [v for entries in history(config).values() for v in entries]
    assert all(v["sha256"] != secret_sha for v in versions), versions
    out = tmp_path / f"restored-{os.urandom(4).hex()}"
    result = run_cli(config, "restore", "--deleted", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    for path in out.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_bytes(), path


def swap_for_symlink(directory: Path, outside: Path) -> None:
    """What an attacker with write access to the tree does between event and read."""
    directory.rename(directory.with_name(directory.name + ".moved-away"))
    directory.symlink_to(outside, target_is_directory=True)


@pytest.fixture
def tree(tmp_path: Path, moto_peers) -> tuple[Path, Path, Path]:
    """(config, inbox, outside): docs/plan.txt is stored; outside/plan.txt holds a secret."""
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    (inbox / "docs").mkdir()
    (inbox / "docs" / "plan.txt").write_bytes(PUBLIC)
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "plan.txt").write_bytes(SECRET)
    (outside / "new.txt").write_bytes(SECRET)
    return config, inbox, outside


def test_the_ingestor_never_reads_through_a_directory_swapped_for_a_symlink(
    tree, tmp_path, monkeypatch
):
    config, inbox, outside = tree
    # The file changed (event noted), then its directory is swapped before the worker reads.
    (inbox / "docs" / "plan.txt").write_bytes(PUBLIC + b"edited\n")
    swap_for_symlink(inbox / "docs", outside)
    monkeypatch.setenv("CHUNKVAULT_PASSPHRASE", PW["CHUNKVAULT_PASSPHRASE"])

    with CliContext(config).vault() as vault:
        ingestor = Ingestor(vault)
        try:
            changed = ingestor.ingest("docs/plan.txt")
            new = ingestor.ingest("docs/new.txt")
            moved = ingestor.move("docs/plan.txt", "docs/new.txt")
        finally:
            ingestor.close()

    assert (changed.action, changed.error) == ("ignored", "not a regular file")
    assert new.action == "ignored"
    assert moved.action != "moved"  # never re-pointed at a path outside the tree
    assert "docs/new.txt" not in history(config)
    assert_secret_not_stored(config, tmp_path)


def test_push_of_a_path_whose_directory_is_swapped_after_it_was_resolved(tree, tmp_path):
    """``push inbox/docs/plan.txt`` resolves its argument, then reads the passphrase (here
    from a FIFO, so the test knows when), then reads the file: swap in between."""
    config, inbox, outside = tree
    fifo = tmp_path / "passphrase.fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")}
    proc = subprocess.Popen(
        [CLI, "--config", str(config), "push", "--passphrase-file", str(fifo),
         str(inbox / "docs" / "plan.txt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        with open(fifo, "w") as writer:  # returns once push opened it: the path is resolved
            swap_for_symlink(inbox / "docs", outside)
            writer.write(PW["CHUNKVAULT_PASSPHRASE"])
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert "Traceback" not in err.decode()
    assert_secret_not_stored(config, tmp_path)


def test_push_and_scans_never_descend_into_symlinked_directories(tree, tmp_path):
    config, inbox, outside = tree
    (inbox / "linked").symlink_to(outside, target_is_directory=True)
    (inbox / "linked-file.txt").symlink_to(outside / "plan.txt")
    (inbox / "real").mkdir()
    (inbox / "real" / "kept.txt").write_bytes(b"kept\n")

    assert sorted(scan_tree(inbox, lambda _rel: False)) == ["docs/plan.txt", "real/kept.txt"]
    assert scan_tree(inbox, lambda _rel: False, "linked") == {}
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    for given in ("linked", "linked/plan.txt"):
        refused = run_cli(config, "push", str(inbox / given), env=PW)
        assert refused.returncode == 1, refused.stderr
        assert "is outside the watched tree" in refused.stderr
        assert "Traceback" not in refused.stderr

    stored = history(config)
    assert sorted(stored) == ["docs/plan.txt", "real/kept.txt"]
    assert_secret_not_stored(config, tmp_path)
