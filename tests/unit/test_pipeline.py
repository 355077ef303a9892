"""The chunk stage: per-file batches complete once, in any order; the budget comes back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

from chunkvault.crypto.envelope import PLAIN_OFFSET
from chunkvault.pipeline import IDLE_FLUSH_SECONDS, ChunkPipeline, FileBatch
from chunkvault.stored import StoredChunk


class SlowService:
    """store_chunk waits for ``gate``; records the largest number of chunks at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.flushes = 0

    def start_in_place(self, buf: bytearray, size: int, **kw: Any) -> Future[StoredChunk]:
        done: Future[StoredChunk] = Future()
        done.set_result(self.store_in_place(buf, size, **kw))
        return done

    def flush(self) -> None:
        self.flushes += 1

    def packed(self, size: int) -> bool:
        return False  # every chunk an object of its own: stored by the workers

    def store_in_place(self, buf: bytearray, size: int, **_: Any) -> StoredChunk:
        data = bytes(buf[PLAIN_OFFSET : PLAIN_OFFSET + size])
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        self.gate.wait(10)
        with self.lock:
            self.now -= 1
        if data.startswith(b"bad"):
            return StoredChunk("", len(data), b"", (), False, "refused")
        return StoredChunk(f"id-{data[:4].hex()}", len(data), b"k", ("p",), True, "stored")


def store(pipeline: ChunkPipeline, batch: FileBatch, part: bytes) -> None:
    """What a reader does: pay the buffer's charge, copy the chunk in, hand it over."""
    charge = pipeline.charge(len(part))
    pipeline.budget.acquire(charge)
    pipeline.store(batch, pipeline.take(part), len(part), charge, replicas=None, compress=None)


def collect() -> tuple[list[list[StoredChunk]], threading.Event, Any]:
    done: list[list[StoredChunk]] = []
    event = threading.Event()

    def on_done(stored: list[StoredChunk]) -> None:
        done.append(stored)
        event.set()

    return done, event, on_done


def test_a_file_completes_once_when_read_and_every_chunk_is_settled() -> None:
    service = SlowService()
    pipeline = ChunkPipeline(service, 100_000, workers=4, max_chunk=64)  # type: ignore[arg-type]
    try:
        batch = FileBatch()
        done, event, on_done = collect()
        for part in (b"aaaa", b"bbbb", b"cccc"):
            store(pipeline, batch, part)
        batch.finish(on_done)
        assert not event.wait(0.1)  # chunks still in flight
        service.gate.set()
        assert event.wait(5)
        assert len(done) == 1
        assert [s.chunk_id for s in done[0]] == ["id-61616161", "id-62626262", "id-63636363"]
        assert service.most == 3  # all three were being stored at once
        assert pipeline.budget.held == 0
        # Their buffers came back and are reused: three more chunks make no new ones.
        _again, again_event, on_again = collect()
        batch = FileBatch()
        for part in (b"dddd", b"eeee", b"ffff"):
            store(pipeline, batch, part)
        batch.finish(on_again)
        assert again_event.wait(5)
        assert pipeline.buffers.slabs == 3
    finally:
        pipeline.close()


