"""FilesystemPeer specifics: layout, crash windows, copied trees, errno classification."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from chunkvault.backends import (
    FilesystemPeer,
    MalformedReply,
    NotFound,
    PermanentError,
    TransientError,
)
from chunkvault.backends import filesystem as fs_module
from chunkvault.backends.filesystem import classify_os_error


@pytest.fixture
def peer(tmp_path: Path) -> FilesystemPeer:
    peer = FilesystemPeer("usb", tmp_path / "root")
    assert peer.create_container() is True
    return peer


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_body_file_and_sidecar_only(peer: FilesystemPeer) -> None:
    info = peer.put("v/chunks/ab/abcd", b"body", {"gen": "1"})
    peer.put("v/chunks/ab/abcd", b"body 2", {"gen": "2"})
    assert (peer.root / "v/chunks/ab/abcd").read_bytes() == b"body 2"
    assert files_under(peer.root) == ["v/chunks/ab/.meta-abcd.json", "v/chunks/ab/abcd"]
    assert info.etag == hashlib.sha256(b"body").hexdigest()
    assert peer.stat("v/chunks/ab/abcd").etag == hashlib.sha256(b"body 2").hexdigest()


def test_missing_root_is_permanent_and_never_recreated(tmp_path: Path) -> None:
    peer = FilesystemPeer("usb", tmp_path / "unmounted")
    calls: list[Callable[[], object]] = [
        lambda: peer.put("a/b", b"x"),
        lambda: peer.get("a/b"),
        lambda: peer.stat("a/b"),
        lambda: list(peer.list()),
        lambda: peer.delete("a/b"),
        lambda: peer.replace_metadata("a/b", {}),
    ]
    for call in calls:
        with pytest.raises(PermanentError, match="peers init"):
            call()
    assert not peer.root.exists()


def test_crash_between_sidecar_and_body_keeps_old_pair(
    peer: FilesystemPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer.put("k", b"old body", {"dek": "old"})
    real_replace = os.replace

    def crash_on_body(src: str, dst: str) -> None:
        if dst.endswith("/k"):  # the sidecar went through; the body rename "crashes"
            raise OSError(errno.EIO, "simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(fs_module.os, "replace", crash_on_body)
    with pytest.raises(TransientError):
        peer.put("k", b"new body!", {"dek": "new"})
    monkeypatch.undo()
    st = peer.stat("k")  # the sidecar now describes both bodies; the old one is on disk
    assert (peer.get("k"), dict(st.metadata)) == (b"old body", {"dek": "old"})
    assert st.etag == hashlib.sha256(b"old body").hexdigest()
    assert files_under(peer.root) == [".meta-k.json", "k"]  # temp file cleaned up
    peer.put("k", b"new body!", {"dek": "new"})
    assert peer.stat("k").metadata == {"dek": "new"}


def test_copied_tree_keeps_metadata(peer: FilesystemPeer, tmp_path: Path) -> None:
    peer.put("v/a", b"alpha", {"gen": "1"})
    peer.put("v/a", b"alpha v2", {"gen": "2"})
    shutil.copytree(peer.root, tmp_path / "copy")  # new inodes: matched by content instead
    copy = FilesystemPeer("copy", tmp_path / "copy")
    st = copy.stat("v/a")
    assert (dict(st.metadata), st.etag) == ({"gen": "2"}, hashlib.sha256(b"alpha v2").hexdigest())
    (copy.root / "v/.meta-a.json").unlink()  # no sidecar at all: body still served
    assert copy.stat("v/a").metadata == {} and copy.get("v/a") == b"alpha v2"


def test_torn_sidecar_is_ignored(peer: FilesystemPeer) -> None:
    peer.put("k", b"x", {"a": "b"})
    (peer.root / ".meta-k.json").write_text('{"entries": [')
    assert peer.stat("k").metadata == {}


def test_key_and_key_prefix_conflict(peer: FilesystemPeer) -> None:
    peer.put("a", b"file")
    with pytest.raises(PermanentError):
        peer.put("a/b", b"x")
    with pytest.raises(NotFound):
        peer.get("a/b")
    with pytest.raises(NotFound):
        peer.stat("a/b")
    peer.put("d/e", b"x")
    with pytest.raises(NotFound):
        peer.get("d")  # a directory is not an object
    with pytest.raises(PermanentError):
        peer.put("d", b"x")
    peer.delete("d")  # nothing there: fine
    assert [i.key for i in peer.list()] == ["a", "d/e"]


def test_create_container_over_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermanentError):
        FilesystemPeer("usb", tmp_path / "file").create_container()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOENT, NotFound),
        (errno.EACCES, PermanentError),
        (errno.EPERM, PermanentError),
        (errno.EROFS, PermanentError),
        (errno.ENOSPC, PermanentError),
        (errno.EDQUOT, PermanentError),
        (errno.EIO, TransientError),
        (errno.ESTALE, TransientError),
        (errno.ETIMEDOUT, TransientError),
    ],
)
def test_errno_classification(code: int, expected: type) -> None:
    err = classify_os_error(OSError(code, os.strerror(code)), "usb", "put k")
    assert type(err) is expected and err.message.startswith("put k: ")


def test_disk_full_on_put(peer: FilesystemPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(directory: str, data: bytes) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs_module, "write_temp_durably", full)
    with pytest.raises(PermanentError, match="free space"):
        peer.put("k", b"x")
    assert files_under(peer.root) == []


def test_ranged_read_of_a_file_truncated_while_read_is_malformed(
    peer: FilesystemPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer.put("v/packs/p", bytes(range(256)) * 40)
    real_preadv = os.preadv

    def truncated_first(fd: int, buffers: list, offset: int) -> int:
        os.truncate(peer.root / "v/packs/p", 3000)  # another program, after the fstat
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", truncated_first)
    buf = bytearray(b"\x5a" * 2100)
    with pytest.raises(MalformedReply, match="ends 1000 bytes before the end of the range"):
        peer.get_range_into("v/packs/p", memoryview(buf), 2000, 2000)
    assert buf[:1000] == (bytes(range(256)) * 40)[2000:3000] and buf[2000:] == b"\x5a" * 100


def test_ranged_read_io_errors_are_classified(
    peer: FilesystemPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer.put("v/packs/p", b"x" * 100)

    def eio(fd: int, buffers: list, offset: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "preadv", eio)
    with pytest.raises(TransientError, match="get v/packs/p bytes 10-19"):
        peer.get_range_into("v/packs/p", memoryview(bytearray(10)), 10, 10)


def test_ranged_read_of_a_fifo_or_directory_is_not_found(peer: FilesystemPeer) -> None:
    (peer.root / "v/packs").mkdir(parents=True)
    os.mkfifo(peer.root / "v/packs/fifo")  # must not hang the open
    (peer.root / "v/packs/dir").mkdir()
    for key in ("v/packs/fifo", "v/packs/dir", "v/packs/fifo/x"):
        with pytest.raises(NotFound):
            peer.get_range_into(key, memoryview(bytearray(10)), 0, 10)
