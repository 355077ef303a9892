"""ChunkReader against memory peers that serve oversized, forged or damaged replicas."""

from __future__ import annotations

import logging
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkvault import shortfall
from chunkvault.backends import MalformedReply, MemoryPeer, wrap_peer
from chunkvault.catalog import Catalog, ChunkRow, PackRow
from chunkvault.config import TransferConfig
from chunkvault.crypto.envelope import seal_chunk, sealed_size_limit
from chunkvault.crypto.material import MasterKeys
from chunkvault.layout import chunk_key, chunk_metadata, pack_key
from chunkvault.packs import HEADER
from chunkvault.peerset import PlacedPeer
from chunkvault.reading import ChunkReader, ChunkUnavailable

VAULT = "home"
K = MasterKeys.generate(os.urandom(16))


def reader_over(mems: list[MemoryPeer], catalog: Catalog | None = None, **kw: int) -> ChunkReader:
    placed = [PlacedPeer(wrap_peer(m, TransferConfig(retries=0)), 1.0, None) for m in mems]
    return ChunkReader(VAULT, placed, K, catalog, **kw)


def store(mems: list[MemoryPeer], plaintext: bytes) -> tuple[str, bytes]:
    """Seal ``plaintext`` and put it on every peer; (chunk id, wrapped DEK)."""
    sealed = seal_chunk(K, plaintext, compress=False)
    for mem in mems:
        mem.put(chunk_key(VAULT, sealed.chunk_id), sealed.body, chunk_metadata(sealed))
    return sealed.chunk_id, sealed.wrapped_dek


def ranked_first(reader: ChunkReader, chunk_id: str, mems: list[MemoryPeer]) -> MemoryPeer:
    first = reader._order(chunk_id)[0].name
    return next(m for m in mems if m.name == first)


def test_an_oversized_replica_is_refused_at_the_plaintext_size_and_another_is_read(caplog):
    mems = [MemoryPeer(f"p{i}") for i in range(3)]
    reader = reader_over(mems)
    plaintexts = [os.urandom(1000 + i) for i in range(6)]
    liars = set()
    with caplog.at_level(logging.WARNING, "chunkvault"):
        for data in plaintexts:
            chunk_id, _ = store(mems, data)
            # The replica the reader will ask first lies (planted just before the read:
            # which one that is depends on what earlier reads taught the reader).
            liar = ranked_first(reader, chunk_id, mems)
            liars.add(liar.name)
            # One byte more than any sealing of 1000+i bytes can be.
            liar.plant(chunk_key(VAULT, chunk_id), bytes(sealed_size_limit(len(data)) + 1))
            # No DEK given: the good replica's own metadata supplies it (one stat).
            assert reader.read(K.chunk_id(data), plain_size=len(data)) == data
    assert len(liars) < len(plaintexts)  # some liar was asked twice
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(liars), warned  # once per peer, not once per chunk
    assert all("more than the" in w for w in warned)


def test_the_cap_comes_from_the_catalog_else_from_the_largest_chunk(tmp_path):
    mems = [MemoryPeer("p0")]
    data = os.urandom(3000)
    chunk_id, wrapped = store(mems, data)
    body_size = len(mems[0].get(chunk_key(VAULT, chunk_id)))
    # Unknown size: the largest chunk the config allows bounds the read.
    with pytest.raises(ChunkUnavailable, match="more than the"):
        reader_over(mems, max_chunk_size=100).read(chunk_id, [wrapped])
    assert reader_over(mems, max_chunk_size=3000).read(chunk_id, [wrapped]) == data
    # Known size (the catalog's, from our own writes or authenticated manifests) wins.
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        catalog.record_chunk(ChunkRow(chunk_id, 3000, body_size, wrapped, 1, ""), ["p0"])
        assert reader_over(mems, catalog, max_chunk_size=100).read(chunk_id) == data
        mems[0].plant(chunk_key(VAULT, chunk_id), bytes(sealed_size_limit(3000) + 1))
        with pytest.raises(ChunkUnavailable, match="more than the"):
            reader_over(mems, catalog, max_chunk_size=10**9).read(chunk_id)
    finally:
        catalog.close()