class PackingService(SlowService):
    """Chunks under 8 bytes go into packs: the future settles when ``written`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.written: Future[None] = Future()

    def packed(self, size: int) -> bool:
        return size < 8

    def start_in_place(self, buf: bytearray, size: int, **kw: Any) -> Future[StoredChunk]:
        self.threads.append(threading.current_thread().name)
        if not self.packed(size):
            return super().start_in_place(buf, size, **kw)
        data = bytes(buf[PLAIN_OFFSET : PLAIN_OFFSET + size])
        done: Future[StoredChunk] = Future()
        self.written.add_done_callback(
            lambda _: done.set_result(StoredChunk(f"id-{data.hex()}", size, b"k", ("p",), True, ""))
        )
        return done


def test_a_small_chunk_is_sealed_by_its_reader_and_settles_when_its_pack_is_written() -> None:
    service = PackingService()
    service.gate.set()
    pipeline = ChunkPipeline(service, 100_000, workers=2, max_chunk=64)  # type: ignore[arg-type]
    try:
        batch = FileBatch()
        done, event, on_done = collect()
        store(pipeline, batch, b"tiny")  # packed: sealed here, in this thread
        assert service.threads == [threading.current_thread().name]
        assert pipeline.budget.held == 0  # its bytes came back once it was in the pack
        store(pipeline, batch, b"big chunk, own object")  # a worker's
        batch.finish(on_done)
        assert not event.wait(0.2)  # the small one waits for its pack
        service.written.set_result(None)
        assert event.wait(5)
        assert done[0][0].chunk_id == "id-" + b"tiny".hex()
        assert service.threads[1].startswith("chunk")
    finally:
        pipeline.close()


def test_an_empty_file_completes_at_once_and_an_abandoned_one_never() -> None:
    service = SlowService()
    service.gate.set()
    pipeline = ChunkPipeline(service, 100_000, workers=2, max_chunk=64)  # type: ignore[arg-type]
    try:
        empty = FileBatch()
        done, _event, on_done = collect()
        empty.finish(on_done)
        assert done == [[]]

        changed = FileBatch()
        store(pipeline, changed, b"dddd")
        changed.abandon()
        _late, late_event, late_done = collect()
        changed.finish(late_done)
        assert not late_event.wait(0.2)
        assert pipeline.budget.held == 0  # its chunk's bytes came back anyway
    finally:
        pipeline.close()


def test_a_failed_chunk_is_reported_with_its_file_only() -> None:
    service = SlowService()
    service.gate.set()
    pipeline = ChunkPipeline(service, 100_000, workers=2, max_chunk=64)  # type: ignore[arg-type]
    try:
        good, bad = FileBatch(), FileBatch()
        good_done, good_event, on_good = collect()
        bad_done, bad_event, on_bad = collect()
        for batch, part in ((good, b"good"), (bad, b"bad!"), (good, b"more")):
            store(pipeline, batch, part)
        good.finish(on_good)
        bad.finish(on_bad)
        assert good_event.wait(5) and bad_event.wait(5)
        assert all(s.ok for s in good_done[0]) and len(good_done[0]) == 2
        assert [s.ok for s in bad_done[0]] == [False]
    finally:
        pipeline.close()


def test_close_settles_queued_chunks_as_failed() -> None:
    service = SlowService()
    pipeline = ChunkPipeline(service, 100_000, workers=1, max_chunk=64)  # type: ignore[arg-type]
    batch = FileBatch()
    done, event, on_done = collect()
    for part in (b"aaaa", b"bbbb", b"cccc"):
        store(pipeline, batch, part)
    batch.finish(on_done)
    pipeline.close()  # one chunk is being stored, two are queued: those are dropped
    service.gate.set()
    assert event.wait(5)
    reasons = [s.reason for s in done[0]]
    assert reasons.count("stopped before it was stored") == 2


def test_open_packs_are_written_once_nothing_is_read_or_queued_for_a_moment() -> None:
    """Small chunks wait in open packs; once no file is being read and no chunk waits to
    be sealed, the pipeline asks for them to be written (after a short quiet spell, not
    between two files of a push)."""
    service = SlowService()
    service.gate.set()
    pipeline = ChunkPipeline(service, 100_000, workers=2, max_chunk=64)  # type: ignore[arg-type]
    try:
        pipeline.reading()
        batch = FileBatch()
        _done, event, on_done = collect()
        store(pipeline, batch, b"aaaa")
        batch.finish(on_done)
        assert event.wait(5)
        time.sleep(IDLE_FLUSH_SECONDS * 4)
        assert service.flushes == 0  # a file is still being read: more may join the pack
        pipeline.read_done()
        pipeline.reading()  # the next file starts within the quiet spell: still no flush
        time.sleep(IDLE_FLUSH_SECONDS * 4)
        assert service.flushes == 0
        pipeline.read_done()
        deadline = time.monotonic() + 5
        while service.flushes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.flushes == 1
    finally:
        pipeline.close()
