"""Packs of small chunks over in-memory peers: what is written where, when a pack is written,
dedup before and after it is, and failures (chunkvault.packs through the upload service)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from chunkvault import packs
from chunkvault.backends.base import PermanentError
from chunkvault.backends.memory import MemoryPeer
from chunkvault.backends.stack import wrap_peer
from chunkvault.catalog import Catalog
from chunkvault.config import parse_config
from chunkvault.crypto.envelope import PLAIN_OFFSET, seal_chunk, sealed_size_limit
from chunkvault.crypto.material import MasterKeys
from chunkvault.layout import pack_key, packs_prefix
from chunkvault.packs import HEADER
from chunkvault.peerset import PlacedPeer
from chunkvault.reading import ChunkReader
from chunkvault.stored import StoredChunk
from chunkvault.upload import Unknown, UploadService

MiB = 1024 * 1024


class PackRig:
    def __init__(
        self, tmp: Path, n: int = 3, flush_seconds: float = 60,
        after_pack: Callable[[], None] | None = None, **chunking: object,
    ) -> None:  # fmt: skip
        self.config = parse_config(
            {
                "vault": {"id": "t", "state_dir": str(tmp / "state")},
                "replication": {"replicas": 2, "min_replicas": 1},
                "chunking": {"pack_size": "1MiB", "pack_flush_seconds": flush_seconds,
                             **chunking},
                "transfer": {"retries": 0, "down_after_failures": 1, "down_seconds": 60},
                "peers": [{"name": f"m{i}", "path": str(tmp / f"m{i}")} for i in range(n)],
            }
        )  # fmt: skip
        self.memory = [MemoryPeer(f"m{i}") for i in range(n)]
        self.placed = [
            PlacedPeer(wrap_peer(m, self.config.transfer, sleep=lambda s: None), 1.0, None)
            for m in self.memory
        ]
        self.keys = MasterKeys.generate(os.urandom(16))
        self.catalog = Catalog(tmp / "state" / "catalog.db")
        self.service = UploadService(
            self.config, self.placed, self.keys, self.catalog, after_pack=after_pack
        )
        self.reader = ChunkReader("t", self.placed, self.keys, self.catalog)

    def start(self, data: bytes):  # -> Future[StoredChunk]
        buf = bytearray(sealed_size_limit(len(data)))
        buf[PLAIN_OFFSET : PLAIN_OFFSET + len(data)] = data
        return self.service.start_in_place(buf, len(data))

    def packs(self) -> dict[str, list[str]]:
        """pack key -> peers holding it."""
        held: dict[str, list[str]] = {}
        for m in self.memory:
            for info in m.list(packs_prefix("t")):
                held.setdefault(info.key, []).append(m.name)
        return held

    def body(self, pack: str | None) -> bytes:
        """The pack's body from a peer holding it."""
        assert pack is not None
        key = pack_key("t", pack)
        holder = next(m for m in self.memory if any(i.key == key for i in m.list("t/")))
        return holder.get(key)

    def read(self, stored: StoredChunk) -> bytes:
        buf = bytearray(sealed_size_limit(stored.plain_size))
        packed = (stored.pack, stored.offset, stored.length) if stored.pack else None
        with self.reader.read_into(stored.chunk_id, buf, [stored.wrapped_dek],
                                   stored.plain_size, packed) as view:  # fmt: skip
            return bytes(view)


@pytest.fixture
def rig(tmp_path: Path):
    r = PackRig(tmp_path)
    yield r
    r.service.close()
    r.catalog.close()


