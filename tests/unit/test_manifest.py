import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkvault.backends import MemoryPeer, wrap_peer
from chunkvault.config import TransferConfig
from chunkvault.crypto.envelope import (
    EnvelopeError,
    blob_generation,
    open_blob,
    seal_blob,
    wrap_dek,
)
from chunkvault.crypto.material import MasterKeys
from chunkvault.manifest import (
    KIND,
    ChunkRef,
    Manifest,
    ManifestError,
    ManifestName,
    ManifestStore,
    new_manifest_name,
    parse_manifest_name,
    path_key,
)
from chunkvault.peerset import PlacedPeer


def keys() -> MasterKeys:
    return MasterKeys.generate(os.urandom(16))


K = keys()


def sample(k: MasterKeys) -> Manifest:
    return Manifest(
        path="photos/2024/holiday café.jpg",
        size=123,
        mtime_ns=1_700_000_000_123_456_789,
        mode=0o100644,
        sha256="ab" * 32,
        chunks=(
            ChunkRef("cd" * 32, 100, wrap_dek(k, "cd" * 32, os.urandom(32))),
            ChunkRef("ef" * 32, 23, wrap_dek(k, "ef" * 32, os.urandom(32))),
        ),
    )


def test_json_round_trip():
    m = sample(keys())
    assert Manifest.from_json(m.to_json()) == m


def test_names_are_opaque_and_stable_per_path():
    k = keys()
    m = sample(k)
    name = new_manifest_name("home", k, m)
    assert name.startswith(f"home/manifests/{path_key(k, m.path)}/")
    assert "photos" not in name and "holiday" not in name
    assert path_key(k, m.path) == path_key(k, m.path) != path_key(keys(), m.path)
    assert new_manifest_name("home", k, m) != name  # versions never collide


def test_sealed_manifest_hides_the_path_and_detects_tampering():
    k = keys()
    m = sample(k)
    blob = seal_blob(k, KIND, "n1", m.to_json())
    assert b"photos" not in blob and "café".encode() not in blob
    assert blob_generation(blob) == 1
    assert Manifest.from_json(open_blob(k, KIND, "n1", blob)) == m
    with pytest.raises(EnvelopeError):
        open_blob(k, KIND, "n2", blob)  # moved to another name
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    with pytest.raises(EnvelopeError):
        open_blob(k, KIND, "n1", bytes(tampered))


def test_rewrapped_changes_only_the_wrapping():
    k = keys()
    from chunkvault.crypto.envelope import seal_chunk

    sealed = seal_chunk(k, b"payload" * 100)
    m = Manifest(
        "f", 700, 0, 0o100600, "00" * 32, (ChunkRef(sealed.chunk_id, 700, sealed.wrapped_dek),)
    )
    gen = k.add_generation()
    again = m.rewrapped(k, gen)
    assert again.chunks[0].wrapped_dek != m.chunks[0].wrapped_dek
    assert (again.path, again.size, again.sha256) == (m.path, m.size, m.sha256)


def test_a_utf8_path_is_written_as_format_1_exactly_as_before():
    m = sample(keys())
    obj = json.loads(m.to_json())
    assert (obj["v"], obj["path"]) == (1, "photos/2024/holiday café.jpg")
    assert "path_b64" not in obj
    # What older versions wrote (format 1, "path") reads as it always did.
    assert Manifest.from_json(m.to_json()).path == m.path


@given(st.binary(min_size=1, max_size=300))
@settings(max_examples=50)
def test_any_path_bytes_round_trip_through_the_manifest(raw):
    m = replace(sample(K), path=os.fsdecode(raw))
    obj = json.loads(m.to_json())
    assert Manifest.from_json(m.to_json()) == m
    assert os.fsencode(Manifest.from_json(m.to_json()).path) == raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8: format 2 with the bytes, never a "path"
        assert obj["v"] == 2 and "path" not in obj
        assert base64.b64decode(obj["path_b64"]) == raw
    else:
        assert obj["v"] == 1 and "path_b64" not in obj


