"""The restore target's directories (chunkvault.restore_target.TargetDirs): each opened
once per restore and handed out as fds of their own, never through a symlink, made when
missing, remembered as made by this restore (no file can be in one before the restore puts
it there, so the --overwrite check is skipped there), reopened after eviction."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from chunkvault.fsutil import SymlinkInPath
from chunkvault.manifest import Manifest
from chunkvault.restore_target import IDENTICAL, TargetDirs, TargetFile, open_target


def dirs_for(root: Path, limit: int = 128) -> TargetDirs:
    return TargetDirs(os.open(root, os.O_RDONLY | os.O_DIRECTORY), limit)


def write_through(fd: int, name: str) -> None:
    """A file made through ``fd`` (which is closed): shows where the fd points."""
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd)
        os.close(out)
    finally:
        os.close(fd)


def test_missing_directories_are_made_and_said_to_be_made(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    dirs = dirs_for(tmp_path)
    fd, made = dirs.open(["old"])
    write_through(fd, "a")
    assert not made
    fd, made = dirs.open(["old", "new", "deeper"])
    write_through(fd, "b")
    assert made
    fd, made = dirs.open(["old", "new"])  # made by this restore, one level up
    write_through(fd, "c")
    assert made
    dirs.close()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "old", "old/a", "old/new", "old/new/c", "old/new/deeper", "old/new/deeper/b",
    ]  # fmt: skip


def test_a_symlinked_component_is_refused_even_once_its_parent_is_kept(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "a" / "link").symlink_to(outside)
    dirs = dirs_for(tmp_path)
    fd, _ = dirs.open(["a"])
    os.close(fd)
    with pytest.raises(SymlinkInPath):
        dirs.open(["a", "link", "below"])
    assert list(outside.iterdir()) == []
    dirs.close()


def test_each_directory_is_opened_once_and_evicted_ones_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    import chunkvault.restore_target as restore_target

    real = restore_target.open_child_dir

    def counting(fd: int, name: str, rel: str, create: bool = False, mode: int = 0o777):
        opened.append(rel)
        return real(fd, name, rel, create, mode)

    monkeypatch.setattr(restore_target, "open_child_dir", counting)
    dirs = dirs_for(tmp_path, limit=2)
    for _ in range(3):
        for parts in (["x"], ["x", "y"]):
            fd, _ = dirs.open(parts)
            os.close(fd)
    assert opened == ["x", "x/y"]
    fd, _ = dirs.open(["z"])  # evicts "x", the least recently used
    os.close(fd)
    fd, made = dirs.open(["x"])
    write_through(fd, "again")
    assert opened == ["x", "x/y", "z", "x"]
    assert made  # still known as made by this restore
    assert (tmp_path / "x" / "again").exists()
    dirs.close()


def test_threads_opening_one_new_directory_share_it(tmp_path: Path) -> None:
    dirs = dirs_for(tmp_path)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def opener(i: int) -> None:
        barrier.wait()
        fd, made = dirs.open(["same", "dir"])
        write_through(fd, f"f{i}")
        results.append(made)

    threads = [threading.Thread(target=opener, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in (tmp_path / "same" / "dir").iterdir()) == [
        "f0", "f1", "f2", "f3",
    ]  # fmt: skip
    assert any(results)
    dirs.close()


def manifest(path: str, content: bytes) -> Manifest:
    return Manifest(path=path, size=len(content), mtime_ns=10**18, mode=0o100644,
                    sha256=hashlib.sha256(content).hexdigest())  # fmt: skip


def test_an_existing_file_is_checked_only_in_a_directory_that_was_there(tmp_path: Path) -> None:
    content = b"same content"
    (tmp_path / "there").mkdir()
    (tmp_path / "there" / "f").write_bytes(content)
    dirs = dirs_for(tmp_path)
    assert open_target(manifest("there/f", content), dirs, ["there", "f"], "never", 1) == IDENTICAL
    job = open_target(manifest("new/f", content), dirs, ["new", "f"], "never", 1)
    assert isinstance(job, TargetFile)
    job.write(content, (0,))
    job.finish()
    assert (tmp_path / "new" / "f").read_bytes() == content
    dirs.close()