def test_small_chunks_share_one_pack_on_r_distinct_peers_and_read_back(rig: PackRig) -> None:
    datas = [os.urandom(1000 + 37 * i) for i in range(20)]
    started = [rig.start(d) for d in datas]
    assert not any(f.done() for f in started)  # waiting in the open pack
    rig.service.flush()
    stored = [f.result(10) for f in started]
    assert all(s.ok and s.reason == "stored" for s in stored)
    assert len({s.pack for s in stored}) == 1
    pack = stored[0].pack
    assert pack is not None
    held = rig.packs()
    assert list(held) == [pack_key("t", pack)]
    assert len(held[pack_key("t", pack)]) == 2  # R distinct peers
    body = rig.body(pack)
    assert body.startswith(HEADER)
    offsets = [s.offset for s in stored]
    assert offsets[0] == len(HEADER) and offsets == sorted(offsets)
    assert offsets[-1] + stored[-1].length == len(body)  # back to back, nothing else
    for data, s in zip(datas, stored, strict=True):
        assert rig.read(s) == data
    assert rig.catalog.pack_count() == 1
    assert all(rig.catalog.chunk(s.chunk_id).pack == pack for s in stored)


def test_a_full_pack_is_written_without_a_flush(
    rig: PackRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packs, "EARLY_FRACTION", 1)  # only full packs go on their own
    started = [rig.start(os.urandom(100_000)) for _ in range(12)]  # 1.2 MB > pack_size
    first = started[0].result(10)  # the first pack filled up and went out on its own
    assert first.ok and first.pack is not None
    assert not started[-1].done()
    rig.service.flush()
    assert all(f.result(10).ok for f in started)
    assert len(rig.packs()) == 2


