"""Manifest batches (chunkvault/journal.py): names, the JSON, sealing, the caps, the builder,
and the store against peers that lie (in memory here; over HTTP in
tests/integration/test_journal_peers.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import replace

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkvault import journal
from chunkvault.backends import MemoryPeer, wrap_peer
from chunkvault.config import TransferConfig
from chunkvault.crypto import vault_seal, writer_blob
from chunkvault.crypto.envelope import (
    BLOB_FLOOR,
    BLOB_OVERHEAD,
    EnvelopeError,
    open_blob,
    seal_blob,
    wrap_dek,
)
from chunkvault.crypto.material import SEALED_GENERATION, MasterKeys, TrustedWriter, WriterKeys
from chunkvault.crypto.padding import padded_size
from chunkvault.journal import (
    KIND,
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    MAX_BATCH_JSON,
    BatchBuilder,
    BatchEntry,
    JournalStore,
    batch_from_json,
    batch_prefix,
    new_batch_name,
    parse_batch_name,
)
from chunkvault.manifest import (
    ChunkRef,
    Manifest,
    ManifestError,
    new_manifest_name,
    parse_manifest_name,
    path_key,
)
from chunkvault.peerset import PlacedPeer

K = MasterKeys.generate(os.urandom(16))


def manifest(path: str, k: MasterKeys = K, packed: bool = True, chunks: int = 1) -> Manifest:
    refs = []
    for i in range(chunks):
        chunk_id = os.urandom(32).hex()
        location = ("9f" * 32, 5 + 1054 * i, 1054) if packed else ()
        refs.append(ChunkRef(chunk_id, 700, wrap_dek(k, chunk_id, os.urandom(32)), *location))
    return Manifest(path, 700 * chunks, 1_700_000_000_123_456_789, 0o100644, "ab" * 32, tuple(refs))


def entry(path: str, k: MasterKeys = K, **kw: object) -> BatchEntry:
    m = manifest(path, k, **kw)  # type: ignore[arg-type]
    return BatchEntry(new_manifest_name("home", k, m), m)


def entries(n: int, k: MasterKeys = K) -> list[BatchEntry]:
    return [entry(f"docs/file {i}.txt", k) for i in range(n)]


# -- names ------------------------------------------------------------------------------------


def test_batch_names_sort_by_whole_seconds_and_parse_strictly():
    before = time.time_ns() // 10**9 * 10**9
    name = new_batch_name("home")
    assert name.startswith(batch_prefix("home")) and batch_prefix("home") == "home/manifests/batch/"
    created, rand = name.removeprefix("home/manifests/batch/").split("-")
    assert before <= int(created) and int(created) % 10**9 == 0 and len(created) == 20
    assert len(rand) == 16 and new_batch_name("home") != name
    assert parse_batch_name("home", name) == name
    tail = name.removeprefix("home/manifests/batch/")
    for bad in [
        f"other/manifests/batch/{tail}",
        f"home/manifests/batch/{tail}\n",
        f"home/manifests/batch/{tail[1:]}",
        f"home/manifests/batch/{tail[:-1]}",
        f"home/manifests/batch/{tail.upper()}",
        f"home/manifests/batch/{tail}/x",
        f"home/manifests/{tail}",
        "home/manifests/batch/",
        entries(1)[0].name,
    ]:
        assert parse_batch_name("home", bad) is None, bad
    assert parse_manifest_name("home", name) is None  # never taken for a manifest object


# -- the JSON ---------------------------------------------------------------------------------


def test_the_batch_json_is_entries_of_manifest_fields_with_their_version_key():
    batch = [*entries(2), entry(os.fsdecode(b"caf\xe9.txt"), packed=False)]
    data = journal.batch_to_json("home", K, batch)
    obj = json.loads(data)
    assert list(obj) == ["v", "entries"] and obj["v"] == 1
    for item, e in zip(obj["entries"], batch, strict=True):
        assert item == {"version": e.name.rpartition("/")[2], **e.manifest.to_obj()}
    assert "path_b64" in obj["entries"][2] and len(obj["entries"][0]["chunks"][0]) == 6
    assert batch_from_json("home", K, data) == batch


def test_a_reader_rebuilds_each_name_from_the_entry_own_path():
    """A batch cannot make an entry claim another path's version name: only the version
    key is stored, the path key comes from the entry's path."""
    a, b = entries(2)
    obj = json.loads(journal.batch_to_json("home", K, [a]))
    obj["entries"][0]["path"] = b.manifest.path
    (read,) = batch_from_json("home", K, json.dumps(obj).encode())
    assert read.name.split("/")[2] == path_key(K, b.manifest.path) != a.name.split("/")[2]
    assert parse_manifest_name("home", read.name) is not None


