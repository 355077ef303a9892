"""Chunks staged by ``PUT /chunks/{id}`` until a ``POST /upload`` names them.

One file per client id under ``<state_dir>/staging``: the directory is 0700 and every file
0600 whatever the umask (staged chunks are plaintext). A body is streamed into a temp file
as it arrives, never held whole in memory, and renamed into place only once complete and
fsynced: a body that fails half-way (client gone, over a limit) leaves nothing staged.

Two limits keep clients from filling the disk:

- ``quota``: bytes staged plus bytes being staged. Each file counts at least
  :data:`MIN_CHARGE` (a disk block), so empty chunks cannot exhaust inodes either. A write
  that would pass it raises :class:`StagingFull` and stages nothing.
- ``ttl``: a chunk staged longer ago than this is "not staged" (``get`` returns None) and
  :meth:`Staging.sweep` removes it, with any temp file a crash left behind.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from chunkvault.config import ApiConfig
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import ensure_private_dir, fsync_dir

log = logging.getLogger(__name__)

CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
DEFAULT_QUOTA = 1024**3
DEFAULT_TTL = 3600.0
MIN_CHARGE = 4096
_PREFIX = "c-"  # the id pattern allows "." and "..": prefix every name so none is special
_TEMP = ".tmp-"


class StagingFull(ChunkvaultError):
    """Staging a chunk would pass ``api.staging_quota``."""


def charge(size: int) -> int:
    """What a staged file of ``size`` bytes counts against the quota."""
    return max(size, MIN_CHARGE)


def _private_dir(path: Path) -> None:
    """``path`` as a directory of mode 0700, whatever the umask or an older mode; never a
    symlink (staged chunks are plaintext: they must stay in the private state dir)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ChunkvaultError(f"{path} is not a directory", "remove it; it holds staged chunks")
    ensure_private_dir(path)


def _tighten(path: str | Path, mode: int) -> None:
    try:
        os.chmod(path, mode)  # checked above to be no symlink
    except PermissionError:  # not ours (e.g. a root-owned volume): say so, go on
        log.warning("%s cannot be made mode %o: chmod it yourself", path, mode)