def test_idle_peers_take_a_quarter_full_pack_busy_ones_a_full_one(
    rig: PackRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()  # the peers hold every write until it is set
    for m in rig.memory:
        monkeypatch.setattr(m, "put", _held(m.put, gate))
    # ~100 KB sealed each: the first pack goes at 3 (>= 1 MiB / 4, no pack being written);
    # while it is being written, the next 10 wait in one open pack (not full yet: flushed).
    started = [rig.start(os.urandom(100_000)) for _ in range(13)]
    gate.set()
    rig.service.flush()
    stored = [f.result(10) for f in started]
    assert all(s.ok for s in stored)
    per_pack = Counter(s.pack for s in stored)
    assert list(per_pack.values()) == [3, 10]
    assert len(rig.packs()) == 2


def _held(put: Callable[..., object], gate: threading.Event) -> Callable[..., object]:
    def held(*args: object, **kwargs: object) -> object:
        assert gate.wait(10)
        return put(*args, **kwargs)

    return held


def test_after_a_pack_is_written_its_chunks_are_settled_then_the_hook_runs(
    tmp_path: Path,
) -> None:
    calls: list[bool] = []
    started: list = []
    rig = PackRig(tmp_path, after_pack=lambda: calls.append(all(f.done() for f in started)))
    try:
        started += [rig.start(os.urandom(2000)) for _ in range(5)]
        assert calls == []
        rig.service.flush()
        assert all(f.result(10).ok for f in started)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == [True]  # once per pack, after every chunk in it settled
    finally:
        rig.service.close()
        rig.catalog.close()


def test_a_written_pack_lets_go_of_its_body_before_its_chunks_settle(
    rig: PackRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settling a pack of thousands of small files takes a while (their completions run),
    and the next pack is being written meanwhile: the body is not held through that."""
    written: list = []
    store = packs.PackWriter._store

    def keep(self: packs.PackWriter, pack) -> list:  # type: ignore[no-untyped-def]
        written.append(pack)
        return store(self, pack)

    monkeypatch.setattr(packs.PackWriter, "_store", keep)
    held: list[int] = []
    future = rig.start(os.urandom(3000))
    future.add_done_callback(lambda _: held.append(len(written[0].body)))
    rig.service.flush()
    assert future.result(10).ok and held == [0]
    assert len(rig.body(future.result().pack)) > 3000  # what was sent is whole


def test_a_lone_small_chunk_is_written_after_pack_flush_seconds(tmp_path: Path) -> None:
    rig = PackRig(tmp_path, flush_seconds=0.2)
    try:
        began = time.monotonic()
        stored = rig.start(b"a lone small file").result(10)
        assert stored.ok and 0.15 < time.monotonic() - began < 5
    finally:
        rig.service.close()
        rig.catalog.close()


def test_a_chunk_waiting_in_a_pack_is_not_added_twice(rig: PackRig) -> None:
    data = os.urandom(5000)
    first, second = rig.start(data), rig.start(data)
    rig.service.flush()
    a, b = first.result(10), second.result(10)
    assert a.reason == "stored" and b.reason == "deduplicated" and b.sent_bytes == 0
    assert (a.pack, a.offset, a.length) == (b.pack, b.offset, b.length)
    assert len(rig.body(a.pack)) == len(HEADER) + a.length  # one copy of the body
    # Once written, the catalog answers: deduplicated at once, same place.
    third = rig.start(data)
    assert third.done()
    c = third.result()
    assert c.reason == "deduplicated" and (c.pack, c.offset, c.length) == (a.pack, a.offset,
                                                                           a.length)  # fmt: skip


def test_a_batch_lookup_is_trusted_only_until_a_chunk_moves_from_a_pack_to_the_catalog(
    rig: PackRig,
) -> None:
    """start_sealed skips its own catalog lookup for a chunk unknown_chunks did not find,
    but not once a pack was written since: that chunk may be in the catalog by then."""
    data = os.urandom(5000)
    chunk_id = rig.keys.chunk_id(data)
    sealed = seal_chunk(rig.keys, data)

    def start(unknown: Unknown):
        return rig.service.start_sealed(
            chunk_id, len(data), sealed.body, sealed.wrapped_dek, sealed.generation,
            unknown=unknown,
        )  # fmt: skip

    asked = rig.service.unknown_chunks([chunk_id])
    assert asked.ids == {chunk_id}
    first = start(asked)
    second = start(asked)  # waiting in the open pack
    assert first is not None and second is not None and not first.done()
    rig.service.flush()
    assert first.result(10).reason == "stored"
    assert second.result(10).reason == "deduplicated"
    late = start(asked)  # the lookup is stale: the chunk is in the catalog now
    assert late is not None and late.done() and late.result().reason == "deduplicated"
    assert len(rig.packs()) == 1
    assert rig.service.unknown_chunks([chunk_id, "f" * 64]).ids == {"f" * 64}


def test_chunks_at_the_threshold_stay_objects(tmp_path: Path) -> None:
    rig = PackRig(tmp_path, pack_threshold="4KiB")
    try:
        small, big = rig.start(os.urandom(4095)), rig.start(os.urandom(4096))
        assert big.done() and big.result().pack is None  # its own object, at once
        rig.service.flush()
        assert small.result(10).pack is not None
    finally:
        rig.service.close()
        rig.catalog.close()


def test_a_pack_no_peer_takes_fails_its_chunks_and_records_nothing(rig: PackRig) -> None:
    for m in rig.memory:
        m.fail_next(10, PermanentError, ops={"put"})
    started = [rig.start(os.urandom(2000)) for _ in range(3)]
    rig.service.flush()
    outcomes = [f.result(10) for f in started]
    assert not any(o.ok for o in outcomes)
    assert "need 1" in outcomes[0].reason
    assert rig.catalog.pack_count() == 0 and rig.catalog.chunk(outcomes[0].chunk_id) is None
    # Nothing waits for that pack any more: the same chunks go into a new pack next time.
    assert rig.service.packs is not None
    assert all(rig.service.packs.pending(o.chunk_id) is None for o in outcomes)


def test_a_failed_peer_is_replaced_by_the_next_ranked(rig: PackRig) -> None:
    rig.memory[0].fail_next(5, PermanentError, ops={"put"})
    started = [rig.start(os.urandom(3000)) for _ in range(40)]
    rig.service.flush()
    stored = [f.result(10) for f in started]
    assert all(s.ok and len(s.peers) == 2 for s in stored)
    for peers in rig.packs().values():
        assert len(peers) == 2


def test_closing_fails_chunks_still_in_an_open_pack(rig: PackRig) -> None:
    started = rig.start(os.urandom(1000))
    rig.service.close()
    outcome = started.result(10)
    assert not outcome.ok and "stopped" in outcome.reason
    assert rig.packs() == {}