def test_a_malformed_reply_is_a_chunk_unavailable_naming_the_peer():
    mem = MemoryPeer("p0")
    chunk_id, wrapped = store([mem], b"x" * 500)
    mem.fail_next(1, MalformedReply, ops={"get"})
    with pytest.raises(ChunkUnavailable, match="p0: get: injected"):
        reader_over([mem]).read(chunk_id, [wrapped], plain_size=500)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(st.binary(max_size=600), min_size=3, max_size=3),
    metadata=st.dictionaries(
        st.sampled_from(["cv-v", "cv-dek", "cv-gen", "cv-sha256"]),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=90),
    ),
)
def test_read_raises_only_chunk_unavailable_whatever_peers_serve(bodies, metadata):
    mems = [MemoryPeer(f"p{i}") for i in range(3)]
    data = b"the real chunk" * 30
    chunk_id = K.chunk_id(data)
    for mem, body in zip(mems, bodies, strict=True):
        mem.put(chunk_key(VAULT, chunk_id), body, metadata)
    with pytest.raises(ChunkUnavailable):
        reader_over(mems).read(chunk_id, plain_size=len(data))
    with pytest.raises(ChunkUnavailable):
        reader_over(mems).read_into(chunk_id, bytearray(2000), [], len(data))


def test_read_into_opens_the_chunk_in_the_callers_buffer():
    mems = [MemoryPeer("p0")]
    data = os.urandom(5000)
    chunk_id, wrapped = store(mems, data)
    slab = bytearray(sealed_size_limit(len(data)) + 10)
    plain = reader_over(mems).read_into(chunk_id, slab, [wrapped], len(data))
    assert plain == data and plain.obj is slab
    with pytest.raises(ValueError, match="cannot hold"):
        reader_over(mems).read_into(chunk_id, bytearray(100), [wrapped], len(data))


def test_a_stale_first_key_spends_the_body_and_the_next_key_opens_it_read_again(tmp_path):
    """The catalog's key (tried first) is of an older sealing of the same chunk: it unwraps
    but does not open the body, and in-place decryption spends the body. The reader reads
    it again before the manifest's key, which opens it; no stat is needed."""
    mems = [MemoryPeer("p0")]
    data = os.urandom(20_000)
    chunk_id, fresh = store(mems, data)
    stale = seal_chunk(K, data, compress=False)
    assert stale.chunk_id == chunk_id and stale.wrapped_dek != fresh
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        body_size = len(mems[0].get(chunk_key(VAULT, chunk_id)))
        catalog.record_chunk(
            ChunkRow(chunk_id, len(data), body_size, stale.wrapped_dek, 1, ""), ["p0"]
        )
        mems[0].calls.clear()
        slab = bytearray(sealed_size_limit(len(data)))
        plain = reader_over(mems, catalog).read_into(chunk_id, slab, [fresh], len(data))
        assert plain == data and plain.obj is slab
        assert mems[0].calls == ["get", "get"]
        # Only the object's own metadata holds the right key: one stat, one more read.
        mems[0].calls.clear()
        assert reader_over(mems, catalog).read(chunk_id, [stale.wrapped_dek]) == data
        assert mems[0].calls == ["get", "stat", "get"]
    finally:
        catalog.close()


def test_a_span_body_opens_with_the_manifest_key_and_asks_the_catalog_only_if_that_fails(
    tmp_path,
) -> None:
    """A body read in a span was placed there by the manifest that names it: its key comes
    first (the catalog may hold an older sealing's, which would spend the body in place).
    A manifest key that does not open for this chunk falls back to the catalog's."""
    data = os.urandom(5000)
    fresh, stale = seal_chunk(K, data, compress=False), seal_chunk(K, data, compress=False)
    other = seal_chunk(K, os.urandom(5000), compress=False)  # another chunk's wrapping
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        reader = reader_over([MemoryPeer("p0")], catalog)

        def open_span(body: bytes, deks: list[bytes]):
            view = memoryview(bytearray(body))
            return reader.open_in_span(fresh.chunk_id, view, deks, len(data), "p0")

        row = ChunkRow(fresh.chunk_id, len(data), len(fresh.body), stale.wrapped_dek, 1, "")
        catalog.record_chunk(row, ["p0"])
        assert bytes(open_span(fresh.body, [fresh.wrapped_dek])) == data
        assert bytes(open_span(stale.body, [other.wrapped_dek])) == data  # the catalog's
        assert open_span(fresh.body, [other.wrapped_dek]) is None  # no key opens it
    finally:
        catalog.close()


