"""The upload service over in-memory peers: placement, failover, dedup, the seed's API."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from chunkvault.backends.memory import MemoryPeer
from chunkvault.backends.stack import wrap_peer
from chunkvault.catalog import Catalog
from chunkvault.config import parse_config
from chunkvault.crypto.envelope import open_chunk
from chunkvault.crypto.material import MasterKeys
from chunkvault.layout import chunk_key, parse_chunk_metadata
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose
from chunkvault.reading import ChunkReader, ChunkUnavailable
from chunkvault.staging import Staging
from chunkvault.upload import UploadService
from chunkvault.upload_requests import RequestConflict, UploadChunk, UploadRequest


class Rig:
    def __init__(
        self,
        tmp: Path,
        n: int = 3,
        replicas: int = 2,
        min_replicas: int = 1,
        down_seconds: float = 60,
    ) -> None:
        self.config = parse_config(
            {
                "vault": {"id": "t", "state_dir": str(tmp / "state")},
                "replication": {"replicas": replicas, "min_replicas": min_replicas},
                "transfer": {"retries": 0, "down_after_failures": 1, "down_seconds": down_seconds},
                # Chunk objects: small chunks in packs are tests/unit/test_packs.py's.
                "chunking": {"pack_threshold": 0},
                "peers": [{"name": f"m{i}", "path": str(tmp / f"m{i}")} for i in range(n)],
            }
        )
        self.memory = [MemoryPeer(f"m{i}") for i in range(n)]
        self.placed = [
            PlacedPeer(wrap_peer(m, self.config.transfer, sleep=lambda s: None), 1.0, None)
            for m in self.memory
        ]
        self.keys = MasterKeys.generate(os.urandom(16))
        self.catalog = Catalog(tmp / "state" / "catalog.db")
        self.staging = Staging(tmp / "state" / "staging")
        self.service = UploadService(
            self.config, self.placed, self.keys, self.catalog, self.staging
        )
        self.reader = ChunkReader("t", self.placed, self.keys, self.catalog)

    def holders(self, chunk_id: str) -> list[str]:
        key = chunk_key("t", chunk_id)
        return [m.name for m in self.memory if any(i.key == key for i in m.list("t/"))]


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.service.close()
    r.catalog.close()


def test_replicas_go_to_the_top_ranked_distinct_peers(rig):
    data = b"some chunk" * 1000
    stored = rig.service.store_chunk(data)
    assert stored.ok and stored.reason == "stored"
    expected = [p.name for p in choose(stored.chunk_id, rig.placed, 2)]
    assert sorted(stored.peers) == sorted(expected) == sorted(rig.holders(stored.chunk_id))
    assert rig.catalog.replicas(stored.chunk_id) == sorted(expected)
    # The object carries its own wrapped DEK: it opens without the catalog.
    peer = next(m for m in rig.memory if m.name == expected[0])
    key = chunk_key("t", stored.chunk_id)
    meta = parse_chunk_metadata(peer.stat(key).metadata)
    assert open_chunk(rig.keys, stored.chunk_id, peer.get(key), meta.wrapped_dek) == data


def test_a_failing_peer_is_replaced_by_the_next_ranked(rig):
    data = os.urandom(5000)
    chunk_id = rig.keys.chunk_id(data)
    first, second, third = (p.name for p in choose(chunk_id, rig.placed, 3))
    next(m for m in rig.memory if m.name == first).down = True
    stored = rig.service.store_chunk(data)
    assert stored.ok
    assert sorted(stored.peers) == sorted([second, third])  # where replicas really are
    assert sorted(rig.catalog.replicas(chunk_id)) == sorted([second, third])


def test_not_enough_peers_is_notok_with_a_reason(tmp_path):
    rig = Rig(tmp_path, n=3, replicas=2, min_replicas=2)
    for m in rig.memory[:2]:
        m.down = True
    stored = rig.service.store_chunk(b"x" * 100)
    assert not stored.ok
    assert "need 2" in stored.reason and "down" in stored.reason
    assert len(stored.peers) == 1
    rig.service.close()


def test_duplicates_are_not_sent_again(rig):
    data = os.urandom(10_000)
    first = rig.service.store_chunk(data)
    calls = sum(len(m.calls) for m in rig.memory)
    again = rig.service.store_chunk(data)
    assert again.reason == "deduplicated" and again.chunk_id == first.chunk_id
    assert sum(len(m.calls) for m in rig.memory) == calls  # no request at all
    assert again.wrapped_dek == first.wrapped_dek


def test_re_replication_keeps_the_data_key(tmp_path):
    rig = Rig(tmp_path, n=3, replicas=2, min_replicas=2)
    data = os.urandom(3000)
    chunk_id = rig.keys.chunk_id(data)
    top = choose(chunk_id, rig.placed, 2)[0].name
    for m in rig.memory:
        if m.name != top:
            m.down = True
    partial = rig.service.store_chunk(data)
    assert not partial.ok and partial.peers == (top,)
    for m in rig.memory:
        m.down = False
    for p in rig.placed:
        p.peer.probe()  # the health tracker lets a probe through and marks them up
    healed = rig.service.store_chunk(data)
    assert healed.ok and len(healed.peers) == 2
    # The manifest-style copy from the first attempt still opens the stored bodies.
    for name in healed.peers:
        body = next(m for m in rig.memory if m.name == name).get(chunk_key("t", chunk_id))
        assert open_chunk(rig.keys, chunk_id, body, partial.wrapped_dek) == data
    rig.service.close()


def staged(rig, sizes: dict[str, int]) -> None:
    for cid, kib in sizes.items():
        rig.staging.put(cid, os.urandom(kib * 1024))


def req(request_id: str, chunks: dict[str, int]) -> UploadRequest:
    return UploadRequest(request_id, tuple(UploadChunk(c, s) for c, s in chunks.items()))


def test_the_seeds_upload_example(rig):
    staged(rig, {"c1": 120, "c2": 200, "c3": 610})
    response = rig.service.upload(req("1234", {"c1": 120, "c2": 999, "c3": 610}))
    assert [(c.id, c.send) for c in response.chunks] == [
        ("c1", "OK"),
        ("c2", "NOTOK"),
        ("c3", "OK"),
    ]
    assert "size mismatch" in response.chunks[1].reason
    # OK chunks are readable by their client id and leave staging; NOTOK ones stay staged.
    assert rig.staging.get("c1") is None and rig.staging.get("c2") is not None
    stored = rig.catalog.client_chunk("c3")
    api_reader = ChunkReader("t", rig.placed, rig.service.api_keys, rig.catalog)
    assert stored is not None and len(api_reader.read(stored)) == 610 * 1024


def test_upload_is_idempotent_per_request_id(rig):
    staged(rig, {"a": 1, "b": 2})
    first = rig.service.upload(req("r1", {"a": 1, "b": 2}))
    calls = sum(len(m.calls) for m in rig.memory)
    again = rig.service.upload(req("r1", {"a": 1, "b": 2}))
    assert again.replayed and [c.send for c in again.chunks] == [c.send for c in first.chunks]
    assert sum(len(m.calls) for m in rig.memory) == calls  # no new writes
    with pytest.raises(RequestConflict):
        rig.service.upload(req("r1", {"a": 1}))
    assert rig.service.request_detail("r1").chunks[0].peers


def test_unstaged_and_size_rules(rig):
    rig.staging.put("exact", b"x" * 1024)
    rig.staging.put("one-more", b"x" * 1025)
    rig.staging.put("empty", b"")
    response = rig.service.upload(req("sizes", {"exact": 1, "one-more": 2, "empty": 0, "ghost": 1}))
    assert [c.send for c in response.chunks] == ["OK", "OK", "OK", "NOTOK"]
    assert "not staged" in response.chunks[3].reason
    assert math.ceil(1025 / 1024) == 2


def test_reader_falls_back_and_reports_when_nothing_is_left(rig):
    data = os.urandom(4000)
    stored = rig.service.store_chunk(data)
    first = next(m for m in rig.memory if m.name == stored.peers[0])
    key = chunk_key("t", stored.chunk_id)
    body = bytearray(first.get(key))
    body[-1] ^= 1
    first.put(key, bytes(body), dict(first.stat(key).metadata))
    assert rig.reader.read(stored.chunk_id) == data  # the other replica
    for m in rig.memory:
        m.delete(key)
    with pytest.raises(ChunkUnavailable, match="no readable replica"):
        rig.reader.read(stored.chunk_id)


def test_a_recovered_peer_rejoins_after_its_cool_off(tmp_path):
    rig = Rig(tmp_path, n=2, replicas=2, min_replicas=1, down_seconds=0.3)
    rig.memory[1].down = True
    first = rig.service.store_chunk(os.urandom(1000))
    assert first.ok and first.peers == ("m0",)
    assert not rig.placed[1].peer.is_up
    rig.memory[1].down = False
    during = rig.service.store_chunk(os.urandom(1000))
    assert during.peers == ("m0",)  # still in its cool-off: not even tried
    time.sleep(0.35)
    after = rig.service.store_chunk(os.urandom(1000))
    assert sorted(after.peers) == ["m0", "m1"]  # the write was the probe; m1 is back
    assert rig.placed[1].peer.is_up
    rig.service.close()


# --- API chunks live in their own id-key domain (issue 8 item 7) ---------------------------


def test_api_chunks_never_share_an_id_or_object_with_file_chunks(rig):
    secret = os.urandom(20_000)
    file_chunk = rig.service.store_chunk(secret)  # what the watched tree's pipeline stored
    calls = [len(m.calls) for m in rig.memory]
    rig.staging.put("guess", secret)
    response = rig.service.upload(req("probe", {"guess": 20}))
    assert response.chunks[0].send == "OK" and response.chunks[0].reason == "stored"
    api_id = rig.catalog.client_chunk("guess")
    assert api_id == rig.service.api_keys.chunk_id(secret) != file_chunk.chunk_id
    # Two puts, two new objects (the API chunk's replicas): no dedup against the file.
    new_calls = [op for m, n in zip(rig.memory, calls, strict=True) for op in m.calls[n:]]
    assert new_calls == ["put", "put"]
    assert len(rig.holders(api_id)) == 2 and len(rig.holders(file_chunk.chunk_id)) == 2
    api_reader = ChunkReader("t", rig.placed, rig.service.api_keys, rig.catalog)
    assert api_reader.read(api_id) == secret
    with pytest.raises(ChunkUnavailable, match="does not match its id"):
        rig.reader.read(api_id)  # the file domain's reader refuses it


def test_the_api_answer_is_the_same_for_new_and_already_stored_content(rig):
    data = os.urandom(8000)
    rig.staging.put("first", data)
    first = rig.service.upload(req("r1", {"first": 8})).chunks[0]
    calls = sum(len(m.calls) for m in rig.memory)
    rig.staging.put("second", data)
    second = rig.service.upload(req("r2", {"second": 8})).chunks[0]
    assert sum(len(m.calls) for m in rig.memory) == calls  # deduplicated among API chunks
    assert (first.send, first.reason, first.peers) == (second.send, second.reason, second.peers)
    assert first.reason == "stored" and list(first.peers) == sorted(first.peers)
    assert rig.service.request_detail("r2").chunks[0].reason == "stored"


def test_a_put_failing_with_a_bug_waits_for_its_sibling_before_the_buffer_is_freed(rig):
    """The pipeline reuses a chunk's buffer as soon as storing it returns, so no replica
    may still be sending from it then, even when another replica's put raised a bug."""
    data = os.urandom(5000)
    first, second = (p.name for p in choose(rig.keys.chunk_id(data), rig.placed, 2))
    finished: list[float] = []
    real_put = next(m for m in rig.memory if m.name == second).put

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in a backend")

    def slow(key, body, metadata=None):
        time.sleep(0.3)
        info = real_put(key, body, metadata)
        finished.append(time.monotonic())
        return info

    next(m for m in rig.memory if m.name == first).put = broken
    next(m for m in rig.memory if m.name == second).put = slow
    with pytest.raises(RuntimeError, match="a bug"):
        rig.service.store_chunk(data)
    returned = time.monotonic()
    assert finished and finished[0] <= returned
