"""The file pipeline: one file -> chunks -> the upload service -> manifest -> catalog.

Chunking and hashing run in the calling thread while up to ``transfer.concurrency``
chunks are being sealed and written in worker threads, so reading the file, encryption and
network I/O overlap, and memory stays bounded (in-flight chunks x ``max_size``).

A file that changes while it is read (size, mtime or inode differ afterwards) is read
again; a version is committed only when every chunk reached ``min_replicas`` peers and
the manifest is stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import BinaryIO, Literal

from chunkvault.catalog import VersionRow
from chunkvault.chunking import Chunker
from chunkvault.errors import ChunkvaultError
from chunkvault.flows import Flow
from chunkvault.fsutil import SymlinkInPath, lstat_in_tree, open_dir, open_regular_in_tree
from chunkvault.manifest import ChunkRef, Manifest, ManifestError
from chunkvault.upload import StoredChunk
from chunkvault.vault import Vault, version_row

log = logging.getLogger(__name__)
Action = Literal["stored", "unchanged", "ignored", "deleted", "kept", "purged", "moved", "failed"]
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class IngestResult:
    path: str
    action: Action
    size: int = 0
    chunks: int = 0
    new_chunks: int = 0
    sent_bytes: int = 0
    error: str = ""


class _Changed(Exception):
    """The file changed while it was read."""


class Ingestor:
    def __init__(self, vault: Vault, progress: Callable[[int], None] | None = None) -> None:
        self.vault = vault
        cfg = vault.config
        self.root = cfg.watch.path
        self.chunker = Chunker(
            cfg.chunking.mode, cfg.chunking.min_size, cfg.chunking.avg_size, cfg.chunking.max_size
        )
        self.in_flight = cfg.transfer.concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="chunk")
        self.progress = progress

    def close(self) -> None:
        # Queued chunks are dropped: a half-stored file is simply stored again next time.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def ingest(self, rel: str) -> IngestResult:
        """Store the current content of ``rel`` (relative to watch.path) if it changed.

        The file is opened one component at a time from watch.path, never through a
        symlink (see ``fsutil.open_regular_in_tree``): a directory swapped for a symlink
        after the event makes the path "not a regular file in the tree", so nothing outside
        the tree is ever read."""
        flow = self.vault.rules.flow(rel)
        if flow.ignore:
            return IngestResult(rel, "ignored")
        latest = self.vault.catalog.latest(rel)
        error = ""
        for attempt in range(MAX_ATTEMPTS):
            try:
                root_fd = open_dir(self.root)
                try:
                    fd = open_regular_in_tree(root_fd, rel)
                    if fd is None:
                        return IngestResult(rel, "ignored", error="not a regular file")
                    with os.fdopen(fd, "rb") as f:
                        st = os.fstat(f.fileno())
                        if attempt == 0 and _unchanged(latest, st):
                            return IngestResult(rel, "unchanged", size=st.st_size)
                        return self._store(rel, f, root_fd, flow)
                finally:
                    os.close(root_fd)
            except _Changed:
                error = "file kept changing while it was read"
                time.sleep(0.2)
            except (FileNotFoundError, NotADirectoryError):
                return self.delete(rel)
            except (ManifestError, ChunkvaultError) as exc:
                return IngestResult(rel, "failed", error=str(exc))
            except OSError as exc:
                return IngestResult(rel, "failed", error=f"cannot read: {exc.strerror}")
        return IngestResult(rel, "failed", error=error)

    def _store(self, rel: str, f: BinaryIO, root_fd: int, flow: Flow) -> IngestResult:
        digest = hashlib.sha256()
        window: deque[Future[StoredChunk]] = deque()
        stored: list[StoredChunk] = []
        before = os.fstat(f.fileno())
        for chunk in self.chunker.split(f):
            digest.update(chunk)
            window.append(
                self._pool.submit(
                    self.vault.service.store_chunk,
                    chunk,
                    replicas=flow.replicas,
                    compress=flow.compress,
                )
            )
            if self.progress:
                self.progress(len(chunk))
            if len(window) >= self.in_flight:
                stored.append(window.popleft().result())
        stored.extend(pending.result() for pending in window)
        after = os.fstat(f.fileno())
        if (
            (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
            or sum(s.plain_size for s in stored) != before.st_size
            or not _still_at(root_fd, rel, before)
        ):
            raise _Changed()
        failed = [s for s in stored if not s.ok]
        if failed:
            raise ChunkvaultError(
                f"{len(failed)} of {len(stored)} chunk(s) not stored: {failed[0].reason}"
            )
        manifest = Manifest(
            path=rel,
            size=before.st_size,
            mtime_ns=before.st_mtime_ns,
            mode=before.st_mode,
            sha256=digest.hexdigest(),
            chunks=tuple(ChunkRef(s.chunk_id, s.plain_size, s.wrapped_dek) for s in stored),
        )
        self._commit(manifest, inode=before.st_ino)
        return IngestResult(
            rel,
            "stored",
            size=before.st_size,
            chunks=len(stored),
            new_chunks=sum(1 for s in stored if s.reason != "deduplicated"),
            sent_bytes=sum(s.sent_bytes for s in stored),
        )

    def _commit(self, manifest: Manifest, inode: int | None = None) -> None:
        name, _peers = self.vault.manifests.write(manifest)
        self.vault.catalog.add_version(version_row(manifest, name, inode))

    def delete(self, rel: str) -> IngestResult:
        """The file is gone: apply its flow's ``on_delete``."""
        latest = self.vault.catalog.latest(rel)
        if latest is None or latest.deleted:
            return IngestResult(rel, "unchanged")
        flow = self.vault.rules.flow(rel)
        try:
            if flow.on_delete == "keep":
                return IngestResult(rel, "kept")
            if flow.on_delete == "purge":
                for name in self.vault.catalog.versions(rel):
                    self.vault.manifests.delete(name.manifest)
                self.vault.catalog.remove_versions(rel)
                return IngestResult(rel, "purged")
            tombstone = Manifest(
                path=rel,
                size=0,
                mtime_ns=latest.mtime_ns,
                mode=latest.mode,
                sha256="",
                deleted=True,
            )
            self._commit(tombstone)
        except ManifestError as exc:
            return IngestResult(rel, "failed", error=str(exc))
        return IngestResult(rel, "deleted")

    def move(self, src: str, dst: str) -> IngestResult:
        """A rename inside the tree: re-point the manifest (no chunk is read or sent) when
        the destination is the stored content, else store it; then the source is gone."""
        flow = self.vault.rules.flow(dst)
        latest = self.vault.catalog.latest(src)
        try:
            st = self._lstat(dst)
        except (FileNotFoundError, NotADirectoryError, SymlinkInPath):
            return self.delete(src)  # dst is not (or no longer) a file in the tree
        if (
            flow.ignore
            or not stat.S_ISREG(st.st_mode)
            or latest is None
            or latest.deleted
            or (latest.size, latest.mtime_ns) != (st.st_size, st.st_mtime_ns)
        ):
            result = self.ingest(dst)
            self.delete(src)
            return result
        try:
            old = self.vault.manifests.read(latest.manifest)
            self._commit(
                replace(old, path=dst, mode=st.st_mode, created_ns=time.time_ns()),
                inode=st.st_ino,
            )
        except (ManifestError, ChunkvaultError) as exc:
            return IngestResult(dst, "failed", error=str(exc))
        self.delete(src)
        return IngestResult(dst, "moved", size=st.st_size, chunks=len(old.chunks))

    def _lstat(self, rel: str) -> os.stat_result:
        root_fd = open_dir(self.root)
        try:
            return lstat_in_tree(root_fd, rel)
        finally:
            os.close(root_fd)


def _unchanged(latest: VersionRow | None, st: os.stat_result) -> bool:
    return (
        latest is not None
        and not latest.deleted
        and (latest.size, latest.mtime_ns, latest.mode) == (st.st_size, st.st_mtime_ns, st.st_mode)
    )


def _still_at(root_fd: int, rel: str, opened: os.stat_result) -> bool:
    """``rel`` still names the file that was read (not replaced by a rename meanwhile)."""
    try:
        st = lstat_in_tree(root_fd, rel)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)
