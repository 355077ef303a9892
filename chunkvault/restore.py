"""Restore files byte-identical from the peers.

Each file is rebuilt from its manifest: chunks are fetched (several at once, bounded) from
the best-ranked healthy replica with fallback to the next on any error or corruption,
written in order to a temp file next to the destination, checked against the manifest's
size and SHA-256, given its mode and mtime, and renamed into place. A file that cannot be
restored is reported and the others go on.

The target is someone's directory and may hold planted symlinks: every directory below it
is opened (or made) relative to its parent's fd with O_NOFOLLOW, the temp file is created
O_EXCL under a random name, and all changes go through those fds (see ``fsutil``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from wcmatch import glob

from chunkvault import names
from chunkvault.catalog import VersionRow
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import SymlinkInPath, create_temp_in, open_dir, open_subdir
from chunkvault.manifest import Manifest, ManifestError
from chunkvault.vault import Vault

log = logging.getLogger(__name__)
_FLAGS = glob.GLOBSTAR | glob.DOTGLOB


# What to do with a file that already exists at the destination (restic >= 0.17's names).
Overwrite = Literal["never", "if-changed", "always"]
OVERWRITE_CHOICES: tuple[Overwrite, ...] = ("never", "if-changed", "always")


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # Left as they are: identical content already there, or (--overwrite never) an
    # existing file that differs, with why.
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    local: set[str] = field(default_factory=set)  # failed here, in the target directory

    def hint(self) -> str:
        """Where to look for what made the failed files fail."""
        if self.failed and set(self.failed) <= self.local:
            return (
                "each line above is a problem in the target directory, not with the peers: "
                "fix it there, or restore into an empty directory"
            )
        return "check `chunkvault peers list`"


def matches(path: str, patterns: Sequence[str]) -> bool:
    """No patterns: everything. A pattern is a glob on the relative path, or a directory
    (everything below it), or an exact path."""
    if not patterns:
        return True
    for pattern in patterns:
        pattern = pattern.strip("/")
        if path == pattern or path.startswith(pattern + "/"):
            return True
        if glob.globmatch(path, pattern, flags=_FLAGS):
            return True
    return False


def select(vault: Vault, patterns: Sequence[str], include_deleted: bool) -> list[VersionRow]:
    """The version to restore of each matching path: the latest, or for a deleted file
    (with ``include_deleted``) the last version before the deletion."""
    chosen = []
    for latest in vault.catalog.latest_all():
        if not matches(latest.path, patterns):
            continue
        if not latest.deleted:
            chosen.append(latest)
        elif include_deleted:
            live = [v for v in vault.catalog.versions(latest.path) if not v.deleted]
            if live:
                chosen.append(live[-1])
    return chosen


def safe_parts(rel: str) -> list[str]:
    """Manifests are authenticated, but a path must still never escape the target."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or "\0" in rel:
        raise ChunkvaultError(f"refusing to restore unsafe path {names.show(rel)}")
    return list(parts)