class Staging:
    def __init__(
        self,
        directory: Path,
        quota: int = DEFAULT_QUOTA,
        ttl: float = DEFAULT_TTL,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.quota = quota
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._charges: dict[str, int] = {}  # client id -> charge of its staged file
        self._committed = 0  # sum of _charges
        self._reserved = 0  # bytes reserved by writes in progress
        self._writing: set[str] = set()  # temp file names this process is writing
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        _private_dir(directory)
        with self._lock:
            self._rescan()

    @classmethod
    def from_config(cls, directory: Path, api: ApiConfig) -> Staging:
        return cls(directory, api.staging_quota, api.staging_ttl_seconds)

    # --- names and accounting ---------------------------------------------------------------

    def _path(self, client_id: str) -> Path:
        if not CLIENT_ID.match(client_id):
            raise ValueError(f"invalid chunk id {client_id!r}")
        return self.directory / f"{_PREFIX}{client_id}"

    @property
    def used(self) -> int:
        """Bytes counted against the quota: staged files plus writes in progress."""
        with self._lock:
            return self._committed + self._reserved

    def _expired(self, mtime: float) -> bool:
        return self._clock() - mtime > self.ttl

    def _reserve(self, n: int) -> None:
        with self._lock:
            used = self._committed + self._reserved
            if used + n > self.quota:
                raise StagingFull(
                    f"{used} bytes staged or being staged, {n} more would pass "
                    f"api.staging_quota ({self.quota} bytes)",
                    "POST /upload the staged chunks, or retry after api.staging_ttl_seconds "
                    "when unclaimed ones expire",
                )
            self._reserved += n

    def _forget(self, client_id: str) -> None:
        """Drop the accounting of ``client_id``'s file (caller holds the lock)."""
        self._committed -= self._charges.pop(client_id, 0)

    def _rescan(self) -> None:
        """Recount from the directory, fixing file modes; the caller holds the lock."""
        charges: dict[str, int] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.name.startswith(_PREFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
                if stat.S_IMODE(info.st_mode) != 0o600:
                    _tighten(entry.path, 0o600)  # staged by an older version
                charges[entry.name[len(_PREFIX) :]] = charge(info.st_size)
        self._charges = charges
        self._committed = sum(charges.values())

    # --- the staging operations -------------------------------------------------------------

    def writer(self, client_id: str, size_hint: int | None = None) -> StagingWriter:
        """Stage ``client_id`` from pieces written to the returned context manager.
        ``size_hint`` (a declared Content-Length) is reserved up front, so a body that cannot
        fit fails before its first byte is read."""
        return StagingWriter(self, client_id, size_hint)

    def put(self, client_id: str, body: bytes) -> None:
        with self.writer(client_id, len(body)) as w:
            w.write(body)

    def get(self, client_id: str) -> bytes | None:
        """The staged bytes, or None when nothing is staged under that id or it expired."""
        try:
            fd = os.open(self._path(client_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # missing, or not a plain file we wrote (ELOOP)
            return None
        with os.fdopen(fd, "rb") as f:
            if not self._expired(os.fstat(f.fileno()).st_mtime):
                return f.read()
        self._remove_if_expired(client_id)
        return None

    def discard(self, client_id: str) -> None:
        with self._lock:
            self._path(client_id).unlink(missing_ok=True)
            self._forget(client_id)

    def _remove_if_expired(self, client_id: str) -> None:
        # Checked again under the lock: the id may have been staged afresh meanwhile.
        path = self._path(client_id)
        with self._lock:
            try:
                if self._expired(os.lstat(path).st_mtime):
                    path.unlink()
                    self._forget(client_id)
            except FileNotFoundError:
                self._forget(client_id)

    def sweep(self) -> int:
        """Remove expired staged chunks and temp files no write of this process owns (left
        by a crash) that are as old; recount usage. Returns the number of files removed."""
        removed = 0
        with self._lock:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    ours = entry.name.startswith(_PREFIX) or (
                        entry.name.startswith(_TEMP) and entry.name not in self._writing
                    )
                    if not ours or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        if self._expired(entry.stat(follow_symlinks=False).st_mtime):
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        continue
            self._rescan()
        if removed:
            log.info("staging: removed %d expired file(s)", removed)
        return removed

    # --- periodic sweeps (the daemon) -------------------------------------------------------

    def start(self) -> None:
        """Sweep now, then every ttl/4 (1..60 s) in a background thread until :meth:`stop`."""
        if self._sweeper is not None:
            return
        interval = min(60.0, max(1.0, self.ttl / 4))
        self._stop.clear()
        self._sweep_logged()

        def loop() -> None:
            while not self._stop.wait(interval):
                self._sweep_logged()

        self._sweeper = threading.Thread(target=loop, name="staging-sweep", daemon=True)
        self._sweeper.start()

    def _sweep_logged(self) -> None:
        try:
            self.sweep()
        except OSError as exc:  # e.g. a read-only disk: serving goes on, sweeps retry
            log.warning("staging sweep of %s failed: %s", self.directory, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None


class StagingWriter:
    """One body being staged. Leaving the ``with`` block normally stages it atomically;
    leaving it by an exception removes the temp file and stages nothing."""

    def __init__(self, staging: Staging, client_id: str, size_hint: int | None) -> None:
        self.staging = staging
        self.client_id = client_id
        self.path = staging._path(client_id)
        self.size = 0
        self._reserved = 0
        self._reserve_up_to(charge(size_hint or 0))
        try:
            fd, tmp = tempfile.mkstemp(prefix=_TEMP, dir=staging.directory)  # 0600, O_EXCL
        except BaseException:
            self._release()
            raise
        try:
            os.fchmod(fd, 0o600)  # mkstemp's 0600 already; explicit, whatever the umask
            self._file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            self._release()
            raise
        self._tmp = tmp
        with staging._lock:
            staging._writing.add(os.path.basename(tmp))

    def _reserve_up_to(self, total: int) -> None:
        if total > self._reserved:
            self.staging._reserve(total - self._reserved)
            self._reserved = total

    def _release(self) -> None:
        with self.staging._lock:
            self.staging._reserved -= self._reserved
            self._reserved = 0

    def write(self, data: bytes) -> None:
        self._reserve_up_to(charge(self.size + len(data)))
        self._file.write(data)
        self.size += len(data)

    def __enter__(self) -> StagingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        staging = self.staging
        committed = False
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None:
                with staging._lock:
                    os.replace(self._tmp, self.path)
                    committed = True
                    staging._forget(self.client_id)
                    staging._charges[self.client_id] = charge(self.size)
                    staging._committed += charge(self.size)
                    staging._reserved -= self._reserved
                    self._reserved = 0
                fsync_dir(staging.directory)
        finally:
            self._file.close()  # no-op when closed above
            if not committed:
                self._release()
                Path(self._tmp).unlink(missing_ok=True)
            with staging._lock:
                staging._writing.discard(os.path.basename(self._tmp))
