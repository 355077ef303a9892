"""A directory as a peer: a local disk, a USB drive, a NAS mount.

Layout: the object ``a/b/c`` is the file ``<root>/a/b/c`` holding exactly its body, so the
tree can be copied or inspected with ordinary tools. Its metadata is the sidecar
``<root>/a/b/.meta-c.json``; temporary files are ``.tmp-*``. Key segments never start with
'.', so neither can collide with an object, and listings skip every dot-name.

Crash safety. Data and sidecar are two files, so one rename cannot switch both. A put:

1. writes the body to a temp file and fsyncs it;
2. atomically replaces the sidecar with one describing BOTH the new body and the current
   one (each entry bound to its data file by inode number, which a rename preserves),
   then fsyncs the directory;
3. renames the temp file over the object and fsyncs the directory.

Whatever instant a crash hits, the object file is the old or the new body and the sidecar
has the entry for it: a body is never shown with another body's metadata (that would pair
a chunk with the wrong wrapped key). If inodes changed because the tree was copied
elsewhere, stat falls back to matching the SHA-256 ETag of the body.

Concurrency: operations on one key are serialized by a striped in-process lock. One
process writes a given root (the agent); other readers are fine.

Errors: a missing root is PermanentError ("run `chunkvault peers init`"), never silently
recreated (an unmounted disk would otherwise fill the mount point). ENOSPC/EDQUOT are
PermanentError: retrying in a second will not free space, and the disk still serves reads,
so it must not be marked down; placement moves the write to the next peer. Network
filesystem hiccups (EIO, ESTALE, ETIMEDOUT...) are TransientError.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from chunkvault.backends.base import (
    DEFAULT_MAX_GET,
    MAX_LISTING,
    Buffer,
    MalformedReply,
    NotFound,
    ObjectInfo,
    Peer,
    PeerError,
    PermanentError,
    TransientError,
    validate_buffer,
    validate_key,
    validate_max_size,
    validate_metadata,
    validate_prefix,
    validate_range,
)
from chunkvault.backends.listing import checked_listing
from chunkvault.fsutil import fsync_dir, write_temp_durably

INIT_HINT = "run `chunkvault peers init`"
_TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE,
     errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ECONNRESET,
     errno.ECONNREFUSED, errno.ENETDOWN, errno.ENETUNREACH, errno.ENOLCK}
)  # fmt: skip
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_STRIPES = 64


def classify_os_error(exc: OSError, peer: str, action: str) -> PeerError:
    """The one place an OSError becomes NotFound, PermanentError or TransientError."""
    detail = f"{action}: {exc.strerror or exc}"
    if exc.errno == errno.ENOENT:
        return NotFound(peer, detail)
    if exc.errno in (errno.ENOTDIR, errno.EISDIR):  # key "a" vs key "a/b": one is a directory
        return PermanentError(peer, f"{detail} (a filesystem peer cannot hold keys k and k/x)")
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientError(peer, detail)
    if exc.errno in _FULL_ERRNOS:
        return PermanentError(peer, f"{detail}; free space on the disk")
    return PermanentError(peer, detail)  # EACCES, EPERM, EROFS, ENAMETOOLONG, ...


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class FilesystemPeer(Peer):
    """Objects as files under ``root``. Thread-safe."""

    kind = "filesystem"
    max_listing = MAX_LISTING  # per instance so that tests can lower it

    def __init__(self, name: str, root: Path | str) -> None:
        self.name = name
        self.root = Path(root)
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    @property
    def location(self) -> str:
        return str(self.root)

    # -- paths and small helpers ------------------------------------------------------------

    def _paths(self, key: str) -> tuple[str, str, str]:
        """(directory, object path, sidecar path) of ``key``."""
        directory, _, name = os.path.join(self.root, key).rpartition("/")
        return directory, f"{directory}/{name}", f"{directory}/.meta-{name}.json"

    def _lock(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % _STRIPES]

    def _require_root(self, action: str) -> None:
        if not self.root.is_dir():
            raise PermanentError(
                self.name, f"{action}: directory {self.root} does not exist; {INIT_HINT}"
            )

    def _error(self, exc: OSError, action: str) -> PeerError:
        if exc.errno == errno.ENOENT:
            self._require_root(action)  # a vanished root is not a missing object
        return classify_os_error(exc, self.name, action)

    def _ensure_dir(self, directory: str) -> None:
        """mkdir -p below the root, fsyncing each new directory's parent."""
        missing = []
        path = Path(directory)
        while not path.is_dir() and path != self.root:
            missing.append(path)
            path = path.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            fsync_dir(str(path.parent))

    def _entries(self, sidecar: str) -> list[dict[str, Any]]:
        try:
            with open(sidecar, "rb") as f:
                return list(json.load(f)["entries"])
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError):  # a torn or foreign file: ignore it
            return []

    def _describe(self, path: str, sidecar: str, st: os.stat_result) -> dict[str, Any]:
        """The sidecar entry of the body at ``path`` (whose stat is ``st``)."""
        entries = self._entries(sidecar)
        for entry in entries:
            if entry.get("ino") == st.st_ino and entry.get("size") == st.st_size:
                return entry
        etag = _sha256_file(path)  # copied tree (new inodes) or no sidecar: match by content
        for entry in entries:
            if entry.get("etag") == etag:
                return {**entry, "ino": st.st_ino}
        return {"ino": st.st_ino, "size": st.st_size, "etag": etag, "metadata": {}}

    def _write_sidecar(self, directory: str, sidecar: str, entries: list[dict[str, Any]]) -> None:
        data = json.dumps({"v": 1, "entries": entries}, sort_keys=True).encode()
        tmp, _ = write_temp_durably(directory, data)
        os.replace(tmp, sidecar)

    def _stat_object(self, path: str, action: str) -> os.stat_result:
        try:
            st = os.stat(path)
        except NotADirectoryError:  # a parent is an object: "a/b" when "a" is a file
            raise NotFound(self.name, f"{action}: no such object") from None
        if not stat.S_ISREG(st.st_mode):  # a directory is not an object
            raise NotFound(self.name, f"{action}: no such object")
        return st

    # -- the Peer contract ------------------------------------------------------------------

    def create_container(self) -> bool:
        try:
            self.root.mkdir(parents=True)
        except FileExistsError:
            if self.root.is_dir():
                return False
            raise PermanentError(self.name, f"{self.root} exists and is not a directory") from None
        except OSError as exc:
            raise classify_os_error(exc, self.name, f"create {self.root}") from exc
        fsync_dir(str(self.root.parent))
        return True

    def put(self, key: str, body: Buffer, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        action = f"put {key}"
        self._require_root(action)
        directory, path, sidecar = self._paths(key)
        etag = hashlib.sha256(body).hexdigest()
        try:
            self._ensure_dir(directory)
            with self._lock(key):
                tmp, st = write_temp_durably(directory, body)
                try:
                    new = {"ino": st.st_ino, "size": len(body), "etag": etag, "metadata": meta}
                    entries = [new]
                    # Keep describing the current body until the rename replaces it.
                    with contextlib.suppress(FileNotFoundError, NotFound):
                        entries.append(self._describe(path, sidecar, self._stat_object(path, "")))
                    self._write_sidecar(directory, sidecar, entries)
                    fsync_dir(directory)  # the sidecar is durable before the body switches
                    os.replace(tmp, path)
                except BaseException:
                    os.unlink(tmp)
                    raise
                fsync_dir(directory)
        except OSError as exc:
            raise self._error(exc, action) from exc
        return ObjectInfo(key, len(body), etag, meta, st.st_mtime)

    def get(self, key: str, max_size: int = DEFAULT_MAX_GET) -> bytes:
        validate_key(key)
        validate_max_size(max_size)
        action = f"get {key}"
        with self._object_file(key, max_size, action) as f:
            body = f.read(max_size + 1)  # the file may grow after the fstat
        if len(body) > max_size:
            raise MalformedReply(self.name, f"{action}: longer than the {max_size} bytes expected")
        return body

    def get_into(self, key: str, buf: memoryview, max_size: int) -> int:
        validate_key(key)
        view = validate_buffer(buf, max_size)[:max_size]
        action = f"get {key}"
        with self._object_file(key, max_size, action) as f:
            done = 0
            while done < max_size and (got := f.readinto(view[done:])):
                done += got
            grown = done == max_size and f.read(1)  # the file may grow after the fstat
        if grown:
            raise MalformedReply(self.name, f"{action}: longer than the {max_size} bytes expected")
        return done

    def get_range_into(self, key: str, buf: memoryview, offset: int, length: int) -> None:
        validate_key(key)
        view = validate_range(buf, offset, length)
        end = offset + length
        action = f"get {key} bytes {offset}-{end - 1}"
        with self._object_file(key, None, action, min_size=end) as f:
            fd, done = f.fileno(), 0
            # preadv reads straight into the caller's buffer, never past the range.
            while done < length and (got := os.preadv(fd, [view[done:]], offset + done)):
                done += got
        if done < length:  # truncated by another program after the fstat
            short = f"object ends {length - done} bytes before the end of the range"
            raise MalformedReply(self.name, f"{action}: {short}")

    @contextlib.contextmanager
    def _object_file(
        self, key: str, max_size: int | None, action: str, *, min_size: int = 0
    ) -> Iterator[IO[bytes]]:
        """The object's file, open for reading, if it is a regular file of at most
        ``max_size`` (None: any) and at least ``min_size`` bytes; an OSError while it is
        read is classified like one opening it."""
        _, path, _ = self._paths(key)
        try:
            # O_NONBLOCK: a FIFO planted at the object's path must not hang the open.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (IsADirectoryError, NotADirectoryError):
            raise NotFound(self.name, f"{action}: no such object") from None
        except OSError as exc:
            raise self._error(exc, action) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a directory or a planted FIFO/device
                raise NotFound(self.name, f"{action}: no such object")
            if max_size is not None and st.st_size > max_size:
                too_big = f"{st.st_size} bytes, more than the {max_size} expected"
                raise MalformedReply(self.name, f"{action}: {too_big}")
            if st.st_size < min_size:
                short = f"object of {st.st_size} bytes ends before the range"
                raise MalformedReply(self.name, f"{action}: {short}")
            with open(fd, "rb", closefd=False) as f:
                yield f
        except OSError as exc:
            raise self._error(exc, action) from exc
        finally:
            os.close(fd)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        action = f"stat {key}"
        _, path, sidecar = self._paths(key)
        try:
            with self._lock(key):
                st = self._stat_object(path, action)
                entry = self._describe(path, sidecar, st)
        except OSError as exc:
            raise self._error(exc, action) from exc
        return ObjectInfo(key, st.st_size, entry["etag"], dict(entry["metadata"]), st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return checked_listing(self.name, prefix, self._list(prefix), self.max_listing)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # ETags are not filled (it would cost a sidecar read per object); use stat.
        action = f"list {prefix!r}"
        self._require_root(action)
        try:
            yield from self._walk(str(self.root), "", prefix)
        except OSError as exc:
            raise self._error(exc, action) from exc

    def _walk(self, directory: str, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        # Key order is string order of whole keys; sorting a directory by name + "/" for
        # subdirectories makes the depth-first walk produce it ("a-c" < "a/b" < "a0").
        found = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        sub = f"{rel}{entry.name}/"
                        if sub.startswith(prefix) or prefix.startswith(sub):
                            found.append((sub, entry, True))
                    elif entry.is_file(follow_symlinks=False):
                        key = rel + entry.name
                        if key.startswith(prefix):
                            found.append((key, entry, False))
        except FileNotFoundError:
            if directory == str(self.root):
                raise
            return  # a subdirectory removed while we walk
        found.sort(key=lambda item: item[0])
        for key, entry, is_dir in found:
            if is_dir:
                yield from self._walk(entry.path, key, prefix)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while we walk
            yield ObjectInfo(key, st.st_size, modified=st.st_mtime)

    def delete(self, key: str) -> None:
        validate_key(key)
        action = f"delete {key}"
        directory, path, sidecar = self._paths(key)
        try:
            with self._lock(key):
                # Body first: a crash in between leaves an orphan sidecar (invisible and
                # replaced by the next put), never a body without its metadata.
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    self._require_root(action)
                    return
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sidecar)
                fsync_dir(directory)
        except OSError as exc:
            raise self._error(exc, action) from exc

    def replace_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        action = f"replace metadata of {key}"
        directory, path, sidecar = self._paths(key)
        try:
            with self._lock(key):
                st = self._stat_object(path, action)
                entry = {**self._describe(path, sidecar, st), "metadata": meta}
                self._write_sidecar(directory, sidecar, [entry])  # one rename: atomic
                fsync_dir(directory)
        except OSError as exc:
            raise self._error(exc, action) from exc
        return ObjectInfo(key, st.st_size, entry["etag"], meta, st.st_mtime)