@pytest.mark.parametrize(
    "bad",
    [
        [],  # no entry
        "dup",  # one name twice
        "other path",  # a name of another path
        "other vault",
        "not a name",
    ],
)
def test_writers_refuse_a_batch_no_reader_would_accept(bad):
    batch = entries(2)
    if bad == "dup":
        batch = [batch[0], batch[0]]
    elif bad == "other path":
        batch = [replace(batch[0], manifest=batch[1].manifest)]
    elif bad == "other vault":
        batch = [replace(batch[0], name=batch[0].name.replace("home/", "work/", 1))]
    elif bad == "not a name":
        batch = [replace(batch[0], name="home/manifests/x/y")]
    else:
        batch = bad
    with pytest.raises(ManifestError):
        journal.batch_to_json("home", K, batch)


def _batch_json(**changes: object) -> dict:
    obj = json.loads(journal.batch_to_json("home", K, entries(2)))
    return obj | changes


def _entry_json(**changes: object) -> dict:
    obj = _batch_json()
    obj["entries"][0] |= changes
    return obj


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "batch",
        {"v": 1},
        {"entries": []},
        _batch_json(v=2),
        _batch_json(v=True),
        _batch_json(v="1"),
        _batch_json(entries={}),
        _batch_json(entries=[[]]),
        _batch_json(entries=["x"]),
        _entry_json(version=None),
        _entry_json(version=17),
        _entry_json(version="0170000000000000000-0a0b0c0d"),  # 19 digits
        _entry_json(version="01700000000000000000-0a0b0c0"),
        _entry_json(version="01700000000000000000-0A0B0C0D"),
        _entry_json(version="01700000000000000000-0a0b0c0d\n"),
        _entry_json(version="../x/01700000000000000000-0a0b0c0d"),
        _entry_json(size=-1),
        _entry_json(chunks=[["cd" * 32, 700]]),
        _entry_json(chunks=[["cd" * 32, 700, "AQ==", "9f" * 32, 0, 10]]),
        _entry_json(path=7),
        _entry_json(v=3),
    ],
)
def test_bad_batch_json_is_a_manifest_error(obj):
    with pytest.raises(ManifestError):
        batch_from_json("home", K, json.dumps(obj).encode())


def test_duplicate_and_too_many_entries_are_manifest_errors(monkeypatch):
    obj = _batch_json()
    obj["entries"][1] = obj["entries"][0]
    with pytest.raises(ManifestError, match="twice"):
        batch_from_json("home", K, json.dumps(obj).encode())
    monkeypatch.setattr(journal, "MAX_BATCH_ENTRIES", 1)
    with pytest.raises(ManifestError, match="entries"):
        batch_from_json("home", K, json.dumps(_batch_json()).encode())


def test_pathological_batch_json_is_a_manifest_error():
    for data in [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b"1e999999", b"", b"9" * 5000]:
        with pytest.raises(ManifestError):
            batch_from_json("home", K, data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["version", "v", "path", "path_b64", "size", "mtime_ns", "mode",
                         "sha256", "deleted", "created_ns", "chunks"]),
        json_values,
    ),
    json_values,
)  # fmt: skip
def test_batch_from_json_raises_only_manifest_error(changes, top):
    for obj in (_entry_json(**changes), _batch_json(v=top), _batch_json(entries=top), top):
        with contextlib.suppress(ManifestError):
            batch_from_json("home", K, json.dumps(obj).encode())


# -- sealing ----------------------------------------------------------------------------------


