"""fsutil: private state whatever the umask, and tree walks that never follow a symlink."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkvault.fsutil import (
    SymlinkInPath,
    atomic_write,
    create_temp_in,
    ensure_private_dir,
    lstat_in_tree,
    open_dir,
    open_private_file,
    open_regular_in_tree,
    open_subdir,
    tighten_private_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o777])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def root_fd(tmp_path: Path) -> Iterator[int]:
    fd = open_dir(tmp_path)
    yield fd
    os.close(fd)


def test_private_dirs_and_files_are_exact_whatever_the_umask(tmp_path, umask):
    state = ensure_private_dir(tmp_path / "a" / "b" / "state")
    atomic_write(tmp_path / "x" / "y" / "keyring.json", b"{}")
    os.close(open_private_file(state / "lock"))
    for directory in ("a", "a/b", "a/b/state", "x", "x/y"):
        assert mode(tmp_path / directory) == 0o700, directory
    assert mode(tmp_path / "x" / "y" / "keyring.json") == 0o600
    assert mode(state / "lock") == 0o600


def test_existing_loose_state_is_tightened_and_logged(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "catalog.db").write_bytes(b"")
    os.chmod(state / "catalog.db", 0o644)
    with caplog.at_level(logging.INFO, logger="chunkvault.fsutil"):
        ensure_private_dir(state)
        tighten_private_file(state / "catalog.db")
        tighten_private_file(state / "missing")  # nothing there: nothing to do
    assert (mode(state), mode(state / "catalog.db")) == (0o700, 0o600)
    assert f"{state} was mode 755 (readable by other users): now 700" in caplog.text


def test_tightening_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"v")
    os.chmod(victim, 0o644)
    (tmp_path / "link").symlink_to(victim)
    tighten_private_file(tmp_path / "link")
    with pytest.raises(OSError):
        open_private_file(tmp_path / "link")
    assert mode(victim) == 0o644


def test_open_subdir_names_the_symlinked_component(tmp_path, root_fd):
    (tmp_path / "a" / "real").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "real")
    (tmp_path / "a" / "file").write_bytes(b"")
    os.close(open_subdir(root_fd, ["a", "real"]))
    with pytest.raises(SymlinkInPath) as caught:
        open_subdir(root_fd, ["a", "link", "below"], create=True)
    assert caught.value.filename == "a/link"
    assert not (tmp_path / "a" / "real" / "below").exists()
    with pytest.raises(NotADirectoryError):
        open_subdir(root_fd, ["a", "file", "below"], create=True)
    with pytest.raises(FileNotFoundError):
        open_subdir(root_fd, ["a", "missing"])
    os.close(open_subdir(root_fd, ["a", "new", "deeper"], create=True))
    assert (tmp_path / "a" / "new" / "deeper").is_dir()


def test_only_regular_files_in_the_tree_are_opened(tmp_path, root_fd):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f.txt").write_bytes(b"outside")
    (tmp_path / "linkdir").symlink_to(tmp_path / "outside")
    (tmp_path / "d" / "link.txt").symlink_to(tmp_path / "d" / "f.txt")
    os.mkfifo(tmp_path / "d" / "fifo")  # opening it for reading would block forever

    fd = open_regular_in_tree(root_fd, "d/f.txt")
    assert fd is not None
    with os.fdopen(fd, "rb") as f:
        assert f.read() == b"inside"
    for rel in ("linkdir/f.txt", "d/link.txt", "d/fifo", "d"):
        assert open_regular_in_tree(root_fd, rel) is None, rel
    with pytest.raises(FileNotFoundError):
        open_regular_in_tree(root_fd, "d/gone.txt")
    with pytest.raises(NotADirectoryError):
        open_regular_in_tree(root_fd, "d/f.txt/below")
    with pytest.raises(SymlinkInPath):
        lstat_in_tree(root_fd, "linkdir/f.txt")
    assert stat.S_ISLNK(lstat_in_tree(root_fd, "d/link.txt").st_mode)


def test_temp_files_are_new_private_and_short(tmp_path, root_fd, umask):
    fd, name = create_temp_in(root_fd, prefix=".cv-restore-")
    os.close(fd)
    assert name.startswith(".cv-restore-") and len(name) < 40
    assert mode(tmp_path / name) == 0o600
    names = {create_temp_in(root_fd)[1] for _ in range(20)}
    assert len(names) == 20