def test_path_keys_hash_the_name_bytes_so_utf8_names_keep_theirs():
    k = keys()
    utf8 = "photos/café.jpg"
    old_key = hmac.new(k.id_key, b"path\0" + utf8.encode(), hashlib.sha256).hexdigest()[:32]
    assert path_key(k, utf8) == old_key  # what every existing vault's names use
    latin = os.fsdecode(b"photos/caf\xe9.jpg")
    raw_key = hmac.new(k.id_key, b"path\0photos/caf\xe9.jpg", hashlib.sha256).hexdigest()[:32]
    assert path_key(k, latin) == raw_key != old_key


@pytest.mark.parametrize(
    "body",
    [
        {"v": 1, "path_b64": "YQ=="},  # format 1 has no path_b64
        {"v": 2, "path": "a", "path_b64": "YQ=="},  # both
        {"v": 2, "path_b64": "not base64!"},
        {"v": 2, "path_b64": 7},
        {"v": 2},
        {"v": True, "path": "a"},
    ],
)
def test_bad_path_fields_are_manifest_errors(body):
    obj = json.loads(sample(K).to_json())
    del obj["path"]
    with pytest.raises(ManifestError):
        Manifest.from_json(json.dumps(obj | body).encode())


def test_malformed_manifest_json():
    with pytest.raises(ManifestError):
        Manifest.from_json(b"{}")
    with pytest.raises(ManifestError, match="format"):
        Manifest.from_json(b'{"v": 9}')


# -- names ------------------------------------------------------------------------------------


def test_manifest_names_parse_strictly():
    k = keys()
    m = sample(k)
    name = new_manifest_name("home", k, m)
    parsed = parse_manifest_name("home", name)
    assert parsed == ManifestName(name, path_key(k, m.path), m.created_ns // 10**9 * 10**9)
    good_tail = name.removeprefix("home/manifests/")
    path, version = good_tail.split("/")
    for bad in [
        f"other/manifests/{good_tail}",  # another vault
        f"home/manifests/{good_tail}/x",  # one segment too many
        f"home/manifests/{path}",
        f"home/manifests/{path.upper()}/{version}",
        f"home/manifests/{path}/{version[1:]}",  # 19 digits
        f"home/manifests/{path}/{version[:-1]}",
        f"home/manifests/{path}/{version}\n",
        f"home/manifests/{path[:-1]}/{version}",
        "home/manifests/.evil",
        "home/manifests/zz",
        "home/manifests/",
        "home/keyring",
    ]:
        assert parse_manifest_name("home", bad) is None, bad


# -- a manifest's JSON: only ManifestError, whatever it holds -------------------------------------


def _json(k: MasterKeys, **changes: object) -> bytes:
    obj = json.loads(sample(k).to_json())
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"size": True},
        {"size": 1.5},
        {"size": "12"},
        {"size": -1},
        {"size": 2**64},
        {"mtime_ns": 2**63},
        {"mode": None},
        {"path": 7},
        {"deleted": 0},
        {"chunks": {}},
        {"chunks": [["cd" * 32, 1]]},
        {"chunks": [["CD" * 32, 1, base64.b64encode(bytes(65)).decode()]]},
        {"chunks": [["cd" * 32, -1, base64.b64encode(bytes(65)).decode()]]},
        {"chunks": [["cd" * 32, 1, "not base64!"]]},
        {"chunks": [["cd" * 32, 1, base64.b64encode(bytes(64)).decode()]]},
        {"v": float("inf")},
        {"v": [1]},
    ],
)
def test_malformed_manifest_fields_are_manifest_errors(changes):
    with pytest.raises(ManifestError):
        Manifest.from_json(_json(keys(), **changes))