def test_a_batch_opens_only_as_a_batch_under_its_own_name():
    store = store_with(mem_peers())
    name = new_batch_name("home")
    batch = entries(3)
    body = store.seal(name, batch)
    assert b"docs" not in body and b"file" not in body
    assert store.open(name, body) == batch
    with pytest.raises(EnvelopeError):
        store.open(new_batch_name("home"), body)  # moved
    with pytest.raises(EnvelopeError):
        open_blob(K, "manifest", name, body)  # never a manifest
    manifest_blob = seal_blob(K, "manifest", name, journal.batch_to_json("home", K, batch))
    with pytest.raises(EnvelopeError):
        store.open(name, manifest_blob)  # a manifest never opens as a batch


def test_the_caps_agree_a_batch_under_the_json_cap_always_seals_under_the_bytes_cap():
    # zstd's documented bound (ZSTD_COMPRESSBOUND), checked on incompressible input.
    def bound(n: int) -> int:
        return n + (n >> 8) + ((128 * 1024 - n) >> 11 if n < 128 * 1024 else 0)

    sample = os.urandom(1 << 20)
    assert len(zstandard.ZstdCompressor(level=3, write_content_size=True).compress(sample)) <= (
        bound(len(sample)) + 18  # frame header and checksum room
    )
    worst = BLOB_OVERHEAD + padded_size(bound(MAX_BATCH_JSON) + 18, BLOB_FLOOR)
    assert worst <= MAX_BATCH_BYTES
    # Typical: 10,000 small files, one packed chunk each, is a few MB.
    batch = entries(MAX_BATCH_ENTRIES)
    size = len(journal.batch_to_json("home", K, batch))
    assert 2 * 2**20 < size < 6 * 2**20
    assert len(store_with(mem_peers()).seal(new_batch_name("home"), batch)) < 4 * 2**20


# -- the builder ------------------------------------------------------------------------------


def test_the_builder_counts_exactly_the_json_it_will_seal():
    builder = BatchBuilder()
    assert len(builder) == 0 and builder.json_size == len(b'{"v":1,"entries":[]}')
    for e in [*entries(5), entry(os.fsdecode(b"\xff.bin"), chunks=3)]:
        assert builder.add(e)
        assert builder.json_size == len(journal.batch_to_json("home", K, builder.entries))
    assert len(builder) == 6


def test_the_builder_cuts_at_the_entry_cap(monkeypatch):
    monkeypatch.setattr(journal, "MAX_BATCH_ENTRIES", 3)
    builder = BatchBuilder()
    batch = entries(4)
    assert [builder.add(e) for e in batch] == [True, True, True, False]
    assert builder.entries == batch[:3]


def test_the_builder_cuts_at_the_json_cap_but_takes_a_first_entry_that_fits(monkeypatch):
    batch = entries(3)
    one = len(journal.batch_to_json("home", K, batch[:1]))
    monkeypatch.setattr(journal, "MAX_BATCH_JSON", one + 10)
    builder = BatchBuilder()
    assert builder.add(batch[0]) and not builder.add(batch[1])
    assert builder.entries == batch[:1] and builder.json_size == one
    fresh = BatchBuilder()
    assert fresh.add(batch[1])


def test_one_manifest_over_the_caps_is_refused_with_advice(monkeypatch):
    big = entry("huge.iso", chunks=50)
    monkeypatch.setattr(journal, "MAX_BATCH_JSON", 2000)
    builder = BatchBuilder()
    assert builder.add(entry("small"))
    with pytest.raises(ManifestError, match="50 chunks") as err:
        builder.add(big)  # would not fit alone either: no point cutting first
    assert "chunking.avg_size" in str(err.value)
    with pytest.raises(ManifestError, match=r"chunking\.avg_size"):
        store_with(mem_peers()).write([big])


def test_the_builder_refuses_a_name_twice():
    builder = BatchBuilder()
    e = entry("a")
    assert builder.add(e)
    with pytest.raises(ManifestError, match="already"):
        builder.add(e)


# -- the store: hostile peers -----------------------------------------------------------------


def mem_peers() -> list[MemoryPeer]:
    return [MemoryPeer(f"p{i}") for i in range(3)]


