"""Files into the vault: one file -> chunks -> the chunk pipeline -> manifest -> catalog.

Reader threads open, chunk and hash files; each chunk is handed to the shared
:class:`~chunkvault.pipeline.ChunkPipeline` (seal and put in worker threads) and the
reader goes on with the next chunk or file without waiting, so chunks of many files are
in flight at once. The plaintext read and not yet durable is bounded by
``transfer.max_inflight_bytes``: a reader takes a chunk's bytes from the byte budget before
reading it, and they come back when the chunk is durable (or was stored already).

A file that changes while it is read (size, mtime or inode differ afterwards) is read
again; a version is committed only when every chunk reached ``min_replicas`` peers and
the manifest is stored (:meth:`Vault.commit`, exactly once even across a SIGKILL). Files
commit in whatever order their chunks become durable.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import logging
import os
import queue
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO, Literal

from chunkvault.budget import BudgetClosed
from chunkvault.catalog import VersionRow
from chunkvault.chunking import Chunker
from chunkvault.commits import Committed
from chunkvault.errors import ChunkvaultError
from chunkvault.flows import Flow
from chunkvault.fsutil import SymlinkInPath, lstat_in_tree, open_dir, open_regular_in_tree
from chunkvault.light_future import LightFuture
from chunkvault.manifest import ChunkRef, Manifest, ManifestError
from chunkvault.pipeline import ChunkPipeline, FileBatch
from chunkvault.seal_workers import (
    BATCH_FILES,
    BATCHES_AHEAD,
    Request,
    SealWorkers,
    WorkerLost,
    sealable_below,
)
from chunkvault.stored import StoredChunk
from chunkvault.upload import Unknown
from chunkvault.vault import Vault

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


class _LookUp(enum.Enum):
    TOKEN = 0


#: :meth:`Ingestor.submit`'s default: the reader looks the file's newest version up.
LOOK_UP = _LookUp.TOKEN
#: A file queued for a reader: path, its result, its newest version (or LOOK_UP).
_Job = tuple[str, LightFuture["IngestResult"], "VersionRow | _LookUp | None"]


@dataclass
class _SealBatch:
    """A batch asked of a seal worker: its requests, and the job and flow of each."""

    requests: list[Request]
    jobs: list[_Job]
    flows: list[Flow]


class _Changed(Exception):
    """The file changed while it was read."""


#: Reader threads of one Ingestor by default (see __init__).
READERS = 2


class Ingestor:
    """Stores files through one shared pipeline: :meth:`submit` from one thread (push) or
    :meth:`ingest` from many (the agent's workers) feed the same readers, chunk workers
    and byte budget."""

    def __init__(
        self,
        vault: Vault,
        progress: Callable[[int], None] | None = None,
        readers: int = READERS,
        seal_workers: int | SealWorkers = 0,
    ) -> None:
        """``seal_workers``: worker processes that read and seal small files (a push of
        many, see :mod:`chunkvault.seal_workers`), or how many to start; each replaces a
        reader thread. Closed with this Ingestor."""
        self.vault = vault
        cfg = vault.config
        self.root = cfg.watch.path
        self.chunker = Chunker(
            cfg.chunking.mode, cfg.chunking.min_size, cfg.chunking.avg_size, cfg.chunking.max_size
        )
        self.max_chunk = cfg.chunking.largest_chunk
        concurrency = cfg.transfer.concurrency
        self.pipeline = ChunkPipeline(
            vault.service, cfg.transfer.max_inflight_bytes, workers=concurrency,
            max_chunk=self.max_chunk,
        )  # fmt: skip
        # Reading and chunking is local and quick next to sealing and putting: one reader
        # keeps the chunk workers fed; a second one (the agent's) lets a small file go by
        # while a big one is read. More only fight over the GIL (small files are sealed by
        # their reader, see pipeline.py): two readers cost a push of 2,000 small files
        # ~12% more CPU than one, in 4x the context switches.
        # A queue of their own, not an executor: a push submits every file of the tree at
        # once, and an executor's future per file cost ~0.7 KiB each (14 MiB at 20,000).
        # Each file's outcome is a LightFuture for the same reason: a Future is ~1.5 KiB,
        # and a push holds all of them to the end (a 20,000-file push peaked 24 MiB lower).
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._seal = self._start_seal_workers(seal_workers) if seal_workers else None
        self._readers = (
            [threading.Thread(target=self._seal_loop, args=(i,), name=f"read-{i}", daemon=True)
             for i in range(len(self._seal))]
            if self._seal is not None
            else [threading.Thread(target=self._read_loop, name=f"read-{i}", daemon=True)
                  for i in range(readers)]
        )  # fmt: skip
        for reader in self._readers:
            reader.start()
        self.progress = progress
        # Files submitted and not yet queued for a manifest batch: once there are none,
        # the batch is written at once (nothing more will join it soon).
        self._lock = threading.Lock()
        self._uncommitted: set[LightFuture[IngestResult]] = set()
        # After :meth:`all_submitted`: readers busy with a file, to tell the last one.
        self._input_done = False
        self._busy = 0

    def _handed_over(self, result: LightFuture[IngestResult]) -> None:
        """``result``'s file is queued for its batch, or done without one."""
        with self._lock:
            if result not in self._uncommitted:
                return
            self._uncommitted.discard(result)
            if self._uncommitted:
                return
        self.vault.commits.flush()

    def _start_seal_workers(self, given: int | SealWorkers) -> SealWorkers | None:
        """Worker processes holding the master keys, or None if they cannot start (the
        readers do their work then)."""
        if isinstance(given, SealWorkers):
            workers = given
        else:
            try:
                workers = SealWorkers(given)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("cannot start seal workers (%s): reading files in this process", exc)
                return None
        chunking = self.vault.config.chunking
        workers.start(self.vault.keys, str(self.root), sealable_below(chunking),
                      chunking.zstd_level)  # fmt: skip
        return workers

    def close(self) -> None:
        # Queued work is dropped: a half-stored file is simply stored again next time.
        self._closed = True
        self.pipeline.close()
        for _ in self._readers:
            self._queue.put(None)
        if self._seal is not None:
            self._seal.close()

    def all_submitted(self) -> None:
        """Nothing more will be submitted (a push has queued its whole tree): once the
        readers are through, the open packs are written at once, not after the pipeline's
        idle spell (which exists for the agent, where more may come any moment)."""
        with self._lock:
            self._input_done = True
            drained = self._busy == 0 and self._queue.empty()
        if drained:
            self.vault.service.flush()

    def _read_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            rel, result, latest = item
            with self._lock:
                self._busy += 1
            try:
                self._read_one(rel, result, latest)
            finally:
                self._not_busy()

    def _not_busy(self) -> None:
        """A file (or a worker's batch) is out of a reader's hands: once the last one after
        :meth:`all_submitted` is, the open packs are written."""
        with self._lock:
            self._busy -= 1
            drained = self._input_done and self._busy == 0 and self._queue.empty()
        if drained and not self._closed:
            self.vault.service.flush()

    def _seal_loop(self, worker: int) -> None:
        """A reader whose small files worker ``worker`` reads and seals, in batches: up to
        BATCHES_AHEAD are sent before this thread waits for the oldest one's answers (and
        packs them), so the worker seals on while this thread is busy. If the worker is
        lost, the files it did not answer for (and all after) are read here, as
        :meth:`_read_loop` does."""
        assert self._seal is not None
        inflight: collections.deque[_SealBatch] = collections.deque()
        stop = False
        while True:
            while not stop and len(inflight) < BATCHES_AHEAD:
                # Waiting for files only when the worker has nothing to do.
                batch, stop = self._next_batch(block=not inflight)
                if not batch:
                    break
                with self._lock:
                    self._busy += 1
                sent = self._seal_requests(batch)
                if not sent.requests:
                    self._batch_done(sent.jobs)  # nothing to ask
                    continue
                inflight.append(sent)
                try:
                    self._seal.send(worker, sent.requests)
                except WorkerLost:
                    return self._worker_lost(inflight, stop)
            if not inflight:
                return  # the stop, and every batch answered
            oldest = inflight.popleft()
            try:
                answers = self._seal.receive(worker, oldest.requests)
            except WorkerLost:
                inflight.appendleft(oldest)
                return self._worker_lost(inflight, stop)
            self._batch_done(self._seal_answers(oldest, answers))

    def _worker_lost(self, inflight: collections.deque[_SealBatch], stop: bool) -> None:
        """Read here the files of the batches the lost worker will not answer, then every
        file still to come (as :meth:`_read_loop`)."""
        while inflight:
            self._batch_done(inflight.popleft().jobs)
        if not stop:
            self._read_loop()

    def _batch_done(self, left: list[_Job]) -> None:
        """Read ``left`` here (what a worker did not settle), then count the batch done."""
        try:
            for rel, result, latest in left:
                if not result.done():
                    self._read_one(rel, result, latest)
        finally:
            self._not_busy()

    def _next_batch(self, block: bool) -> tuple[list[_Job], bool]:
        """The next queued files, up to BATCH_FILES (waiting for the first if ``block``),
        and whether the stop came after them."""
        batch: list[_Job] = []
        while len(batch) < BATCH_FILES:
            try:
                item = self._queue.get() if block and not batch else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _seal_requests(self, batch: list[_Job]) -> _SealBatch:
        """What to ask a worker for the batch's files; those settled at once (stopped,
        ignored) are asked nothing."""
        asked = _SealBatch([], [], [])
        for rel, result, latest in batch:
            if self._closed:
                result.set_result(IngestResult(rel, "failed", error="stopped before it was read"))
                continue
            flow = self.vault.rules.flow(rel)
            if flow.ignore:
                result.set_result(IngestResult(rel, "ignored"))
                continue
            if latest is LOOK_UP:
                latest = self.vault.catalog.latest(rel)
            stored = None
            if latest is not None and not latest.deleted:
                stored = (latest.size, latest.mtime_ns, latest.mode)
            asked.requests.append((rel, flow.compress, stored))
            asked.jobs.append((rel, result, latest))
            asked.flows.append(flow)
        return asked

    def _seal_answers(self, asked: _SealBatch, answers: list[tuple]) -> list[_Job]:
        """Settle what the worker answered for; the files left to read here (empty or
        larger ones, changed ones, ``later``, gone ones: their deletion)."""
        left: list[_Job] = []
        unknown = self.vault.service.unknown_chunks([a[4] for a in answers if a[0] == "sealed"])
        for answer, job, flow in zip(answers, asked.jobs, asked.flows, strict=True):
            kind = answer[0]
            rel, result, _ = job
            if kind == "sealed" and self._packed(answer, result, flow, unknown):
                continue
            if kind == "unchanged":
                result.set_result(IngestResult(rel, "unchanged", size=answer[2]))
            elif kind == "not-regular":
                result.set_result(IngestResult(rel, "ignored", error="not a regular file"))
            elif kind == "error":
                result.set_result(IngestResult(rel, "failed", error=str(answer[2])))
            else:  # reader, retry, later, gone, or sealed but stored again with its old DEK
                left.append(job)
        return left

    def _packed(
        self, answer: tuple, result: LightFuture[IngestResult], flow: Flow, unknown: Unknown
    ) -> bool:
        """A file a worker sealed, into its pack; False if it must be read here instead."""
        _, rel, (size, mtime_ns, mode, inode), sha256, chunk_id, wrapped, generation, body = answer
        durable = self.vault.service.start_sealed(
            chunk_id, size, body, wrapped, generation, replicas=flow.replicas, unknown=unknown
        )
        if durable is None:
            return False
        durable.add_done_callback(
            lambda done: self._complete(
                rel, (size, mtime_ns, mode, inode), sha256, [done.result()], result
            )
        )
        if self.progress:
            self.progress(size)
        return True

    def _read_one(
        self, rel: str, result: LightFuture[IngestResult], latest: VersionRow | _LookUp | None
    ) -> None:
        if self._closed:  # by close() before it started
            result.set_result(IngestResult(rel, "failed", error="stopped before it was read"))
        else:
            self._read_file(rel, result, latest)

    def ingest(self, rel: str) -> IngestResult:
        """Store the current content of ``rel`` (relative to watch.path) if it changed;
        returns once it is committed (or failed)."""
        return self.submit(rel).result()

    def submit(
        self, rel: str, latest: VersionRow | _LookUp | None = LOOK_UP
    ) -> LightFuture[IngestResult]:
        """Queue ``rel`` for storing; the future is done once its version is committed
        (or the file failed, was unchanged, ignored or gone). ``latest``: its newest
        version, when the caller has it at hand (push reads them all in one query)."""
        result: LightFuture[IngestResult] = LightFuture()
        with self._lock:
            self._uncommitted.add(result)
        result.add_done_callback(self._handed_over)
        if self._closed:
            result.set_result(IngestResult(rel, "failed", error="stopped before it was read"))
        else:
            self._queue.put((rel, result, latest))
        return result

    def _read_file(
        self, rel: str, result: LightFuture[IngestResult], latest: VersionRow | _LookUp | None
    ) -> None:
        """The file is opened one component at a time from watch.path, never through a
        symlink (see ``fsutil.open_regular_in_tree``): a directory swapped for a symlink
        after the event makes the path "not a regular file in the tree", so nothing outside
        the tree is ever read."""
        try:
            outcome = self._read_attempts(rel, result, latest)
        except BudgetClosed:
            outcome = IngestResult(rel, "failed", error="stopped before it was stored")
        except BaseException as exc:  # a bug: the caller sees it, the reader lives on
            result.set_exception(exc)
            return
        if outcome is not None:
            result.set_result(outcome)

    def _read_attempts(
        self, rel: str, result: LightFuture[IngestResult], latest: VersionRow | _LookUp | None
    ) -> IngestResult | None:
        """None when the file was handed to the pipeline (``result`` is set on commit)."""
        flow = self.vault.rules.flow(rel)
        if flow.ignore:
            return IngestResult(rel, "ignored")
        if latest is LOOK_UP:
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
                        if attempt == 0 and unchanged(
                            latest, st.st_size, st.st_mtime_ns, st.st_mode
                        ):
                            return IngestResult(rel, "unchanged", size=st.st_size)
                        self._read(rel, f, root_fd, flow, result)
                        return None
                finally:
                    os.close(root_fd)
            except _Changed:
                error = "file kept changing while it was read"
                time.sleep(0.2)
            except (FileNotFoundError, NotADirectoryError):
                return self.delete(rel)
            except OSError as exc:
                return IngestResult(rel, "failed", error=f"cannot read: {exc.strerror}")
        return IngestResult(rel, "failed", error=error)

    def _read(
        self, rel: str, f: BinaryIO, root_fd: int, flow: Flow, result: LightFuture[IngestResult]
    ) -> None:
        """Read and chunk the file into the pipeline; raise _Changed if it changed."""
        digest = hashlib.sha256()
        batch = FileBatch()
        before = os.fstat(f.fileno())
        self.pipeline.reading()
        try:
            self._read_chunks(rel, f, root_fd, flow, result, digest, batch, before)
        finally:
            self.pipeline.read_done()

    def _read_chunks(
        self, rel: str, f: BinaryIO, root_fd: int, flow: Flow, result: LightFuture[IngestResult],
        digest: hashlib._Hash, batch: FileBatch, before: os.stat_result,
    ) -> None:  # fmt: skip
        budget = self.pipeline.budget
        chunks = self.chunker.views(f, before.st_size)
        pipeline = self.pipeline
        read = 0
        try:
            while True:
                # Pay before reading: the buffer for at most the rest of the file, at most
                # one chunk.
                charge = pipeline.charge(max(1, min(self.max_chunk, before.st_size - read)))
                budget.acquire(charge)
                try:
                    chunk = next(chunks, None)
                except BaseException:
                    budget.release(charge)
                    raise
                if chunk is None:
                    budget.release(charge)
                    break
                size = len(chunk)
                need = pipeline.charge(size)
                if need > charge:  # the file grew: pay the difference (without holding
                    budget.release(charge)  # a part, so two growing files cannot deadlock)
                    budget.acquire(need)
                else:
                    budget.release(charge - need)
                digest.update(chunk)
                read += size
                buf = pipeline.take(chunk)
                del chunk  # a view of the chunker's buffer: valid only until the next
                pipeline.store(
                    batch, buf, size, need, replicas=flow.replicas, compress=flow.compress
                )
                del buf  # the worker's now
                if self.progress:
                    self.progress(size)
            after = os.fstat(f.fileno())
            if (
                (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
                or read != before.st_size
                or not _still_at(root_fd, rel, before)
            ):
                raise _Changed()
        except BaseException:
            batch.abandon()
            raise
        stat_of = (before.st_size, before.st_mtime_ns, before.st_mode, before.st_ino)
        batch.finish(
            lambda stored: self._complete(rel, stat_of, digest.hexdigest(), stored, result)
        )

    def _complete(
        self,
        rel: str,
        st: tuple[int, int, int, int],
        sha256: str,
        stored: list[StoredChunk],
        result: LightFuture[IngestResult],
    ) -> None:
        """Every chunk of the file is settled: queue its version for the next manifest
        batch, or fail it if any chunk failed. ``st``: the size, mtime_ns, mode and inode
        it was read with. Runs in the thread that settled the last chunk; ``result`` is
        set once the batch is committed."""
        size, mtime_ns, mode, inode = st
        try:
            failed = [s for s in stored if not s.ok]
            if failed:
                error = f"{len(failed)} of {len(stored)} chunk(s) not stored: {failed[0].reason}"
                result.set_result(IngestResult(rel, "failed", error=error))
                return
            manifest = Manifest(
                path=rel,
                size=size,
                mtime_ns=mtime_ns,
                mode=mode,
                sha256=sha256,
                chunks=tuple(
                    ChunkRef(s.chunk_id, s.plain_size, s.wrapped_dek, s.pack, s.offset, s.length)
                    for s in stored
                ),
            )
            stored_result = IngestResult(
                rel,
                "stored",
                size=size,
                chunks=len(stored),
                new_chunks=sum(1 for s in stored if s.reason != "deduplicated"),
                sent_bytes=sum(s.sent_bytes for s in stored),
            )
            committing = self.vault.commit_later(manifest, inode=inode)
            self._handed_over(result)
        except BaseException as exc:  # a bug: the caller sees it
            result.set_exception(exc)
            return

        def committed(done: LightFuture[Committed]) -> None:
            exc = done.exception()
            if exc is None:
                result.set_result(stored_result)
            elif isinstance(exc, ChunkvaultError):
                result.set_result(IngestResult(rel, "failed", error=str(exc)))
            else:
                result.set_exception(exc)

        committing.add_done_callback(committed)

    def _commit(self, manifest: Manifest, inode: int | None = None) -> None:
        self.vault.commit(manifest, inode)

    def delete(self, rel: str) -> IngestResult:
        """The file is gone: apply its flow's ``on_delete``; returns once committed."""
        deleting = self.submit_delete(rel)
        self.vault.commits.flush()
        return deleting.result()

    def submit_delete(
        self, rel: str, latest: VersionRow | _LookUp | None = LOOK_UP
    ) -> LightFuture[IngestResult]:
        """:meth:`delete` without waiting: a tombstone joins the next manifest batch with
        the other changes (a push deleting 1,000 files writes one batch, not 1,000).
        ``latest`` as in :meth:`submit`."""
        done: LightFuture[IngestResult] = LightFuture()
        if latest is LOOK_UP:
            latest = self.vault.catalog.latest(rel)
        if latest is None or latest.deleted:
            done.set_result(IngestResult(rel, "unchanged"))
            return done
        flow = self.vault.rules.flow(rel)
        try:
            if flow.on_delete == "keep":
                done.set_result(IngestResult(rel, "kept"))
                return done
            if flow.on_delete == "purge":
                self.vault.purge(rel)
                done.set_result(IngestResult(rel, "purged"))
                return done
            tombstone = Manifest(
                path=rel,
                size=0,
                mtime_ns=latest.mtime_ns,
                mode=latest.mode,
                sha256="",
                deleted=True,
            )
            committing = self.vault.commit_later(tombstone)
        except ManifestError as exc:
            done.set_result(IngestResult(rel, "failed", error=str(exc)))
            return done

        def committed(commit: LightFuture[Committed]) -> None:
            exc = commit.exception()
            if exc is None:
                done.set_result(IngestResult(rel, "deleted"))
            elif isinstance(exc, ChunkvaultError):
                done.set_result(IngestResult(rel, "failed", error=str(exc)))
            else:
                done.set_exception(exc)

        committing.add_done_callback(committed)
        return done

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
            old = self.vault.read_version(latest)
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


def unchanged(latest: VersionRow | None, size: int, mtime_ns: int, mode: int) -> bool:
    """A file with this size, mtime and mode is what ``latest`` holds (no need to read it:
    the test restic and rsync make)."""
    return (
        latest is not None
        and not latest.deleted
        and (latest.size, latest.mtime_ns, latest.mode) == (size, mtime_ns, mode)
    )


def _still_at(root_fd: int, rel: str, opened: os.stat_result) -> bool:
    """``rel`` still names the file that was read (not replaced by a rename meanwhile)."""
    try:
        st = lstat_in_tree(root_fd, rel)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)
