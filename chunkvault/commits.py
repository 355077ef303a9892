"""Committing file versions in batches: many versions, one manifest batch object per replica
(:mod:`chunkvault.journal`), then one catalog transaction, instead of a manifest object per
file per replica and a catalog commit per file.

A version is appended once every chunk it names is durable; :meth:`Committer.append`
returns a future that completes once the batch holding it is on ``min_replicas`` peers and
in the catalog (or failed). A batch is written when it is full (``journal.BatchBuilder``),
when ``max_delay`` has passed since its first version, or when the caller says nothing more
is coming (:meth:`Committer.flush`: the vault calls it after each pack it wrote, whose
files were just appended). Batches are written one at a time, in order.

Exactly once across a SIGKILL at any line, as for single manifests before: the batch name
is recorded as pending in the catalog before any copy is written, and
:meth:`chunkvault.vault.Vault.recover_pending` finishes or forgets it at the next open.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from chunkvault import shortfall
from chunkvault.catalog import Catalog, VersionRow
from chunkvault.crypto.material import MasterKeys, WriterKeys
from chunkvault.journal import BatchBuilder, BatchEntry, JournalStore, new_batch_name
from chunkvault.light_future import LightFuture
from chunkvault.manifest import Manifest, ManifestError, new_manifest_name

log = logging.getLogger(__name__)
# Catalog meta key prefix of a manifest or batch being written (see module docstring).
PENDING = "pending_manifest:"


@dataclass(frozen=True)
class Committed:
    """A version in the catalog: its entry name and the batch object holding it."""

    name: str
    batch: str


def version_row(
    manifest: Manifest, name: str, inode: int | None = None, batch: str | None = None
) -> VersionRow:
    """The catalog's row for a version named ``name`` (in ``batch``, or a manifest object
    of that name when ``batch`` is None)."""
    return VersionRow(
        path=manifest.path,
        manifest=name,
        size=manifest.size,
        mtime_ns=manifest.mtime_ns,
        mode=manifest.mode,
        sha256=manifest.sha256,
        deleted=manifest.deleted,
        created_ns=manifest.created_ns,
        chunk_count=len(manifest.chunks),
        inode=inode,
        batch=batch,
        writer=manifest.writer,
    )


@dataclass
class _Pending:
    entry: BatchEntry
    inode: int | None
    future: LightFuture[Committed]


class Committer:
    def __init__(
        self,
        vault_id: str,
        keys: MasterKeys,
        journal: JournalStore,
        catalog: Catalog,
        max_delay: float,
    ) -> None:
        self.vault_id = vault_id
        self.keys = keys
        self.journal = journal
        self.catalog = catalog
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._builder = BatchBuilder()
        self._waiting: list[_Pending] = []
        self._closed = False
        # One writer: batches go out in order and a slow peer backs appends up into
        # bigger batches rather than more of them.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")

    def append(self, manifest: Manifest, inode: int | None = None) -> LightFuture[Committed]:
        """Queue a version whose chunks are all durable; see the module docstring."""
        # One per version until its batch is written: a LightFuture (a Future makes a
        # Condition and an RLock at birth).
        future: LightFuture[Committed] = LightFuture()
        if isinstance(self.keys, WriterKeys):  # whose it is, for the owner's scans
            manifest = replace(manifest, writer=self.keys.writer_id)
        entry = BatchEntry(new_manifest_name(self.vault_id, self.keys, manifest), manifest)
        with self._lock:
            if self._closed:
                future.set_exception(ManifestError("stopped before the version was committed"))
                return future
            if not self._builder.add(entry):  # full: this one starts the next batch
                self._start_locked()
                if not self._builder.add(entry):
                    raise AssertionError("an empty batch refused a version")
            self._waiting.append(_Pending(entry, inode, future))
            if len(self._waiting) == 1:
                timer = threading.Timer(self.max_delay, self._flush_stale, (self._builder,))
                timer.daemon = True
                timer.start()
        return future

    def commit(self, manifest: Manifest, inode: int | None = None) -> Committed:
        """Append and write now; returns once committed (raises ManifestError if not)."""
        future = self.append(manifest, inode)
        self.flush()
        return future.result()

    def flush(self) -> None:
        """Write what is queued now: nothing more is coming soon."""
        with self._lock:
            if self._waiting:
                self._start_locked()

    def close(self, wait: bool = True) -> None:
        """Write what is queued (``wait``: and wait for it), then refuse new versions."""
        with self._lock:
            if self._waiting:
                self._start_locked()
            self._closed = True
        self._writer.shutdown(wait=wait)

    def _flush_stale(self, builder: BatchBuilder) -> None:
        with self._lock:
            if self._builder is builder and self._waiting:
                self._start_locked()

    def _start_locked(self) -> None:
        batch, self._waiting, self._builder = self._waiting, [], BatchBuilder()
        try:
            self._writer.submit(self._write, batch)
        except RuntimeError:  # shut down: nothing will write it
            for item in batch:
                item.future.set_exception(ManifestError("stopped before the version was committed"))

    def _write(self, batch: list[_Pending]) -> None:
        try:
            name = self.write_batch([(p.entry, p.inode) for p in batch])
        except Exception as exc:  # ManifestError, or a bug: these files fail, others go on
            if not isinstance(exc, ManifestError):
                log.exception("committing %d version(s) failed", len(batch))
            for item in batch:
                item.future.set_exception(exc)
            return
        for item in batch:
            item.future.set_result(Committed(item.entry.name, name))

    def write_batch(self, items: list[tuple[BatchEntry, int | None]]) -> str:
        """Store one batch on the peers and add its versions to the catalog, exactly once
        (see the module docstring). Raises ManifestError if under min_replicas."""
        name = new_batch_name(self.vault_id)
        self.catalog.set_meta(PENDING + name, "1")
        entries = [entry for entry, _ in items]
        try:
            _, written = self.journal.write(entries, name)
        except ManifestError:
            # Take back the copies that were written: no stray batch of a failed commit.
            try:
                self.journal.delete(name)
            except ManifestError as exc:
                log.warning("%s stays pending: %s", name, exc)
            else:
                self.clear_pending(name)
            raise
        rows = [version_row(e.manifest, e.name, inode, batch=name) for e, inode in items]
        self.catalog.add_versions(rows)
        if len(written) < self.journal.replicas:  # the agent's background repair tops it up
            shortfall.note(self.catalog, name, self.journal.replicas, written)
        self.clear_pending(name)  # a kill before this: recover_pending finds it in the catalog
        return name

    def clear_pending(self, name: str) -> None:
        self.catalog.delete_meta(PENDING + name)