def store_with(mems: list[MemoryPeer], k: MasterKeys = K, minimum: int = 1) -> JournalStore:
    placed = [PlacedPeer(wrap_peer(m, TransferConfig(retries=0)), 1.0, None) for m in mems]
    return JournalStore("home", k, placed, replicas=2, minimum=minimum)


def holders_of(name: str, mems: list[MemoryPeer]) -> list[MemoryPeer]:
    return [m for m in mems if name in m._objects]


def test_write_puts_one_object_on_r_peers_and_reads_back():
    mems = mem_peers()
    store = store_with(mems)
    batch = entries(50)
    name, written = store.write(batch)
    assert parse_batch_name("home", name) == name
    assert sorted(written) == sorted(m.name for m in holders_of(name, mems)) and len(written) == 2
    assert [p.name for p in store._ranked(name)][:2] == written
    assert sum(len(m._objects) for m in mems) == 2  # 50 versions: two objects in all
    assert list(store.names()) == [(name, sorted(written))]
    assert store.read(name) == batch
    body, read = store.fetch(name, written)
    assert read == batch and body == mems[int(written[0][1])]._objects[name].body


def test_write_walks_past_a_failed_peer_and_fails_below_minimum():
    mems = mem_peers()
    store = store_with(mems, minimum=2)
    name = new_batch_name("home")
    first = store._ranked(name)[0].name
    mems[int(first[1])].down = True
    _, written = store.write(entries(2), name)
    assert first not in written and len(written) == 2
    for m in mems:
        m.down = True
    with pytest.raises(ManifestError, match="stored on 0 peer"):
        store.write(entries(2))


def test_names_skip_foreign_keys_with_one_warning_per_peer_and_manifests_silently(caplog):
    mems = mem_peers()
    store = store_with(mems)
    name, _ = store.write(entries(1))
    for junk in ["home/manifests/batch/x", "home/manifests/batch/.evil",
                 f"{name}.tmp", f"{name}/x"]:  # fmt: skip
        mems[1].plant(junk, b"junk")
    mems[2].plant(entries(1)[0].name, b"a manifest object")  # not under batch/: not listed
    with caplog.at_level(logging.WARNING, "chunkvault"):
        names = list(store.names())
    assert [n for n, _ in names] == [name]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("p1" in w for w in warnings), warnings
    assert "not a manifest batch name" in warnings[1]  # and invalid object keys, in [0]


def test_an_unlistable_peer_is_warned_about_and_reported(caplog):
    mems = mem_peers()
    store = store_with(mems)
    names = sorted(store.write(entries(1))[0] for _ in range(4))
    mems[0].down = True
    unlisted: list[str] = []
    with caplog.at_level(logging.WARNING, "chunkvault"):
        found = dict(store.names(unlisted))
    assert unlisted == ["p0"] and set(found) <= set(names)
    assert all("p0" not in h for h in found.values())
    assert any("cannot list manifest batches on p0" in r.getMessage() for r in caplog.records)


def _crafted(k: MasterKeys, name: str, good: list[BatchEntry]) -> list[bytes]:
    """Bodies a peer may serve for ``name``: each is that peer's bad copy."""
    raw = journal.batch_to_json("home", k, good)
    dup = json.loads(raw)
    dup["entries"].append(dup["entries"][0])
    bad_version = json.loads(raw)
    bad_version["entries"][0]["version"] = "x"
    bad_field = json.loads(raw)
    bad_field["entries"][0]["chunks"] = [["cd" * 32, 700, "AQ==", "9f" * 32, 0, 10]]
    many = {"v": 1, "entries": [json.loads(raw)["entries"][0]] * (MAX_BATCH_ENTRIES + 1)}
    return [
        os.urandom(700),  # not a blob
        b"",
        b"\x02" + bytes(200),
        seal_blob(k, "manifest", name, raw),  # wrong kind
        seal_blob(k, KIND, new_batch_name("home"), raw),  # another batch's
        seal_blob(k, KIND, name, b"{not json"),
        seal_blob(k, KIND, name, json.dumps({"v": 9, "entries": []}).encode()),
        seal_blob(k, KIND, name, json.dumps(dup).encode()),
        seal_blob(k, KIND, name, json.dumps(bad_version).encode()),
        seal_blob(k, KIND, name, json.dumps(bad_field).encode()),
        seal_blob(k, KIND, name, json.dumps(many).encode()),
        seal_blob(k, KIND, name, b"[" * 100_000),
    ]


