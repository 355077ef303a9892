"""Restore files byte-identical from the peers, many chunks and many files at once.

Each file is rebuilt from its manifest (:mod:`chunkvault.restore_plan` says which chunks go
where). Chunks of every file in flight are fetched concurrently (``transfer.concurrency``
workers; the reader picks each chunk's replica by health and latency and falls back to the
next on any error or corruption), and each is written at its offsets into the file's temp
file (:mod:`chunkvault.restore_target`), which is verified and renamed into place once
complete. Each chunk in flight lives in one buffer from the GET to the write: its body is
read into a reused slab (:mod:`chunkvault.buffers`), decrypted in place and written from
there (fresh multi-MiB buffers per chunk used to cost more CPU in page faults than the
crypto). Memory is bounded by ``transfer.max_inflight_bytes``: a slab's capacity is taken
from the budget before the chunk is fetched and given back once it is written, so a restore
holds that many bytes of chunk buffers at most, whatever the size or number of files. A
file that cannot be restored is reported and the others go on.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from wcmatch import glob

from chunkvault import names
from chunkvault.budget import ByteBudget
from chunkvault.buffers import BufferPool
from chunkvault.catalog import VersionRow
from chunkvault.crypto.envelope import sealed_size_limit
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import SymlinkInPath, open_dir, sync_filesystem
from chunkvault.manifest import Manifest
from chunkvault.restore_plan import Fetch, plan_fetches
from chunkvault.restore_spans import Span, plan_spans
from chunkvault.restore_target import (
    IDENTICAL,
    OVERWRITE_CHOICES,
    Overwrite,
    TargetDirs,
    TargetFile,
    open_target,
)
from chunkvault.vault import Vault

__all__ = ["OVERWRITE_CHOICES", "Overwrite", "RestoreReport", "Restorer", "select"]

log = logging.getLogger(__name__)
_FLAGS = glob.GLOBSTAR | glob.DOTGLOB
#: Unwanted bytes a span read may include between two wanted bodies (restore_spans).
SPAN_GAP = 256 * 1024


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
    """Manifests are authenticated, but a path must still never escape the target: only
    the plain relative paths chunkvault stores ("a/b/c": no empty, "." or ".." part, no
    NUL) are restored."""
    parts = rel.split("/")
    if "\0" in rel or any(p in _NOT_A_NAME for p in parts):
        raise ChunkvaultError(f"refusing to restore unsafe path {names.show(rel)}")
    return parts


_NOT_A_NAME = frozenset(("", ".", ".."))


class Restorer:
    """Restore many files at once; one instance per command (:meth:`close` at the end)."""

    def __init__(
        self,
        vault: Vault,
        progress: Callable[[int], None] | None = None,
        overwrite: Overwrite = "never",
    ) -> None:
        self.vault = vault
        self.progress = progress
        self.overwrite = overwrite
        transfer = vault.config.transfer
        self.workers = max(2, transfer.concurrency)
        self.budget = ByteBudget(transfer.max_inflight_bytes)
        # Slabs fit the body of the largest chunk the chunker makes; larger chunks (the
        # API's) get a buffer of their own.
        self.buffers = BufferPool(sealed_size_limit(vault.config.chunking.largest_chunk))
        # Each file in flight holds two fds (its directory and its temp file). Many files
        # open at once let the packed chunks of many be read with one span read each (a
        # span read is issued once half of them wait for one): 256 made a 2,000-file
        # restore ~12% faster than 64. A quarter of the fd limit at most.
        self.max_open_files = max(8, min(256, _fd_limit() // 4))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore")
        # Files are prepared ahead of the scheduling thread, a few at once: the manifest
        # read (one round trip each, where a batch did not bring it) and the file's
        # directory and temp file made. Creating files is kernel time (on ext4, ~1 ms each
        # where many inodes were freed lately), so doing it on one thread left the other
        # core idle and the fetch workers waiting for files to write into.
        # Files being prepared hold open-file slots too: at most a quarter of them, so
        # with under half waiting for span reads, a quarter or more are always files whose
        # fetches are under way and free slots as they finish (else a restore with a low
        # fd limit waited for a slot forever).
        self.prepare_ahead = max(1, min(self.workers, self.max_open_files // 4 - 1))
        self._prepare_pool = ThreadPoolExecutor(
            max_workers=min(4, self.workers, max(2, os.cpu_count() or 2)),
            thread_name_prefix="prepare",
        )
        # Finishing a file (read back, hash, rename) may wait on the disk: done apart,
        # so the fetch workers keep the peers busy meanwhile. Open files bound its queue.
        self._finisher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="finish")

    def close(self) -> None:
        self._prepare_pool.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True)
        self._finisher.shutdown(wait=True)

    def restore(self, versions: Sequence[VersionRow], target: Path) -> RestoreReport:
        """Restore into ``target``: the directory itself may be a symlink (the user chose
        it), but nothing below it is followed, so a symlink planted in the target can
        neither redirect a file outside it nor have a victim file written through it."""
        try:
            target_fd = open_dir(target)
        except OSError as exc:
            raise ChunkvaultError(
                f"cannot open the restore target {target}: {exc.strerror}",
                "choose a directory you can write to",
            ) from None
        run = _Run(target, self.max_open_files)
        # Kept directory fds come on top of the two per open file: an eighth of the limit.
        dirs = TargetDirs(target_fd, limit=max(4, min(128, _fd_limit() // 8)))
        prepared = self._prepare_ahead(run, versions, dirs)
        try:
            for index, version, opening in prepared:
                self._start(run, index, version, opening)
                if run.fatal is not None:
                    break
            self._read_spans(run)
            run.wait_idle()
            if run.fatal is None:
                _make_durable(target_fd, target)
        except BaseException:
            run.cancelled = True  # workers still queued skip their fetch
            raise
        finally:
            prepared.close()
            run.wait_idle()
            run.discard_open()
            dirs.close()
            os.close(target_fd)
        if run.fatal is not None:
            raise run.fatal
        return run.report(versions)

    def _prepare_ahead(
        self, run: _Run, versions: Sequence[VersionRow], dirs: TargetDirs
    ) -> Generator[tuple[int, VersionRow, Future[_Opened]], None, None]:
        """Each version with its file being prepared (:meth:`_prepare`), ``prepare_ahead``
        ahead, in the order they were committed (batch, then time): the order their small
        chunks were packed in, so the packed chunks of the files open at once sit next to
        each other and few span reads fetch them (see :meth:`_read_spans`). Each takes an
        open-file slot before it is prepared; :meth:`_start` gives back those of files that
        will not be written."""
        window: deque[tuple[int, VersionRow, Future[_Opened]]] = deque()
        order = sorted(
            range(len(versions)), key=lambda i: (versions[i].batch or "", versions[i].created_ns)
        )
        try:
            for index in order:
                if len(run.collected) >= self.max_open_files // 2:
                    # Half the open files wait for packed chunks: read them now (the
                    # others are being fetched and free their slots as they finish).
                    self._read_spans(run)
                run.open_slots.acquire()
                version = versions[index]
                try:
                    opening = self._prepare_pool.submit(self._prepare, run, version, dirs)
                except BaseException:
                    run.open_slots.release()
                    raise
                window.append((index, version, opening))
                if len(window) > self.prepare_ahead:
                    yield window.popleft()
            while window:
                yield window.popleft()
        finally:
            # Files still being prepared: those that opened are tracked by the run, which
            # discards them once these are through.
            for _, _, opening in window:
                opening.cancel()
            wait([opening for _, _, opening in window])

    def _prepare(self, run: _Run, version: VersionRow, dirs: TargetDirs) -> _Opened:
        """Preparer: the file's manifest (most came with their batch), its fetches, and its
        temp file in its directory (or why the file already there stays)."""
        manifest = self.vault.cached_version(version)
        if manifest is None:
            manifest = self.vault.read_version(version)
        parts = safe_parts(manifest.path)
        fetches = plan_fetches(manifest)
        job = open_target(manifest, dirs, parts, self.overwrite, len(fetches))
        if isinstance(job, TargetFile):
            run.track(job)
        return manifest, fetches, job

    def _start(self, run: _Run, index: int, version: VersionRow, opening: Future[_Opened]) -> None:
        """Queue one prepared file's fetches (waiting for room in the byte budget). Packed
        chunks are collected instead (see :meth:`_read_spans`): read once half the open
        files wait for them, or at the end."""
        try:
            manifest, fetches, job = opening.result()
        except (ChunkvaultError, OSError) as exc:
            run.open_slots.release()
            run.outcome(index, exc)
            return
        except BaseException:
            run.open_slots.release()
            raise
        if isinstance(job, str):
            run.open_slots.release()
            run.outcome(index, job)
            if self.progress:
                self.progress(manifest.size)
            return
        if not fetches:
            self._settle(run, index, job)
            return
        for fetch in fetches:
            if job.error is not None or run.cancelled:  # no use fetching the rest
                if job.piece_done():
                    self._settle(run, index, job)
                continue
            if fetch.pack is not None:
                run.packed.setdefault(fetch.pack, []).append(
                    (fetch.pack_offset, fetch.length, _Wanted(index, job, fetch))
                )
                run.collected.add(job)
                continue
            charge = self.buffers.capacity(sealed_size_limit(fetch.size))
            self.budget.acquire(charge)  # a chunk over the whole budget waits to go alone
            run.submitted()
            try:
                self._pool.submit(self._fetch, run, index, job, fetch, charge)
            except BaseException:
                self.budget.release(charge)
                run.done()
                raise

    def _read_spans(self, run: _Run) -> None:
        """Queue one read per span of the packed chunks collected so far (restore_spans):
        the bodies of many small files' chunks with one ranged GET each."""
        packed, run.packed = run.packed, {}
        run.collected = set()
        for pack, wanted in packed.items():
            for span in plan_spans(pack, wanted, self.buffers.slab_size, SPAN_GAP):
                charge = self.buffers.capacity(span.length)
                self.budget.acquire(charge)
                run.submitted()
                try:
                    self._pool.submit(self._fetch_span, run, span, charge)
                except BaseException:
                    self.budget.release(charge)
                    run.done()
                    raise

    def _fetch_span(self, run: _Run, span: Span[_Wanted], charge: int) -> None:
        """Worker: read a span of a pack, open each body in place and write it to every
        file that wants it; a body that does not open (a damaged copy) or a span no peer
        serves is read chunk by chunk instead, from the other replicas."""
        slab = self.buffers.take(span.length)
        alone: list[_Wanted] = []
        try:
            view = memoryview(slab)[: span.length]
            try:
                peer = self.vault.reader.read_span_into(span.pack, view, span.offset, span.length)
            except ChunkvaultError:
                peer = None
            for body in span.bodies:
                live = [w for w in body.wanted_by if w.job.error is None and not run.cancelled]
                if not live:
                    continue
                if peer is None:
                    alone += live
                    continue
                at = body.offset - span.offset
                first = live[0].fetch
                data = self.vault.reader.open_in_span(
                    first.chunk_id, view[at : at + body.length], [first.wrapped_dek],
                    first.size, peer,
                )  # fmt: skip
                if data is None or len(data) != first.size:
                    alone += live
                    continue
                with data:
                    for wanted in live:
                        try:
                            wanted.job.write(data, wanted.fetch.offsets)
                        except OSError as exc:
                            wanted.job.fail(exc)
                        if self.progress:
                            self.progress(len(data) * len(wanted.fetch.offsets))
            del view
            for wanted in alone:
                try:
                    self._fetch_into_place(wanted.job, wanted.fetch)
                except (ChunkvaultError, OSError) as exc:
                    wanted.job.fail(exc)
        except BaseException as exc:  # a bug: fail these files, stop queueing, report it
            for body in span.bodies:
                for wanted in body.wanted_by:
                    wanted.job.fail(ChunkvaultError(f"internal error: {exc!r}"))
            run.fatal = run.fatal or exc
        finally:
            self.buffers.give(slab)
            self.budget.release(charge)
            try:
                for body in span.bodies:
                    for wanted in body.wanted_by:
                        self._piece_done(run, wanted.index, wanted.job)
            finally:
                run.done()

    def _piece_done(self, run: _Run, index: int, job: TargetFile) -> None:
        if job.piece_done():
            if job.hashed_as_written:  # nothing to read back: a few quick syscalls, here
                try:
                    self._settle(run, index, job)
                except BaseException as exc:  # a bug: report it from the scheduling thread
                    run.fatal = run.fatal or exc
                return
            run.submitted()
            try:
                self._finisher.submit(self._settle_counted, run, index, job)
            except BaseException:
                run.done()
                raise

    def _fetch(self, run: _Run, index: int, job: TargetFile, fetch: Fetch, charge: int) -> None:
        """Worker: read one chunk from the best replica, write it at its offsets."""
        try:
            if job.error is None and not run.cancelled:
                try:
                    self._fetch_into_place(job, fetch)
                except (ChunkvaultError, OSError) as exc:
                    job.fail(exc)
        except BaseException as exc:  # a bug: fail this file, stop queueing, report it
            job.fail(ChunkvaultError(f"internal error: {exc!r}"))
            run.fatal = run.fatal or exc
        finally:
            self.budget.release(charge)
            try:
                self._piece_done(run, index, job)
            finally:
                run.done()

    def _fetch_into_place(self, job: TargetFile, fetch: Fetch) -> None:
        """Read the chunk into a slab, open it there, write it from there, give it back."""
        slab = self.buffers.take(sealed_size_limit(fetch.size))
        try:
            packed = (fetch.pack, fetch.pack_offset, fetch.length) if fetch.pack else None
            data = self.vault.reader.read_into(
                fetch.chunk_id, slab, [fetch.wrapped_dek], fetch.size, packed
            )
            with data:  # released before the slab goes back: nothing may see it reused
                if len(data) != fetch.size:
                    raise ChunkvaultError(
                        f"chunk {fetch.chunk_id[:16]} has {len(data)} bytes, its manifest "
                        f"says {fetch.size}"
                    )
                job.write(data, fetch.offsets)
                if self.progress:
                    self.progress(len(data) * len(fetch.offsets))
        finally:
            self.buffers.give(slab)

    def _settle_counted(self, run: _Run, index: int, job: TargetFile) -> None:
        try:
            self._settle(run, index, job)
        except BaseException as exc:  # a bug: report it from the scheduling thread
            run.fatal = run.fatal or exc
        finally:
            run.done()

    def _settle(self, run: _Run, index: int, job: TargetFile) -> None:
        """Every piece of ``job`` is in (or given up on): rename it into place, or drop it."""
        try:
            if job.error is None and not run.cancelled:
                try:
                    job.finish()
                    run.outcome(index, None)
                except (ChunkvaultError, OSError) as exc:
                    run.outcome(index, exc)
            else:
                job.discard()
                if job.error is not None:
                    run.outcome(index, job.error)
        finally:
            run.untrack(job)


