"""chunkvault.shares through the upload service and the chunk reader, over in-memory
peers: erasure-coded chunk objects and packs are written one share per peer, as placement
ranks them, and read back from any k good shares; what is missing, forged or stale costs a
retry, never a wrong byte."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkvault.backends.base import TransientError
from chunkvault.backends.memory import MemoryPeer
from chunkvault.backends.stack import wrap_peer
from chunkvault.catalog import Catalog
from chunkvault.config import parse_config
from chunkvault.crypto.envelope import PLAIN_OFFSET, sealed_size_limit
from chunkvault.crypto.material import MasterKeys
from chunkvault.erasure import HEADER_SIZE, Scheme, encode, parse_header
from chunkvault.layout import (
    META_OBJECT,
    META_SCHEME,
    META_SHA256,
    META_SHARE,
    chunk_key,
    pack_key,
    parse_chunk_metadata,
    parse_data_key,
    share_key,
)
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose
from chunkvault.reading import ChunkReader, ChunkUnavailable
from chunkvault.shares import Coded
from chunkvault.stored import StoredChunk
from chunkvault.upload import UploadService

S32 = Scheme(3, 2)


class Rig:
    def __init__(
        self, tmp: Path, n: int = 5, pack_threshold: int | str = 0, scheme: Scheme = S32
    ) -> None:
        self.config = parse_config(
            {
                "vault": {"id": "t", "state_dir": str(tmp / "state")},
                "replication": {"erasure": {"data": scheme.data, "parity": scheme.parity},
                                "min_replicas": 2},
                "transfer": {"retries": 0, "down_after_failures": 1, "down_seconds": 60},
                "chunking": {"pack_threshold": pack_threshold, "pack_size": "1MiB",
                             "pack_flush_seconds": 60},
                "peers": [{"name": f"m{i}", "path": str(tmp / f"m{i}")} for i in range(n)],
            }
        )  # fmt: skip
        self.memory = {f"m{i}": MemoryPeer(f"m{i}") for i in range(n)}
        self.placed = [
            PlacedPeer(wrap_peer(m, self.config.transfer, sleep=lambda s: None), 1.0, None)
            for m in self.memory.values()
        ]
        self.keys = MasterKeys.generate(os.urandom(16))
        self.catalog = Catalog(tmp / "state" / "catalog.db")
        self.service = UploadService(self.config, self.placed, self.keys, self.catalog)
        self.reader = ChunkReader("t", self.placed, self.keys, self.catalog)

    def shares(self, object_key: str) -> dict[str, int]:
        """peer -> index of the share of ``object_key`` it holds (as listed)."""
        found = {}
        for name, peer in self.memory.items():
            for info in peer.list("t/"):
                parsed = parse_data_key("t", info.key)
                if info.key.startswith(object_key + ".") and parsed.share is not None:
                    found[name] = parsed.share
        return found

    def read(self, stored: StoredChunk) -> bytes:
        buf = bytearray(sealed_size_limit(stored.plain_size))
        packed = (stored.pack, stored.offset, stored.length) if stored.pack else None
        view = self.reader.read_into(
            stored.chunk_id, buf, [stored.wrapped_dek], stored.plain_size, packed
        )
        return bytes(view)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.service.close()
    r.catalog.close()


def test_a_chunk_object_goes_to_five_peers_one_share_each_in_rank_order(rig: Rig) -> None:
    data = os.urandom(300_000)
    stored = rig.service.store_chunk(data, compress=False)
    assert stored.ok and stored.reason == "stored" and len(stored.peers) == 5
    key = chunk_key("t", stored.chunk_id)
    ranked = [p.name for p in choose(stored.chunk_id, rig.placed, 5)]
    assert rig.shares(key) == {name: i for i, name in enumerate(ranked)}
    assert rig.catalog.chunk_shares(stored.chunk_id) == rig.shares(key)
    row = rig.catalog.chunk(stored.chunk_id)
    assert row is not None and row.scheme == "3-2"
    # No whole copy anywhere; each share ~1/3 of the body, all five ~5/3 of it.
    assert not any(key in {i.key for i in m.list("t/")} for m in rig.memory.values())
    total = sum(i.size for m in rig.memory.values() for i in m.list("t/"))
    assert total == S32.stored_size(row.stored_size) < 1.7 * row.stored_size
    # Each share names itself, its object and its own SHA-256, and carries the wrapped DEK.
    share = share_key(key, S32, 4)
    holder = rig.memory[ranked[4]]
    info = holder.stat(share)
    meta = info.metadata
    assert (meta[META_SCHEME], meta[META_SHARE], meta[META_OBJECT]) == ("3-2", "4", stored.chunk_id)
    assert meta[META_SHA256] == hashlib.sha256(holder.get(share)).hexdigest()
    assert parse_chunk_metadata(meta).wrapped_dek == stored.wrapped_dek
    assert rig.read(stored) == data


def test_any_two_peers_lost_the_chunk_still_reads_three_lost_it_does_not(rig: Rig) -> None:
    data = os.urandom(200_000)
    stored = rig.service.store_chunk(data)
    key = chunk_key("t", stored.chunk_id)
    where = rig.shares(key)
    by_index = {i: name for name, i in where.items()}
    for lost in ([0, 1], [3, 4], [0, 4], [2, 3]):
        gone = {by_index[i]: rig.memory[by_index[i]]._objects.copy() for i in lost}
        for name in gone:
            rig.memory[name]._objects.clear()
        try:
            rig.reader.shares._cache = None
            assert rig.read(stored) == data, lost
        finally:
            for name, objects in gone.items():
                rig.memory[name]._objects.update(objects)
    for i in (0, 1, 2):
        rig.memory[by_index[i]].delete(share_key(key, S32, i))
    rig.reader.shares._cache = None
    with pytest.raises(ChunkUnavailable, match="share"):
        rig.read(stored)


def test_a_forged_data_share_is_outvoted_by_the_parity(rig: Rig) -> None:
    data = os.urandom(100_000)
    stored = rig.service.store_chunk(data, compress=False)
    key = chunk_key("t", stored.chunk_id)
    by_index = {i: name for name, i in rig.shares(key).items()}
    share = share_key(key, S32, 1)
    body = bytearray(rig.memory[by_index[1]].get(share))
    body[HEADER_SIZE + 100] ^= 0xFF  # the header still says it is share 1 of this object
    rig.memory[by_index[1]].plant(share, bytes(body))
    assert rig.read(stored) == data


def test_a_stale_share_of_an_older_encoding_is_not_mixed_in(rig: Rig) -> None:
    data = os.urandom(90_000)
    stored = rig.service.store_chunk(data, compress=False)
    key = chunk_key("t", stored.chunk_id)
    by_index = {i: name for name, i in rig.shares(key).items()}
    # Share 0 replaced by share 0 of another object (another encoding): its header names
    # another SHA-256, so the reader groups it apart and reads a parity share instead.
    other = encode(os.urandom(len(rig.memory[by_index[0]].get(share_key(key, S32, 0))) * 3 -
                   3 * HEADER_SIZE), S32)  # fmt: skip
    assert parse_header(other[0]).index == 0
    rig.memory[by_index[0]].plant(share_key(key, S32, 0), other[0])
    assert rig.read(stored) == data


def test_a_failed_share_write_goes_to_the_next_ranked_peer(tmp_path: Path) -> None:
    rig = Rig(tmp_path, n=7)
    try:
        data = os.urandom(50_000)
        chunk_id = rig.keys.chunk_id(data)
        ranked = [p.name for p in choose(chunk_id, rig.placed, 7)]
        rig.memory[ranked[1]].fail_next(5, TransientError, ops={"put"})
        stored = rig.service.store_chunk(data)
        assert stored.ok and stored.reason == "stored"
        where = rig.shares(chunk_key("t", chunk_id))
        assert ranked[1] not in where and len(where) == 5
        assert sorted(where.values()) == [0, 1, 2, 3, 4]
        assert where[ranked[5]] == 1  # share 1 went to the sixth-ranked peer
        assert rig.read(stored) == data
    finally:
        rig.service.close()
        rig.catalog.close()


def test_too_few_shares_written_is_a_failed_store(tmp_path: Path) -> None:
    rig = Rig(tmp_path)  # min_replicas 2: survive one loss, so 4 shares of 5 must be written
    try:
        for name in ("m0", "m1"):
            rig.memory[name].fail_next(5, TransientError, ops={"put"})
        stored = rig.service.store_chunk(os.urandom(10_000))
        assert not stored.ok and "need 4" in stored.reason
    finally:
        rig.service.close()
        rig.catalog.close()


def test_packed_chunks_read_as_ranges_of_data_shares_and_rebuilt_when_one_is_gone(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, pack_threshold="64KiB")
    try:
        datas = [os.urandom(n) for n in (5_000, 17_000, 333, 40_000, 9_999)]
        futures = []
        for data in datas:
            buf = bytearray(sealed_size_limit(len(data)))
            buf[PLAIN_OFFSET : PLAIN_OFFSET + len(data)] = data
            futures.append(rig.service.start_in_place(buf, len(data), compress=False))
        rig.service.flush()
        stored = [f.result() for f in futures]
        assert all(s.ok and s.pack == stored[0].pack for s in stored)
        assert stored[0].pack is not None
        key = pack_key("t", stored[0].pack)
        where = rig.shares(key)
        assert len(where) == 5 and rig.catalog.pack_shares(stored[0].pack) == where
        pack = rig.catalog.pack(stored[0].pack)
        assert pack is not None and pack.scheme == "3-2"
        calls = {name: len(m.calls) for name, m in rig.memory.items()}
        assert [rig.read(s) for s in stored] == datas
        parity = [name for name, i in where.items() if i >= 3]
        assert all(len(rig.memory[p].calls) == calls[p] for p in parity)  # systematic
        # A span of several chunks, as restore reads them.
        view = memoryview(bytearray(pack.stored_size))
        start, end = stored[1].offset, stored[3].offset + stored[3].length
        rig.reader.read_span_into(stored[0].pack, view, start, end - start)
        whole = rig.reader.shares.read_object(
            Coded(key, stored[0].pack, S32, where, pack.stored_size)
        )
        assert bytes(view[: end - start]) == whole[start:end]
        # A data share gone: its chunks come from the pack rebuilt.
        data_holder = next(name for name, i in where.items() if i == 1)
        rig.memory[data_holder].delete(share_key(key, S32, 1))
        assert [rig.read(s) for s in stored] == datas
    finally:
        rig.service.close()
        rig.catalog.close()


def test_a_known_erasure_coded_chunk_is_deduplicated(rig: Rig) -> None:
    data = os.urandom(70_000)
    first = rig.service.store_chunk(data)
    again = rig.service.store_chunk(data)
    assert again.reason == "deduplicated" and sorted(again.peers) == sorted(first.peers)


def test_the_background_repair_writes_the_share_a_down_peer_missed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from chunkvault import shortfall
    from chunkvault.healing import Healer

    rig = Rig(tmp_path, pack_threshold="64KiB")
    try:
        big, small = os.urandom(200_000), os.urandom(3_000)
        chunk_id = rig.keys.chunk_id(big)
        home = choose(chunk_id, rig.placed, 5)[2].name  # where share 2 belongs
        rig.memory[home].fail_next(10, TransientError, ops={"put"})
        stored = rig.service.store_chunk(big)
        packed = rig.service.store_chunk(small)  # (a pack of its own, written at once)
        assert stored.ok and len(stored.peers) == 4 and home not in stored.peers
        assert {s.key for s in shortfall.noted(rig.catalog)} >= {chunk_key("t", chunk_id)}
        rig.memory[home]._faults.clear()
        for placed in rig.placed:  # the cool-off after the failures is over
            placed.peer._down_until = None  # type: ignore[attr-defined]
        vault = SimpleNamespace(
            config=rig.config, peers=rig.placed, catalog=rig.catalog, reader=rig.reader,
            keys=rig.keys, write_only=False,
        )  # fmt: skip
        done = Healer(vault, 64 * 1024 * 1024).heal()  # type: ignore[arg-type]
        assert done.copies >= 1
        key = chunk_key("t", chunk_id)
        assert rig.shares(key)[home] == 2 and sorted(rig.shares(key).values()) == [0, 1, 2, 3, 4]
        assert rig.catalog.chunk_shares(chunk_id) == rig.shares(key)
        assert not shortfall.noted(rig.catalog)
        for name in [n for n, i in rig.shares(key).items() if i < 2]:  # two others lost
            rig.memory[name]._objects.clear()
        rig.reader.shares._cache = None
        assert rig.read(stored) == big and rig.read(packed) == small
    finally:
        rig.service.close()
        rig.catalog.close()


def test_shares_spread_over_zones_first(tmp_path: Path) -> None:
    rig = Rig(tmp_path, n=6, scheme=Scheme(2, 1))
    try:
        zones = {f"m{i}": f"z{i // 2}" for i in range(6)}  # three zones of two peers
        rig.service.peers = [PlacedPeer(p.peer, 1.0, zones[p.name]) for p in rig.placed]
        for _ in range(20):
            stored = rig.service.store_chunk(os.urandom(20_000))
            where = rig.shares(chunk_key("t", stored.chunk_id))
            # Three shares, one in each zone (by rank alone: all three zones 2 times in 5).
            assert sorted(zones[name] for name in where) == ["z0", "z1", "z2"], where
    finally:
        rig.service.close()
        rig.catalog.close()