def test_a_crafted_copy_is_that_peer_error_warned_once_and_the_next_holder_serves(caplog):
    mems = mem_peers()
    store = store_with(mems)
    written = []
    for _ in range(12):
        batch = entries(2)
        written.append((store.write(batch)[0], batch))
    liars = set()
    for i, (name, batch) in enumerate(written):
        ranked = [p.name for p in store._ranked(name)]
        first = min(holders_of(name, mems), key=lambda m: ranked.index(m.name))
        liars.add(first.name)
        first.plant(name, _crafted(K, name, batch)[i])
    with caplog.at_level(logging.WARNING, "chunkvault"):
        for name, batch in written:
            assert store.read(name) == batch
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == len(liars), warned  # once per peer, not per batch
    assert all("bad copy" in w for w in warned)


@pytest.mark.parametrize("index", range(12))
def test_each_crafted_body_is_a_manifest_error_when_every_copy_is_bad(index):
    mems = mem_peers()
    store = store_with(mems)
    batch = entries(2)
    name, _ = store.write(batch)
    body = _crafted(K, name, batch)[index]
    for m in mems:
        m.plant(name, body)
    with pytest.raises(ManifestError, match="no readable copy of manifest batch"):
        store.read(name)


def test_an_oversized_copy_is_not_taken(monkeypatch, caplog):
    mems = mem_peers()
    store = store_with(mems)
    batch = entries(2)
    name, written = store.write(batch)
    monkeypatch.setattr(journal, "MAX_BATCH_BYTES", 8000)
    best = mems[int(store._ranked(name)[0].name[1])]
    best.plant(name, b"x" * 8001)
    with caplog.at_level(logging.WARNING, "chunkvault"):
        assert store.read(name, written) == batch
    assert any("bad copy" in r.getMessage() for r in caplog.records)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(st.binary(max_size=300), min_size=3, max_size=3))
def test_read_raises_only_manifest_error_whatever_peers_serve(bodies):
    mems = mem_peers()
    store = store_with(mems)
    name = new_batch_name("home")
    for mem, body in zip(mems, bodies, strict=True):
        mem.plant(name, body)
    with pytest.raises(ManifestError, match="no readable copy"):
        store.read(name)


def test_read_refuses_a_name_that_is_not_a_batch_name():
    store = store_with(mem_peers())
    with pytest.raises(ManifestError, match="not a manifest batch name"):
        store.read(entries(1)[0].name)


def test_rewrite_replaces_exactly_the_given_holders_and_delete_removes_all():
    mems = mem_peers()
    store = store_with(mems)
    batch = entries(3)
    name, written = store.write(batch)
    before = {m.name: m._objects[name].body for m in holders_of(name, mems)}
    store.rewrite(name, batch[1:], [written[0]])  # purge dropped the first path
    assert store.read(name, [written[0]]) == batch[1:]
    after = {m.name: m._objects[name].body for m in holders_of(name, mems)}
    assert after[written[1]] == before[written[1]] and after[written[0]] != before[written[0]]
    assert sorted(after) == sorted(written)  # no new holder
    mems[int(written[1][1])].down = True
    with pytest.raises(ManifestError, match=written[1]):
        store.rewrite(name, batch, written)
    with pytest.raises(ManifestError, match="at least one entry"):
        store.rewrite(name, [], written)
    mems[int(written[1][1])].down = False
    store.delete(name)
    assert holders_of(name, mems) == []


# -- a write-only host's batches (writer blobs, issue 14) ------------------------------------