def test_pathological_json_is_a_manifest_error():
    for data in [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b"1e999999", b"[]", b'"x"']:
        with pytest.raises(ManifestError):
            Manifest.from_json(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "path", "size", "mtime_ns", "mode", "sha256", "deleted",
                         "created_ns", "chunks"]),
        json_values,
    )
)  # fmt: skip
def test_from_json_raises_only_manifest_error(changes):
    with contextlib.suppress(ManifestError):  # parsing may also succeed: any other error fails
        Manifest.from_json(_json(K, **changes))


# -- the store: hostile peers -------------------------------------------------------------------


def store_with(mems: list[MemoryPeer], k: MasterKeys | None = None) -> ManifestStore:
    placed = [PlacedPeer(wrap_peer(m, TransferConfig(retries=0)), 1.0, None) for m in mems]
    return ManifestStore("home", k or keys(), placed, replicas=2, minimum=1)


def mem_peers() -> list[MemoryPeer]:
    return [MemoryPeer(f"p{i}") for i in range(3)]


def test_names_skip_what_is_not_a_manifest_with_one_warning_per_peer(caplog):
    mems = mem_peers()
    store = store_with(mems)
    manifest = sample(store.keys)
    name, _ = store.write(manifest)
    for junk in ["home/manifests/.evil", "home/manifests/zz", "home/manifests/zz/../x",
                 "home/manifests/0123/4567", "home/manifests/a b"]:  # fmt: skip
        mems[1].plant(junk, b"junk")
    with caplog.at_level(logging.WARNING, "chunkvault"):
        names = list(store.names())
    assert [n for n, _ in names] == [name]
    warnings = [r.getMessage() for r in caplog.records if "p1" in r.getMessage()]
    assert len(warnings) == 2, warnings  # invalid object keys; not manifest names
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert store.read(name) == manifest


def test_a_listing_that_breaks_the_contract_leaves_that_peer_out(caplog):
    mems = mem_peers()
    store = store_with(mems)
    written = [store.write(sample(store.keys))[0] for _ in range(4)]
    while len(list(mems[0].list(""))) < 2:  # placement is random: p0 must overflow
        written.append(store.write(sample(store.keys))[0])
    written.sort()
    mems[0].max_listing = 1
    with caplog.at_level(logging.WARNING, "chunkvault"):
        names = dict(store.names())
    assert sorted(names) == written  # every manifest is on 2 of 3 peers
    assert all("p0" not in holders for holders in names.values())
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "cannot list manifests on p0" in warning and "more than 1 objects" in warning


def _first_holder(store: ManifestStore, name: str, mems: list[MemoryPeer]) -> MemoryPeer:
    ranked = [p.name for p in store._ranked(name)]
    return next(m for m in sorted(mems, key=lambda m: ranked.index(m.name)) if name in m._objects)


def test_read_skips_oversized_and_forged_copies_and_warns_once_per_peer(caplog, monkeypatch):
    monkeypatch.setattr("chunkvault.manifest.MAX_MANIFEST_BYTES", 4096)
    mems = mem_peers()
    store = store_with(mems)
    manifest = sample(store.keys)
    names = [store.write(manifest)[0] for _ in range(6)]
    liars = set()
    for i, name in enumerate(names):
        liar = _first_holder(store, name, mems)
        liars.add(liar.name)
        liar.plant(name, b"x" * 5000 if i % 2 else os.urandom(300))  # too big; forged
    with caplog.at_level(logging.WARNING, "chunkvault"):
        for name in names:
            assert store.read(name) == manifest
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(liars), warned  # once per peer, not once per manifest
    assert all("bad copy" in w for w in warned)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(st.binary(max_size=300), min_size=3, max_size=3))
def test_read_raises_only_manifest_error_whatever_peers_serve(bodies):
    mems = mem_peers()
    store = store_with(mems, K)
    name = new_manifest_name("home", K, sample(K))
    for mem, body in zip(mems, bodies, strict=True):
        mem.plant(name, body)
    with pytest.raises(ManifestError, match="no readable copy"):
        store.read(name)


