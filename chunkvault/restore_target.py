"""One file being restored into the target directory: the I/O, none of the scheduling.

The target is someone's directory and may hold planted symlinks: the file's directory is
opened (or made) relative to the target's fd with O_NOFOLLOW, one component at a time and
each directory once per restore (:class:`TargetDirs`), the temp file is created O_EXCL
under a short random name in it, and every change goes through those fds (see ``fsutil``).
Chunks are written at their offsets (``os.pwrite``) in whatever order they arrive; once
all are in, the temp file is checked against the manifest's size and SHA-256 (read back,
or for a file one write filled, hashed from what was written), given its mode and mtime
and renamed over the final name. A process killed at any line leaves at most a
``.cv-restore-*.tmp`` file: never a partial file under a final name.

Durability is the restore's, not each file's: the restore flushes the target's file system
once at its end (``fsutil.sync_filesystem``) before it reports success. An fsync of each
file and of its directory (as rsync, restic and tar, none of them does) cost a 2,000-file
restore about 1 s of its 2.6 s on an empty file system. What a power cut in the middle can
leave under a final name is a file not yet on disk, short or empty: the next restore
finds it differs and says so (``--overwrite if-changed`` rewrites it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from typing import Literal

from chunkvault import names
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import create_temp_in, open_child_dir
from chunkvault.manifest import Manifest

# What to do with a file that already exists at the destination (restic >= 0.17's names).
Overwrite = Literal["never", "if-changed", "always"]
OVERWRITE_CHOICES: tuple[Overwrite, ...] = ("never", "if-changed", "always")
IDENTICAL = "identical"
TEMP_PREFIX = ".cv-restore-"
# Read-back pieces: one buffer per file, below glibc's mmap threshold (1 MiB, pinned by
# ``pipeline``), so it comes from malloc's arenas instead of freshly faulted pages.
_READ_BACK = 256 * 1024


class TargetFile:
    """A temp file next to the final name, filled at offsets, then verified and renamed.

    Thread-safe: chunks may be written from several threads at once; :meth:`finish` runs
    once, after the last write, and :meth:`discard` cleans up a file that will not finish."""

    def __init__(self, manifest: Manifest, dir_fd: int, name: str, pieces: int) -> None:
        self.manifest = manifest
        self.dir_fd = dir_fd
        self.name = name
        # Its mode is set before it is renamed: the umask may take bits off 0600 meanwhile.
        self.fd, self.tmp = create_temp_in(dir_fd, prefix=TEMP_PREFIX, exact_mode=False)
        self._left = pieces
        self._whole_in_one = pieces == 1
        # SHA-256 of the content when one write filled the whole file (most small files):
        # checked against the manifest without reading the file back.
        self._written_sha256: str | None = None
        self._lock = threading.Lock()
        self.error: Exception | None = None  # the first reason this file cannot finish
        self._closed = False

    def write(self, data: bytes | memoryview, offsets: tuple[int, ...]) -> None:
        view = memoryview(data)
        if self._whole_in_one and offsets == (0,) and len(view) == self.manifest.size:
            self._written_sha256 = hashlib.sha256(view).hexdigest()
        for offset in offsets:
            done = 0
            while done < len(view):  # a short write is legal: carry on from where it ended
                done += os.pwrite(self.fd, view[done:], offset + done)

    @property
    def hashed_as_written(self) -> bool:
        """Whether :meth:`finish` has the content's SHA-256 without reading the file back
        (one write filled it): then finishing it is a few quick syscalls."""
        return self._written_sha256 is not None

    def piece_done(self) -> bool:
        """Count one piece as settled (written, or given up on); True for the last one."""
        with self._lock:
            self._left -= 1
            return self._left == 0

    def fail(self, exc: Exception) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc

    def finish(self) -> None:
        """Verify, set mode and mtime, rename into place; the fds are closed after."""
        manifest = self.manifest
        try:
            size = os.fstat(self.fd).st_size
            sha256 = self._written_sha256
            if size == manifest.size and sha256 is None:
                sha256 = _digest_fd(self.fd, size)  # pieces: read back what they made
            if size != manifest.size or sha256 != manifest.sha256:
                raise ChunkvaultError(
                    f"{names.show(manifest.path)}: restored content does not match its "
                    f"manifest ({size} bytes, expected {manifest.size})"
                )
            os.fchmod(self.fd, manifest.mode & 0o7777)
            os.utime(self.fd, ns=(manifest.mtime_ns, manifest.mtime_ns))
            # A symlink at the final name is replaced, never written through.
            os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            self.tmp = ""
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temp file (unless renamed) and close the fds; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp, dir_fd=self.dir_fd)
        finally:
            os.close(self.fd)
            os.close(self.dir_fd)


class TargetDirs:
    """The target's directories a restore has opened, each once: a file's directory is an
    ``os.dup`` of a kept fd instead of an open and a close per component (a restore of
    small files did ~7 such syscalls per file). Also remembers which directories this
    restore made: no file can be in one before the restore puts it there, so the
    ``--overwrite`` check is skipped in them. Thread-safe; :meth:`close` at the end.

    Only the ``limit`` most recently used are kept open (files come in the order they were
    pushed, so mostly directory by directory); one evicted is opened again, still one
    component at a time from its parent."""

    def __init__(self, target_fd: int, limit: int = 128) -> None:
        self._target_fd = target_fd
        self._limit = limit
        self._open: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._made: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def open(self, parts: list[str]) -> tuple[int, bool]:
        """An fd of its own for the directory ``parts`` below the target (made if missing),
        and whether this restore made it. Errors as :func:`fsutil.open_subdir`."""
        key = tuple(parts)
        with self._lock:
            kept = self._kept(key)
            if kept is not None:
                return kept
        if not key:
            return os.dup(self._target_fd), False
        parent, _ = self.open(parts[:-1])
        try:
            fd, made = open_child_dir(parent, parts[-1], "/".join(parts), create=True)
        finally:
            os.close(parent)
        with self._lock:
            if made:
                self._made.add(key)
            kept = self._kept(key)
            if kept is not None:  # another thread opened it meanwhile: keep one
                os.close(fd)
                return kept
            self._open[key] = fd
            if len(self._open) > self._limit:
                os.close(self._open.popitem(last=False)[1])
            return os.dup(fd), key in self._made

    def _kept(self, key: tuple[str, ...]) -> tuple[int, bool] | None:
        fd = self._open.get(key)
        if fd is None:
            return None
        self._open.move_to_end(key)
        return os.dup(fd), key in self._made

    def close(self) -> None:
        with self._lock:
            while self._open:
                os.close(self._open.popitem()[1])


def open_target(
    manifest: Manifest, dirs: TargetDirs, parts: list[str], overwrite: Overwrite, pieces: int
) -> TargetFile | str:
    """The file's :class:`TargetFile`, or why the file already there stays (``--overwrite``):
    :data:`IDENTICAL`, or how it differs."""
    dir_fd, made = dirs.open(parts[:-1])
    try:
        kept = None if made else keep_existing(manifest, dir_fd, parts[-1], overwrite)
        if kept is not None:
            os.close(dir_fd)
            return kept
        return TargetFile(manifest, dir_fd, parts[-1], pieces)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(dir_fd)
        raise


def keep_existing(manifest: Manifest, dir_fd: int, name: str, overwrite: Overwrite) -> str | None:
    """What ``--overwrite`` says about a file already at ``name``: None to write it, else
    why it stays (:data:`IDENTICAL`, or how it differs)."""
    if overwrite == "always":
        return None
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None if overwrite == "if-changed" else "exists and is not a file"
    if st.st_size == manifest.size and _sha256_in(dir_fd, name) == manifest.sha256:
        if overwrite == "if-changed":  # same content: only its metadata to fix
            _set_metadata(dir_fd, name, manifest)
        return IDENTICAL
    return None if overwrite == "if-changed" else "exists and differs"


def _digest_fd(fd: int, size: int) -> str:
    """SHA-256 of the first ``size`` bytes of ``fd``, read back (from the page cache) into
    one reused buffer."""
    digest = hashlib.sha256()
    # No bigger than the file: most restored files are small, and zeroing 256 KiB for an
    # 8 KiB file cost more than hashing it.
    block = memoryview(bytearray(max(1, min(size, _READ_BACK))))
    offset = 0
    while offset < size:
        got = os.preadv(fd, [block[: min(len(block), size - offset)]], offset)
        if not got:
            break
        digest.update(block[:got])
        offset += got
    return digest.hexdigest()


def _sha256_in(dir_fd: int, name: str) -> str | None:
    """SHA-256 of the regular file ``name`` in ``dir_fd`` (never through a symlink), or
    None if it cannot be read."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return hashlib.file_digest(f, "sha256").hexdigest()


def _set_metadata(dir_fd: int, name: str, manifest: Manifest) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        os.fchmod(fd, manifest.mode & 0o7777)
        os.utime(fd, ns=(manifest.mtime_ns, manifest.mtime_ns))
    finally:
        os.close(fd)