def _owner_and_writer(revoked: int | None = None) -> tuple[MasterKeys, WriterKeys]:
    private, public = vault_seal.new_key_pair()
    owner = MasterKeys.generate(os.urandom(16))
    owner.vault_private = private
    writer_key = os.urandom(32)
    owner.writers = {"0badc0de": TrustedWriter(writer_key, revoked)}
    writer = WriterKeys(owner.vault_uuid, os.urandom(32), {}, SEALED_GENERATION, seal_to=public,
                        writer_id="0badc0de", writer_key=writer_key)  # fmt: skip
    return owner, writer


def _writer_entries(writer: WriterKeys, n: int) -> list[BatchEntry]:
    out = []
    for i in range(n):
        chunk_id = os.urandom(32).hex()
        ref = ChunkRef(chunk_id, 700, wrap_dek(writer, chunk_id, os.urandom(32)))
        m = Manifest(f"w/{i}.txt", 700, 1_700_000_000_000_000_000, 0o100644, "ab" * 32, (ref,),
                     writer=writer.writer_id)  # fmt: skip
        out.append(BatchEntry(new_manifest_name("home", writer, m), m))
    return out


def test_a_writer_batch_opens_with_the_owner_keys_only_and_never_on_the_writer():
    owner, writer = _owner_and_writer()
    mems = mem_peers()
    written = _writer_entries(writer, 3)
    name, holders = store_with(mems, writer).write(written)
    body = holders_of(name, mems)[0]._objects[name].body
    assert writer_blob.writer_of(body) == "0badc0de"
    assert all(vault_seal.is_sealed_dek(c.wrapped_dek) for e in written for c in e.manifest.chunks)
    # The owner reads it (its names rebuilt under its own id key), the same manifests.
    read = store_with(mems, owner).read(name)
    assert [e.manifest for e in read] == [e.manifest for e in written]
    # The writer cannot open it, and checks its own copies by their MAC only.
    with pytest.raises(ManifestError):
        store_with(mems, writer).read(name)
    store = store_with(mems, writer)
    placed = store.peers[int(holders[0][1])].peer
    assert store.read_copy(name, placed) == body
    mems[int(holders[0][1])].put(name, body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(EnvelopeError, match="failed authentication"):
        store.read_copy(name, placed)


def test_a_writer_batch_is_refused_from_its_writer_revocation_on_and_from_a_stranger():
    owner, writer = _owner_and_writer()
    payload_name = new_batch_name("home")
    dated = journal.batch_time_ns(payload_name)
    assert abs(dated - time.time_ns()) < 2 * 10**9
    body = JournalStore("home", writer, [], 2, 1).seal(payload_name, _writer_entries(writer, 1))
    assert JournalStore("home", owner, [], 2, 1).open(payload_name, body)
    later = dated + 10**9
    owner.writers["0badc0de"] = TrustedWriter(owner.writers["0badc0de"].key, later)
    assert JournalStore("home", owner, [], 2, 1).open(payload_name, body)  # dated before
    owner.writers["0badc0de"] = TrustedWriter(owner.writers["0badc0de"].key, dated)
    with pytest.raises(EnvelopeError, match="does not trust"):
        JournalStore("home", owner, [], 2, 1).open(payload_name, body)
    owner.writers = {}
    with pytest.raises(EnvelopeError, match="does not trust"):
        JournalStore("home", owner, [], 2, 1).open(payload_name, body)
    # A keyring without the vault key opens no writer blob.
    owner.vault_private = None
    with pytest.raises(EnvelopeError, match="sealed to the vault key"):
        JournalStore("home", owner, [], 2, 1).open(payload_name, body)


def test_a_writer_batch_holding_a_version_it_does_not_sign_as_its_own_is_refused():
    # Each version says which host stored it (the owner's scans leave other hosts' files
    # alone): a writer cannot pass one off as the owner's, or as another writer's.
    owner, writer = _owner_and_writer()
    name = new_batch_name("home")
    for claimed in (None, "ffffffff"):
        entries = [BatchEntry(e.name, replace(e.manifest, writer=claimed))
                   for e in _writer_entries(writer, 2)]  # fmt: skip
        body = JournalStore("home", writer, [], 2, 1).seal(name, entries)
        with pytest.raises(ManifestError, match="does not sign as its own"):
            JournalStore("home", owner, [], 2, 1).open(name, body)