def test_write_refuses_a_manifest_no_reader_would_accept(monkeypatch):
    monkeypatch.setattr("chunkvault.manifest.MAX_MANIFEST_BYTES", 200)
    mems = mem_peers()
    store = store_with(mems)
    with pytest.raises(ManifestError, match="manifest limit") as err:
        store.write(sample(store.keys))
    assert "chunking.avg_size" in str(err.value)
    assert all(m.calls == [] for m in mems)


# -- chunk locations: packed refs (only manifest batches hold them) -----------------------------


def packed(k: MasterKeys) -> Manifest:
    ref = ChunkRef("ab" * 32, 700, wrap_dek(k, "ab" * 32, os.urandom(32)), "9f" * 32, 5, 1054)
    return replace(sample(k), chunks=(sample(k).chunks[0], ref))


def test_a_packed_ref_round_trips_through_the_entry_fields():
    m = packed(K)
    obj = m.to_obj()
    chunk = obj["chunks"][1]
    assert chunk[3:] == ["9f" * 32, 5, 1054] and len(obj["chunks"][0]) == 3
    again = Manifest.from_obj(json.loads(json.dumps(obj)), allow_packed=True)
    assert again == m and again.chunks[1].packed and not again.chunks[0].packed


def test_a_manifest_object_never_holds_a_packed_ref():
    m = packed(K)
    with pytest.raises(ManifestError, match="packed"):
        m.to_json()
    with pytest.raises(ManifestError, match="packed"):
        store_with(mem_peers()).seal("home/manifests/x", m)
    data = json.dumps(m.to_obj()).encode()
    with pytest.raises(ManifestError, match="no packed chunk"):
        Manifest.from_json(data)
    with pytest.raises(ManifestError):
        Manifest.from_obj(json.loads(data), allow_packed=False)


def test_to_json_is_to_obj_byte_for_byte():
    m = sample(K)
    assert m.to_json() == json.dumps(m.to_obj(), separators=(",", ":")).encode()


_DEK = base64.b64encode(bytes([1, 0, 0, 0, 1]) + bytes(60)).decode()


@pytest.mark.parametrize(
    "entry",
    [
        ["cd" * 32, 700, _DEK, "9F" * 32, 0, 10],  # upper-case pack id
        ["cd" * 32, 700, _DEK, "9f" * 31, 0, 10],  # short
        ["cd" * 32, 700, _DEK, "9f" * 32 + "\n", 0, 10],
        ["cd" * 32, 700, _DEK, None, 0, 10],
        ["cd" * 32, 700, _DEK, "9f" * 32, -1, 10],
        ["cd" * 32, 700, _DEK, "9f" * 32, 2**63, 10],
        ["cd" * 32, 700, _DEK, "9f" * 32, True, 10],
        ["cd" * 32, 700, _DEK, "9f" * 32, 1.0, 10],
        ["cd" * 32, 700, _DEK, "9f" * 32, 0, 0],
        ["cd" * 32, 700, _DEK, "9f" * 32, 0, -5],
        ["cd" * 32, 700, _DEK, "9f" * 32, 0, 1055],  # over sealed_size_limit(700) == 1054
        ["cd" * 32, 700, _DEK, "9f" * 32, 0, "10"],
        ["cd" * 32, 700, _DEK, "9f" * 32, 0],  # 5 fields
        ["cd" * 32, 700, _DEK, "9f" * 32, 0, 10, 1],  # 7 fields
        ["cd" * 32, 700],
        "cd",
    ],
)
def test_bad_chunk_locations_are_manifest_errors(entry):
    obj = sample(K).to_obj() | {"chunks": [entry]}
    with pytest.raises(ManifestError):
        Manifest.from_obj(obj, allow_packed=True)


def test_chunk_location_bounds_are_inclusive():
    from chunkvault.crypto.envelope import sealed_size_limit

    top = sealed_size_limit(700)
    for offset, length in [(0, 1), (2**63 - 1, top)]:
        obj = sample(K).to_obj() | {"chunks": [["cd" * 32, 700, _DEK, "9f" * 32, offset, length]]}
        ref = Manifest.from_obj(obj, allow_packed=True).chunks[0]
        assert (ref.pack, ref.offset, ref.length) == ("9f" * 32, offset, length)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=8))