class Restorer:
    def __init__(
        self,
        vault: Vault,
        progress: Callable[[int], None] | None = None,
        overwrite: Overwrite = "never",
    ) -> None:
        self.vault = vault
        self.progress = progress
        self.overwrite = overwrite
        self.read_ahead = max(2, vault.config.transfer.concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.read_ahead, thread_name_prefix="fetch")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def restore(self, versions: Sequence[VersionRow], target: Path) -> RestoreReport:
        """Restore into ``target``: the directory itself may be a symlink (the user chose
        it), but nothing below it is followed, so a symlink planted in the target can
        neither redirect a file outside it nor have a victim file written through it."""
        report = RestoreReport()
        try:
            target_fd = open_dir(target)
        except OSError as exc:
            raise ChunkvaultError(
                f"cannot open the restore target {target}: {exc.strerror}",
                "choose a directory you can write to",
            ) from None
        try:
            for version in versions:
                try:
                    manifest = self.vault.manifests.read(version.manifest)
                    kept = self._restore_file(manifest, target_fd, safe_parts(manifest.path))
                except (ChunkvaultError, ManifestError, OSError) as exc:
                    message = _describe(exc, target)
                    report.failed[version.path] = message
                    if isinstance(exc, OSError):
                        report.local.add(version.path)
                    log.error("cannot restore %s: %s", names.show(version.path), message)
                    continue
                if kept is None:
                    report.restored.append(version.path)
                    report.bytes += manifest.size
                elif kept == IDENTICAL:
                    report.unchanged.append(version.path)
                else:
                    report.skipped[version.path] = kept
        finally:
            os.close(target_fd)
        return report

    def _restore_file(self, manifest: Manifest, target_fd: int, parts: list[str]) -> str | None:
        """Restore one file; None when written, else why the existing one was kept."""
        dir_fd = open_subdir(target_fd, parts[:-1], create=True)
        try:
            kept = self._keep_existing(manifest, dir_fd, parts[-1])
            if kept is None:
                self._write_into(manifest, dir_fd, parts[-1])
            elif self.progress:
                self.progress(manifest.size)
            return kept
        finally:
            os.close(dir_fd)

    def _keep_existing(self, manifest: Manifest, dir_fd: int, name: str) -> str | None:
        """What ``--overwrite`` says about a file already at ``name``: None to write it,
        else why it stays (:data:`IDENTICAL`, or how it differs)."""
        if self.overwrite == "always":
            return None
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None if self.overwrite == "if-changed" else "exists and is not a file"
        if st.st_size == manifest.size and _sha256_in(dir_fd, name) == manifest.sha256:
            if self.overwrite == "if-changed":  # same content: only its metadata to fix
                _set_metadata(dir_fd, name, manifest)
            return IDENTICAL
        return None if self.overwrite == "if-changed" else "exists and differs"

    def _write_into(self, manifest: Manifest, dir_fd: int, name: str) -> None:
        """Temp file (O_EXCL, short random name) in the destination directory, verified,
        given its mode and mtime through the fd, renamed over ``name`` (a symlink there is
        replaced, never written through), directory fsynced."""
        fd, tmp = create_temp_in(dir_fd, prefix=".cv-restore-")
        renamed = False
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                window: deque[Future[bytes]] = deque()
                for ref in manifest.chunks:
                    window.append(
                        self._pool.submit(
                            self.vault.reader.read, ref.id, [ref.wrapped_dek], ref.size
                        )
                    )
                    if len(window) >= self.read_ahead:
                        size += self._write(out, window.popleft().result(), digest)
                while window:
                    size += self._write(out, window.popleft().result(), digest)
                out.flush()
                if size != manifest.size or digest.hexdigest() != manifest.sha256:
                    raise ChunkvaultError(
                        f"{names.show(manifest.path)}: restored content does not match its "
                        f"manifest ({size} bytes, expected {manifest.size})"
                    )
                os.fchmod(out.fileno(), manifest.mode & 0o7777)
                os.utime(out.fileno(), ns=(manifest.mtime_ns, manifest.mtime_ns))
                os.fsync(out.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            renamed = True
            os.fsync(dir_fd)
        finally:
            if not renamed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)

    def _write(self, out: BinaryIO, data: bytes, digest: hashlib._Hash) -> int:
        out.write(data)
        digest.update(data)
        if self.progress:
            self.progress(len(data))
        return len(data)


IDENTICAL = "identical"


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


def _describe(exc: Exception, target: Path) -> str:
    """One line for a file that could not be restored."""
    if isinstance(exc, SymlinkInPath):
        return (
            f"refusing to restore through symlink {names.show(str(target / exc.filename))} "
            "(remove it, or restore into an empty directory)"
        )
    if isinstance(exc, NotADirectoryError) and exc.filename:
        return f"{names.show(str(target / exc.filename))} is not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (in {names.show(str(target))})"
    return str(exc)