def test_a_body_that_no_key_opens_is_damaged_on_that_peer_and_another_replica_is_read(caplog):
    mems = [MemoryPeer(f"p{i}") for i in range(2)]
    reader = reader_over(mems)
    data = os.urandom(3000)
    chunk_id, wrapped = store(mems, data)
    # Same id, under a key nobody recorded, with the metadata (key) of the real replica.
    forged = seal_chunk(K, data, compress=False)
    first = ranked_first(reader, chunk_id, mems)
    key = chunk_key(VAULT, chunk_id)
    first.put(key, forged.body, first.stat(key).metadata)
    with caplog.at_level(logging.WARNING, "chunkvault"):
        plain = reader.read_into(chunk_id, bytearray(sealed_size_limit(3000)), [wrapped], 3000)
    assert plain == data
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(
        f"chunk {chunk_id[:12]} on {first.name} is damaged: chunk {chunk_id[:16]}: "
        "ciphertext failed authentication"
    )
    # The known key, the stat (same key: not tried again, nor the body read again).
    assert first.calls[-2:] == ["get", "stat"]


def test_the_unavailable_hint_promises_no_command_that_does_not_exist() -> None:
    from chunkvault.cli.main import COMMANDS

    mems = [MemoryPeer("p0")]
    with pytest.raises(ChunkUnavailable) as err:
        reader_over(mems).read("ab" * 32, plain_size=10)
    hint = err.value.hint or ""
    assert "peers list" in hint  # what works today
    for planned in ("check", "repair"):
        if planned not in COMMANDS and re.search(rf"\b{planned}\b", hint):
            assert "planned" in hint, hint


def test_a_missing_or_damaged_copy_where_the_catalog_places_it_is_noted_short(tmp_path):
    mems = [MemoryPeer(f"p{i}") for i in range(3)]
    data = os.urandom(3000)
    chunk_id, wrapped = store(mems[:2], data)
    body = mems[0].get(chunk_key(VAULT, chunk_id))
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        catalog.record_chunk(ChunkRow(chunk_id, 3000, len(body), wrapped, 1, ""), ["p0", "p1"])
        reader = reader_over(mems, catalog)
        first = ranked_first(reader, chunk_id, mems)
        first.plant(chunk_key(VAULT, chunk_id), body[:-1] + bytes([body[-1] ^ 1]))
        assert reader.read(chunk_id) == data  # read around it
        assert catalog.replicas(chunk_id) == sorted({"p0", "p1"} - {first.name})
        (short,) = shortfall.noted(catalog)
        assert (short.key, short.target) == (chunk_key(VAULT, chunk_id), 2)
    finally:
        catalog.close()


def test_a_packed_chunk_read_without_its_place_notes_nothing(tmp_path):
    """Asked for a chunk without its place, the reader tries a chunk object first, which a
    packed chunk does not have: that is no missing copy."""
    mems = [MemoryPeer(f"p{i}") for i in range(2)]
    data = os.urandom(2000)
    sealed = seal_chunk(K, data, compress=False)
    pack_id = "ab" * 32
    pack = HEADER + sealed.body
    for mem in mems:
        mem.put(pack_key(VAULT, pack_id), pack, {})
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        row = ChunkRow(sealed.chunk_id, 2000, len(sealed.body), sealed.wrapped_dek, 1, "",
                       pack=pack_id, pack_offset=len(HEADER))  # fmt: skip
        catalog.record_pack(PackRow(pack_id, len(pack), ""), [row], ["p0", "p1"])
        assert reader_over(mems, catalog).read(sealed.chunk_id) == data
        assert catalog.replicas(sealed.chunk_id) == ["p0", "p1"]
        assert shortfall.noted(catalog) == []
    finally:
        catalog.close()