# A prepared file: its manifest, its fetches, and its temp file or why it stays.
_Opened = tuple[Manifest, list[Fetch], TargetFile | str]


@dataclass(frozen=True)
class _Wanted:
    """A packed chunk a file in flight waits for."""

    index: int
    job: TargetFile
    fetch: Fetch


class _Run:
    """The shared state of one :meth:`Restorer.restore` call, between the scheduling
    thread and the workers."""

    def __init__(self, target: Path, max_open_files: int) -> None:
        self.target = target
        self.open_slots = threading.BoundedSemaphore(max_open_files)
        self.cancelled = False
        self.fatal: BaseException | None = None
        # pack id -> packed chunks collected for span reads (scheduling thread only)
        self.packed: dict[str, list[tuple[int, int, _Wanted]]] = {}
        self.collected: set[TargetFile] = set()  # the files those are for
        self._cond = threading.Condition()
        self._pending = 0
        self._open: set[TargetFile] = set()
        # index of a version -> None (restored), a str (kept, why) or the error
        self._outcomes: dict[int, str | Exception | None] = {}

    def submitted(self) -> None:
        with self._cond:
            self._pending += 1

    def done(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def wait_idle(self) -> None:
        with self._cond:
            while self._pending:
                self._cond.wait()

    def track(self, job: TargetFile) -> None:
        with self._cond:
            self._open.add(job)

    def untrack(self, job: TargetFile) -> None:
        with self._cond:
            self._open.discard(job)
        self.open_slots.release()

    def discard_open(self) -> None:
        """Files left unfinished by an interruption: their temp files go."""
        with self._cond:
            left, self._open = list(self._open), set()
        for job in left:
            job.discard()

    def outcome(self, index: int, result: str | Exception | None) -> None:
        with self._cond:
            self._outcomes[index] = result

    def report(self, versions: Sequence[VersionRow]) -> RestoreReport:
        report = RestoreReport()
        for index, version in enumerate(versions):
            if index not in self._outcomes:
                continue
            result = self._outcomes[index]
            if result is None:
                report.restored.append(version.path)
                report.bytes += version.size
            elif result == IDENTICAL:
                report.unchanged.append(version.path)
            elif isinstance(result, str):
                report.skipped[version.path] = result
            else:
                message = _describe(result, self.target)
                report.failed[version.path] = message
                if isinstance(result, OSError):
                    report.local.add(version.path)
                log.error("cannot restore %s: %s", names.show(version.path), message)
        return report


def _fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _make_durable(target_fd: int, target: Path) -> None:
    """Everything restored is on disk before the restore says so: one flush of the target's
    file system (see :mod:`chunkvault.restore_target`)."""
    try:
        sync_filesystem(target_fd)
    except OSError as exc:
        raise ChunkvaultError(
            f"the restored files could not be written to disk in {target}: {exc.strerror}",
            "check the disk (and the kernel log), then restore again",
        ) from None


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
