"""The chunk stage of the push pipeline, shared by every file in flight.

    reader threads (ingest.py)            chunk workers (here)
    open -> chunk -> sha256 ──buffer──>   id -> dedup -> seal in place -> put R replicas
       budget.acquire(charge)                budget.release(charge), buffer back to the
       copy the chunk into a buffer          pool, once durable
                                          last chunk of a file settled -> on_done(file)

Readers never wait for their own file's chunks: they hand each chunk to the workers and
go on reading (the next chunk, or the next file), so chunks of many files are in flight
at once. What bounds memory is the byte budget (``transfer.max_inflight_bytes``) of
buffers holding chunks read and not yet durable, not a count of chunks or files. Each
chunk lives in one buffer from the read to the last replica (:mod:`chunkvault.buffers`).
A file completes (see :class:`FileBatch`) when it was read to the end *and* every one of
its chunks is settled; files complete in any order.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

from chunkvault.budget import ByteBudget
from chunkvault.buffers import BufferPool
from chunkvault.crypto.envelope import PLAIN_OFFSET, sealed_size_limit
from chunkvault.stored import StoredChunk
from chunkvault.upload import UploadService

log = logging.getLogger(__name__)
# glibc mallopt(M_MMAP_THRESHOLD): buffers at least this big get their own mapping, given
# back to the system when freed. Left to glibc, the threshold rises to the largest buffer
# freed so far (up to 32 MiB), after which chunk-sized buffers come from per-thread arenas
# that keep freed memory: peak RSS then grew to ~2x what the byte budget allows.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024
#: How long the pipeline stays empty before open packs are written (see _maybe_idle).
IDLE_FLUSH_SECONDS = 0.05


def return_big_buffers_to_the_system() -> None:
    """Pin glibc's mmap threshold (once per process; nothing elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    # The process's own symbols, libc's among them (find_library would run `ldconfig -p`
    # in a subprocess: ~10 ms of every push). Not glibc (musl has no mallopt): nothing to pin.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


class FileBatch:
    """The chunks of one read of one file, in file order. ``on_done`` runs once, in the
    thread that settles the last chunk (or in :meth:`finish` if that comes last), with
    every chunk's outcome; an abandoned batch (the file changed while read) never runs it.
    """

    def __init__(self) -> None:
        self._results: list[StoredChunk | None] = []
        self._pending = 0
        self._finished = False
        self._abandoned = False
        self._on_done: Callable[[list[StoredChunk]], None] | None = None
        self._lock = threading.Lock()

    def _add(self) -> int:
        with self._lock:
            self._results.append(None)
            self._pending += 1
            return len(self._results) - 1

    def _settle(self, index: int, stored: StoredChunk) -> None:
        with self._lock:
            self._results[index] = stored
            self._pending -= 1
            ready = self._ready()
        if ready is not None:
            ready()

    def _ready(self) -> Callable[[], None] | None:
        """Under the lock: the completion to run now, at most once."""
        if not self._finished or self._pending or self._abandoned or self._on_done is None:
            return None
        on_done, self._on_done = self._on_done, None
        results = [r for r in self._results if r is not None]
        return lambda: on_done(results)

    def finish(self, on_done: Callable[[list[StoredChunk]], None]) -> None:
        """Reading is over: call ``on_done`` once every chunk added so far is settled."""
        with self._lock:
            self._finished = True
            self._on_done = on_done
            ready = self._ready()
        if ready is not None:
            ready()

    def abandon(self) -> None:
        """Forget this read; chunks still in flight finish (and free their bytes) unseen."""
        with self._lock:
            self._abandoned = True
            self._on_done = None

    @property
    def chunks(self) -> int:
        with self._lock:
            return len(self._results)