def test_from_obj_raises_only_manifest_error_for_any_chunk_entry(entry):
    obj = sample(K).to_obj() | {"chunks": [entry]}
    with contextlib.suppress(ManifestError):
        Manifest.from_obj(obj, allow_packed=True)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_from_obj_raises_only_manifest_error_for_any_value(value):
    with contextlib.suppress(ManifestError):
        Manifest.from_obj(value, allow_packed=True)


def test_rewrapped_keeps_chunk_locations():
    k = keys()
    from chunkvault.crypto.envelope import seal_chunk

    sealed = seal_chunk(k, b"small" * 10)
    ref = ChunkRef(sealed.chunk_id, 50, sealed.wrapped_dek, "9f" * 32, 4096, len(sealed.body))
    m = replace(sample(k), chunks=(ref,))
    again = m.rewrapped(k, k.add_generation()).chunks[0]
    assert (again.pack, again.offset, again.length) == (ref.pack, ref.offset, ref.length)
    assert again.wrapped_dek != ref.wrapped_dek


def test_manifest_names_neither_lists_nor_warns_about_batches(caplog):
    mems = mem_peers()
    store = store_with(mems)
    name, _ = store.write(sample(store.keys))
    # A batch (and a foreign key under batch/, which the batch store warns about).
    mems[0].plant("home/manifests/batch/01700000000000000000-0123456789abcdef", b"x" * 600)
    mems[1].plant("home/manifests/batch/junk", b"x")
    with caplog.at_level(logging.WARNING, "chunkvault"):
        names = list(store.names())
    assert [n for n, _ in names] == [name]
    assert caplog.records == []


@pytest.mark.parametrize(
    "location", [("9F" * 32, 0, 10), ("9f" * 32, -1, 10), ("9f" * 32, 0, 0), ("9f" * 32, 0, 1055)]
)
def test_a_writer_refuses_a_location_no_reader_would_accept(location):
    ref = ChunkRef("cd" * 32, 700, wrap_dek(K, "cd" * 32, os.urandom(32)), *location)
    with pytest.raises(ManifestError):
        replace(sample(K), chunks=(ref,)).to_obj()


_WRAPPED = bytes([1, 0, 0, 0, 1]) + bytes(range(60))
_DEK_JSON = (
    b'"AQAAAAEAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs="'
)
_CHUNKS_JSON = (
    b'"chunks":[["' + b"cd" * 32 + b'",100,' + _DEK_JSON + b'],["' + b"ef" * 32 + b'",23,'
    + _DEK_JSON + b"]]}"
)  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "head"),
    [
        ("photos/été ☃.jpg".encode(), b'{"v":1,"path":"photos/\\u00e9t\\u00e9 \\u2603.jpg",'),
        (b"docs/caf\xe9 \xe2\x82\xac.txt", b'{"v":2,"path_b64":"ZG9jcy9jYWbpIOKCrC50eHQ=",'),
    ],
)
def test_manifest_objects_are_written_byte_for_byte_as_before_batches(raw, head):
    """The bytes chunkvault wrote before chunk locations existed (taken from that code)."""
    m = Manifest(
        os.fsdecode(raw), 123, 1_700_000_000_123_456_789, 0o100644, "ab" * 32,
        (ChunkRef("cd" * 32, 100, _WRAPPED), ChunkRef("ef" * 32, 23, _WRAPPED)),
        False, 1_700_000_000_000_000_000,
    )  # fmt: skip
    assert m.to_json() == head + (
        b'"size":123,"mtime_ns":1700000000123456789,"mode":33188,"sha256":"' + b"ab" * 32
        + b'","deleted":false,"created_ns":1700000000000000000,' + _CHUNKS_JSON
    )  # fmt: skip