class ChunkPipeline:
    """Chunk workers over one :class:`UploadService`, bounded by one byte budget, with
    one reused buffer per chunk in flight (:mod:`chunkvault.buffers`)."""

    def __init__(
        self, service: UploadService, budget_bytes: int, workers: int, max_chunk: int
    ) -> None:
        self.service = service
        self.budget = ByteBudget(budget_bytes)
        self.buffers = BufferPool(sealed_size_limit(max_chunk))
        return_big_buffers_to_the_system()
        # The queue of this pool never holds more than the budget's bytes: every chunk in
        # it was paid for by its reader before it was read.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
        # Files being read and chunks not yet sealed: when both are none, open packs are
        # written (see _maybe_idle). _quiet counts reads started, to tell a quiet spell.
        self._idle = threading.Lock()
        self._reading = 0
        self._queued = 0
        self._quiet = 0
        self._timer = False  # an idle timer is armed

    def charge(self, size: int) -> int:
        """What a chunk of ``size`` plaintext bytes costs the budget: the buffer it will
        be read into and sealed in (:meth:`take`)."""
        return self.buffers.capacity(sealed_size_limit(size))

    def take(self, chunk: memoryview | bytes) -> bytearray:
        """A buffer holding ``chunk`` where :meth:`store` wants it (the one copy of the
        chunk a push makes)."""
        size = len(chunk)
        buf = self.buffers.take(sealed_size_limit(size))
        memoryview(buf)[PLAIN_OFFSET : PLAIN_OFFSET + size] = chunk  # 2x bytearray's speed
        return buf

    def store(
        self, batch: FileBatch, buf: bytearray, size: int, charge: int, *,
        replicas: int | None, compress: bool | None,
    ) -> None:  # fmt: skip
        """Store the chunk in ``buf`` (from :meth:`take`, its ``charge`` taken from the
        budget by the caller) as the next chunk of ``batch``; the buffer and the bytes go
        back once the chunk is sealed and sent (a small chunk's body is copied into its
        pack), the chunk settles in ``batch`` once it is durable."""
        index = batch._add()
        if self.service.packed(size):
            # A small chunk is sealed and copied into its pack right here, in the reader:
            # handing it to a worker cost more (a thread switch each way, and GIL
            # ping-pong between a dozen threads) than sealing it.
            try:
                durable = self._store_one(buf, size, replicas, compress)
            finally:
                self.buffers.give(buf)
                self.budget.release(charge)
            durable.add_done_callback(lambda d: batch._settle(index, _outcome(d, size)))
            return
        with self._idle:
            self._queued += 1
        future = self._pool.submit(self._store_one, buf, size, replicas, compress)

        def sent(done: Future[Future[StoredChunk]]) -> None:
            self.buffers.give(buf)
            self.budget.release(charge)
            try:
                durable = done.result()
            except CancelledError:
                batch._settle(index, _failed(size, "stopped before it was stored"))
            else:
                durable.add_done_callback(lambda d: batch._settle(index, _outcome(d, size)))
            finally:
                self._dequeued()

        future.add_done_callback(sent)

    def _store_one(
        self, buf: bytearray, size: int, replicas: int | None, compress: bool | None
    ) -> Future[StoredChunk]:
        try:
            return self.service.start_in_place(buf, size, replicas=replicas, compress=compress)
        except Exception as exc:  # a bug: fail this chunk's file, keep the pipeline going
            log.exception("storing a chunk failed")
            failed: Future[StoredChunk] = Future()
            failed.set_result(_failed(size, f"internal error: {type(exc).__name__}: {exc}"))
            return failed

    # --- nothing more coming: write the open packs -----------------------------------------

    def reading(self) -> None:
        """A file is being read into the pipeline (until :meth:`read_done`)."""
        with self._idle:
            self._reading += 1
            self._quiet += 1

    def read_done(self) -> None:
        with self._idle:
            self._reading -= 1
        self._maybe_idle()

    def _dequeued(self) -> None:
        with self._idle:
            self._queued -= 1
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        """When no file is being read and no chunk waits to be sealed, small chunks in
        open packs have nobody left to share a pack with: write them after a short quiet
        spell (not at once: between two files of a push the pipeline is briefly empty,
        and a flush there would make many small packs). One timer at a time: a thread
        started per file that goes by cost a fifth of a small-file push."""
        with self._idle:
            if self._reading or self._queued or self._timer:
                return
            self._timer = True
            mark = self._quiet
        self._arm(mark)

    def _arm(self, mark: int) -> None:
        timer = threading.Timer(IDLE_FLUSH_SECONDS, self._flush_if_quiet, (mark,))
        timer.daemon = True
        timer.start()

    def _flush_if_quiet(self, mark: int) -> None:
        with self._idle:
            if self._reading or self._queued:  # busy: the next quiet moment arms again
                self._timer = False
                return
            if self._quiet != mark:  # quiet now, but not for the whole spell: wait again
                mark = self._quiet
            else:
                self._timer = False
                mark = -1
        if mark >= 0:
            self._arm(mark)
        else:
            self.service.flush()

    def close(self) -> None:
        """Stop: waiting readers give up, queued chunks are dropped (their files fail and
        are stored again next time; nothing half-stored is ever committed)."""
        self.budget.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _failed(size: int, reason: str) -> StoredChunk:
    return StoredChunk("", size, b"", (), False, reason)


def _outcome(done: Future[StoredChunk], size: int) -> StoredChunk:
    try:
        return done.result()
    except CancelledError:
        return _failed(size, "stopped before it was stored")
