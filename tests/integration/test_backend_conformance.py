"""One conformance suite for every backend: S3 (moto over real HTTP), filesystem, memory.

Each S3 test gets a fresh bucket on one of the session's moto peers; "s3-proxied" runs the
same S3 peer through ``support.hostile_proxy`` with no tamper rule, which proves the proxy
forwards faithfully. S3-only fault tests (dead peer, hung peer, missing bucket, aborted
multipart) and hostile-peer tests (oversized bodies, endless or malformed listings) come at
the end.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import re
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from support.hostile_proxy import (
    HostileProxy,
    Reply,
    Request,
    endless_listing,
    huge_body,
    inject_keys,
    named,
    replace_body,
    rewrite_listing,
)
from support.moto_peers import MotoPeers, MotoServer, s3_peer_config, unique_bucket

from chunkvault.backends import (
    FilesystemPeer,
    MalformedReply,
    MemoryPeer,
    NotFound,
    Peer,
    PermanentError,
    S3Peer,
    TransientError,
    wrap_peer,
)
from chunkvault.backends.memory import s3_etag
from chunkvault.config import TransferConfig

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SEGMENT = 5 * MiB
TRANSFER = TransferConfig(segment_size=SEGMENT, timeout_seconds=5, retries=0)
_server_turn = itertools.count()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + size).randbytes(size)


def drop_bucket(peer: S3Peer) -> None:
    """Free moto's RAM: the servers live for the whole session."""
    client, bucket = peer.client, peer.bucket
    with contextlib.suppress(Exception):
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for up in uploads:
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["s3", "s3-proxied", "filesystem", "memory"])
def fresh_peer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peer]:
    """A peer whose container (bucket / root directory) does not exist yet."""
    if request.param.startswith("s3"):
        moto: MotoPeers = request.getfixturevalue("moto_peers")
        endpoint = moto[next(_server_turn) % len(moto)].endpoint
        if request.param == "s3-proxied":
            endpoint = request.getfixturevalue("hostile_proxy_factory")(endpoint).endpoint
        peer = S3Peer(s3_peer_config(endpoint, unique_bucket()), TRANSFER)
        yield peer
        drop_bucket(peer)
        peer.close()
    elif request.param == "filesystem":
        yield FilesystemPeer("fs", tmp_path / "peer")
    else:
        yield MemoryPeer("mem", segment_size=SEGMENT, created=False)


@pytest.fixture
def peer(fresh_peer: Peer) -> Peer:
    fresh_peer.create_container()
    return fresh_peer


@contextlib.contextmanager
def s3_operations(peer: S3Peer) -> Iterator[list[str]]:
    """Record the S3 API operations the peer's client sends."""
    seen: list[str] = []

    def record(model: Any, **kwargs: Any) -> None:
        seen.append(model.name)

    peer.client.meta.events.register("before-call.s3", record)
    try:
        yield seen
    finally:
        peer.client.meta.events.unregister("before-call.s3", record)


# -- the contract ---------------------------------------------------------------------------


def test_create_container_is_idempotent(fresh_peer: Peer) -> None:
    assert fresh_peer.create_container() is True
    assert fresh_peer.create_container() is False
    assert list(fresh_peer.list()) == []


@pytest.mark.parametrize("size", [0, 1, MiB])
def test_put_get_round_trip(peer: Peer, size: int) -> None:
    body = payload(size)
    info = peer.put("v/chunks/ab/abcdef", body)
    assert (info.key, info.size) == ("v/chunks/ab/abcdef", size)
    got = peer.get("v/chunks/ab/abcdef")
    assert isinstance(got, bytes) and got == body
    st = peer.stat("v/chunks/ab/abcdef")
    assert (st.size, st.metadata) == (size, {})
    assert st.etag and st.etag == info.etag
    assert isinstance(st.modified, float)


def test_metadata_round_trip(peer: Peer) -> None:
    meta = {
        "dek": "q2xv9Q7m+4kX/0aZbq1tR6Yf3wJ8pL2nC5dE7gH9iK0=",
        "nonce": "00ff1234abcd",
        "gen": "1",
        "x-long-name-with-dashes": "a b  c",
        "punct": "q\"uo'te\\%&=?,;:~!@#$^*()[]{}<>|`",
    }
    info = peer.put("v/chunks/ab/meta", b"body", meta)
    assert dict(info.metadata) == meta
    assert dict(peer.stat("v/chunks/ab/meta").metadata) == meta


def test_put_overwrites_body_and_metadata(peer: Peer) -> None:
    peer.put("v/keyring", b"old body", {"gen": "1", "old-only": "x"})
    peer.put("v/keyring", b"new body, longer", {"gen": "2"})
    assert peer.get("v/keyring") == b"new body, longer"
    st = peer.stat("v/keyring")
    assert (st.size, dict(st.metadata)) == (16, {"gen": "2"})


def test_readers_never_see_a_torn_overwrite(peer: Peer) -> None:
    versions = {"a": payload(1000, 1), "b": payload(3000, 2)}
    peer.put("v/obj", versions["a"], {"v": "a"})
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            body = peer.get("v/obj")
            if body not in versions.values():
                problems.append(f"torn body of {len(body)} bytes")
            st = peer.stat("v/obj")
            if st.size != len(versions[st.metadata["v"]]):
                problems.append(f"metadata {st.metadata} with a body of {st.size} bytes")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(20):
            name = "ab"[i % 2]
            peer.put("v/obj", versions[name], {"v": name})
    finally:
        stop.set()
        reader.join()
    assert problems == []


@pytest.mark.parametrize(("size", "parts"), [(SEGMENT, 0), (SEGMENT + 1, 2), (12 * MiB, 3)])
def test_segmented_put(peer: Peer, size: int, parts: int) -> None:
    body = payload(size)
    info = peer.put("v/chunks/big", body, {"gen": "7"})
    assert peer.get("v/chunks/big") == body
    st = peer.stat("v/chunks/big")
    assert (st.size, dict(st.metadata), st.etag) == (size, {"gen": "7"}, info.etag)
    if peer.kind in ("s3", "memory"):  # memory emulates S3's multipart ETag exactly
        assert st.multipart_parts == parts
        assert st.etag == s3_etag(body, SEGMENT)
        assert st.etag.endswith(f"-{parts}") == (parts > 0)
    else:  # filesystem: SHA-256 of the body
        assert st.multipart_parts == 0 and len(st.etag) == 64


@pytest.mark.parametrize("size", [1000, 2 * MiB, SEGMENT + 1])
def test_put_takes_a_view_of_a_reused_buffer_and_keeps_a_copy(peer: Peer, size: int) -> None:
    """The push pipeline sends views of slabs it reuses right after put returns: what is
    stored must be what was sent, never what the buffer holds later (small views, big
    ones streamed from the buffer, and segmented ones)."""
    body = payload(size)
    slab = bytearray(size + 4096)
    slab[100 : 100 + size] = body
    info = peer.put("v/chunks/view", memoryview(slab)[100 : 100 + size], {"gen": "1"})
    slab[:] = bytes(len(slab))  # the next chunk overwrites the slab
    assert info.size == size
    assert peer.get("v/chunks/view", max_size=size) == body
    assert peer.stat("v/chunks/view").size == size


LIST_KEYS = [
    "v/chunks/aa/aa01",
    "v/chunks/aa/aa02",
    "v/chunks/ab/ab01",
    "v/chunks/a-c",  # '-' < '/' < '0': order is by whole key, not directory by directory
    "v/chunks/a.x",
    "v/chunks/a0",
    "v/keyring",
    "v/manifests/m1",
    "v-other/x",
    "w",
]


def test_list_by_prefix(peer: Peer) -> None:
    assert list(peer.list()) == []
    sizes = {key: i + 1 for i, key in enumerate(LIST_KEYS)}
    for key in random.Random(3).sample(LIST_KEYS, len(LIST_KEYS)):
        peer.put(key, payload(sizes[key]), {"k": "v"})
    # Churn that creates temp files and sidecars on a filesystem peer: none may leak.
    peer.put("v/keyring", payload(sizes["v/keyring"]), {"gen": "2"})
    peer.replace_metadata("v/chunks/a0", {"gen": "3"})

    def keys(prefix: str = "") -> list[str]:
        return [info.key for info in peer.list(prefix)]

    assert keys() == sorted(LIST_KEYS)
    infos = list(peer.list())
    assert {i.key: i.size for i in infos} == sizes
    assert all(isinstance(i.modified, float) for i in infos)
    assert keys("v/chunks/") == sorted(k for k in LIST_KEYS if k.startswith("v/chunks/"))
    assert keys("v/chunks/a") == sorted(k for k in LIST_KEYS if k.startswith("v/chunks/a"))
    assert keys("v/") == sorted(k for k in LIST_KEYS if k.startswith("v/"))
    assert keys("v/chunks/aa/aa01") == ["v/chunks/aa/aa01"]
    assert keys("nothing/") == []
    assert keys("v/chunks/zz") == []


def plant(peer: Peer, key: str, body: bytes = b"x") -> None:
    """Store an object under a key chunkvault would refuse, as another program could."""
    if isinstance(peer, S3Peer):
        peer.client.put_object(Bucket=peer.bucket, Key=key, Body=body)
    elif isinstance(peer, FilesystemPeer):
        path = peer.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    else:
        assert isinstance(peer, MemoryPeer)
        peer.plant(key, body)


def listing_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "chunkvault.backends.listing"
    ]  # fmt: skip


def test_list_skips_keys_that_are_not_object_keys_with_one_warning(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    peer.put("v/m/a", b"1")
    peer.put("v/m/z", b"2")
    for key in ("v/m/.evil", "v/m/a b", "v/m/b\\c", "v/m/\u00fc", "v/m/q/.hidden"):
        plant(peer, key)
    with caplog.at_level(logging.WARNING, "chunkvault"):
        assert [i.key for i in peer.list("v/m/")] == ["v/m/a", "v/m/z"]
    (warning,) = listing_warnings(caplog)  # one per listing, not one per key
    assert f"peer {peer.name}:" in warning and "not valid object keys" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, "chunkvault"):
        assert [i.key for i in peer.list("v/m/z")] == ["v/m/z"]
    assert listing_warnings(caplog) == []


def test_list_stops_at_the_cap(peer: Peer) -> None:
    for i in range(5):
        peer.put(f"v/c/{i}", b"x")
    peer.max_listing = 5  # type: ignore[attr-defined]
    assert len(list(peer.list("v/c/"))) == 5
    peer.max_listing = 3  # type: ignore[attr-defined]
    seen = []
    with pytest.raises(MalformedReply, match="more than 3 objects") as err:
        for info in peer.list("v/c/"):
            seen.append(info.key)
    assert seen == ["v/c/0", "v/c/1", "v/c/2"] and err.value.peer == peer.name


def test_get_is_capped_at_max_size(peer: Peer) -> None:
    body = payload(1000)
    peer.put("v/chunks/ab/capped", body)
    assert peer.get("v/chunks/ab/capped", max_size=1000) == body
    assert peer.get("v/chunks/ab/capped", max_size=5000) == body
    with pytest.raises(MalformedReply, match="999") as err:
        peer.get("v/chunks/ab/capped", max_size=999)
    assert err.value.peer == peer.name and isinstance(err.value, PermanentError)
    peer.put("v/empty", b"")
    assert peer.get("v/empty", max_size=0) == b""
    with pytest.raises(NotFound):
        peer.get("v/none", max_size=0)


@pytest.mark.parametrize("size", [0, 1, 1000, MiB + 7])
def test_get_into_reads_the_whole_body_into_the_buffer(peer: Peer, size: int) -> None:
    body = payload(size, seed=3)
    peer.put("v/chunks/ab/into", body)
    buf = bytearray(b"\x5a" * (size + 100))
    for max_size in (size, size + 100):
        assert peer.get_into("v/chunks/ab/into", memoryview(buf), max_size) == size
        assert buf[:size] == body
        assert buf[size:] == b"\x5a" * 100  # nothing past the body is touched


def test_get_into_is_capped_at_max_size_like_get(peer: Peer) -> None:
    body = payload(1000)
    peer.put("v/chunks/ab/capped", body)
    buf = bytearray(2000)
    with pytest.raises(MalformedReply, match="999") as err:
        peer.get_into("v/chunks/ab/capped", memoryview(buf), 999)
    assert err.value.peer == peer.name
    assert buf[999:] == bytes(1001)  # the byte that tells "longer" never lands in buf
    peer.put("v/empty", b"")
    assert peer.get_into("v/empty", memoryview(bytearray()), 0) == 0
    with pytest.raises(NotFound):
        peer.get_into("v/none", memoryview(buf), 10)


@pytest.mark.parametrize(
    "buf",
    [bytearray(10), bytes(2000), memoryview(bytearray(4000))[::2]],
    ids=["smaller-than-max", "read-only", "not-contiguous"],
)
def test_get_into_refuses_a_buffer_it_cannot_fill_before_io(fresh_peer: Peer, buf: Any) -> None:
    with pytest.raises(ValueError):
        fresh_peer.get_into("v/chunks/ab/x", buf, 1000)
    with pytest.raises(ValueError):
        wrap_peer(fresh_peer, TRANSFER).get_into("v/chunks/ab/x", buf, 1000)


RANGE_BODY = 1000


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 100), (5, 1), (437, 200), (900, 100), (999, 1), (0, RANGE_BODY), (0, 1)],
    ids=["start", "length-1-inside", "middle", "end", "last-byte", "whole", "first-byte"],
)
def test_get_range_into_reads_exactly_the_range(peer: Peer, offset: int, length: int) -> None:
    body = payload(RANGE_BODY, seed=5)
    peer.put("v/packs/ab/pack", body)
    slab = bytearray(b"\x5a" * (length + 300))
    view = memoryview(slab)[100:]  # a view into a reused slab, as restore passes
    assert peer.get_range_into("v/packs/ab/pack", view, offset, length) is None
    assert slab[100 : 100 + length] == body[offset : offset + length]
    assert slab[:100] == b"\x5a" * 100 and slab[100 + length :] == b"\x5a" * 200


def test_get_range_into_reads_a_range_larger_than_a_read_piece(peer: Peer) -> None:
    body = payload(3 * MiB + 11, seed=6)
    peer.put("v/packs/cd/pack", body)
    offset, length = MiB - 3, 2 * MiB + 5  # several of S3's 256 KiB read pieces
    buf = bytearray(b"\x5a" * (length + 10))
    peer.get_range_into("v/packs/cd/pack", memoryview(buf), offset, length)
    assert buf[:length] == body[offset : offset + length] and buf[length:] == b"\x5a" * 10


@pytest.mark.parametrize(
    ("size", "offset", "length"),
    [(RANGE_BODY, 990, 11), (RANGE_BODY, 0, RANGE_BODY + 1), (RANGE_BODY, RANGE_BODY, 1),
     (RANGE_BODY, 5000, 10), (0, 0, 1)],
    ids=["overlaps-the-end", "one-past-whole", "starts-at-the-end", "far-past", "empty-object"],
)  # fmt: skip
def test_get_range_into_past_the_end_is_malformed(
    peer: Peer, size: int, offset: int, length: int
) -> None:
    """Restore asks for bytes it wrote: an object that ends before them is a truncated copy
    (or not ours), the peer's error, not a short read to accept."""
    peer.put("v/packs/ab/short", payload(size, seed=5))
    buf = bytearray(b"\x5a" * (length + 50))
    with pytest.raises(MalformedReply, match="ends before the range") as err:
        peer.get_range_into("v/packs/ab/short", memoryview(buf), offset, length)
    assert err.value.peer == peer.name
    assert buf[length:] == b"\x5a" * 50
    # Not retried by the stack (asking again cannot lengthen the object), and an answer.
    sleeps: list[float] = []
    stacked = wrap_peer(peer, TransferConfig(retries=3), sleep=sleeps.append)
    with pytest.raises(MalformedReply):
        stacked.get_range_into("v/packs/ab/short", memoryview(buf), offset, length)
    assert sleeps == [] and stacked.is_up


def test_get_range_into_of_a_missing_object_is_not_found(peer: Peer) -> None:
    with pytest.raises(NotFound) as err:
        peer.get_range_into("v/packs/ab/none", memoryview(bytearray(10)), 0, 10)
    assert err.value.peer == peer.name
    assert not isinstance(err.value, MalformedReply)


@pytest.mark.parametrize(
    ("buf", "offset", "length"),
    [(bytearray(99), 0, 100), (bytearray(100), -1, 10), (bytearray(100), 0, 0),
     (bytearray(100), 0, -5), (bytes(100), 0, 10), (memoryview(bytearray(400))[::2], 0, 10),
     (bytearray(100), 1.5, 10), (bytearray(100), 0, True), (bytearray(100), None, 10)],
    ids=["smaller-than-length", "negative-offset", "zero-length", "negative-length",
         "read-only", "not-contiguous", "float-offset", "bool-length", "no-offset"],
)  # fmt: skip
def test_get_range_into_refuses_bad_arguments_before_io(
    fresh_peer: Peer, buf: Any, offset: Any, length: Any
) -> None:
    with pytest.raises(ValueError):
        fresh_peer.get_range_into("v/packs/ab/x", buf, offset, length)
    with pytest.raises(ValueError):
        wrap_peer(fresh_peer, TRANSFER).get_range_into("v/packs/ab/x", buf, offset, length)
    _assert_no_io(fresh_peer)


def test_delete(peer: Peer) -> None:
    peer.put("v/chunks/ab/gone", b"x", {"a": "b"})
    peer.put("v/chunks/ab/kept", b"y")
    peer.delete("v/chunks/ab/gone")
    with pytest.raises(NotFound):
        peer.get("v/chunks/ab/gone")
    with pytest.raises(NotFound):
        peer.stat("v/chunks/ab/gone")
    assert [i.key for i in peer.list()] == ["v/chunks/ab/kept"]
    peer.delete("v/chunks/ab/gone")  # again: fine
    peer.delete("never/existed")
    peer.put("v/chunks/ab/gone", b"back")  # a deleted key can be written again
    assert peer.stat("v/chunks/ab/gone").metadata == {}


def test_missing_objects_are_not_found(peer: Peer) -> None:
    for call in (
        lambda: peer.get("no/such"),
        lambda: peer.stat("no/such"),
        lambda: peer.replace_metadata("no/such", {"a": "b"}),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.peer == peer.name


def test_replace_metadata_keeps_the_body(peer: Peer) -> None:
    body = payload(12 * MiB)  # multipart on S3: copied server-side all the same
    peer.put("v/chunks/cd/cdef", body, {"gen": "1", "dek": "old"})
    ops: contextlib.AbstractContextManager[list[str]] = (
        s3_operations(peer) if isinstance(peer, S3Peer) else contextlib.nullcontext([])
    )
    with ops as seen:
        info = peer.replace_metadata("v/chunks/cd/cdef", {"gen": "2"})
    assert (info.size, dict(info.metadata)) == (len(body), {"gen": "2"})
    if isinstance(peer, S3Peer):
        assert "CopyObject" in seen and not {"PutObject", "UploadPart"} & set(seen)
    st = peer.stat("v/chunks/cd/cdef")
    assert (st.size, dict(st.metadata), st.etag) == (len(body), {"gen": "2"}, info.etag)
    assert peer.get("v/chunks/cd/cdef") == body


BAD_KEYS = ["", "/a", "a/", "a//b", "../x", "a/../b", ".hidden", "a/.tmp-x", "a/.meta-b.json",
            "a b", "ü", "a\\b", "x" * 513]  # fmt: skip
BAD_METADATA: list[dict[str, Any]] = [
    {"Upper": "x"},
    {"a_b": "x"},
    {"": "x"},
    {"a": "ü"},
    {"a": "tab\there"},
    {"a": "x" * 2100},
    {"a": 1},
]


def _assert_no_io(peer: Peer) -> None:
    # The container was never created: any request would have failed with PermanentError,
    # so getting ValueError proves validation came first. Check the side effects too.
    if isinstance(peer, MemoryPeer):
        assert peer.calls == []
    if isinstance(peer, FilesystemPeer):
        assert not peer.root.exists()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected_before_io(fresh_peer: Peer, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: fresh_peer.put(key, b"x"),
        lambda: fresh_peer.get(key),
        lambda: fresh_peer.get(key, max_size=10),
        lambda: fresh_peer.get_range_into(key, memoryview(bytearray(10)), 0, 10),
        lambda: fresh_peer.stat(key),
        lambda: fresh_peer.delete(key),
        lambda: fresh_peer.replace_metadata(key, {}),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    _assert_no_io(fresh_peer)


@pytest.mark.parametrize("max_size", [-1, 1.5, True, None])
def test_invalid_get_caps_are_rejected_before_io(fresh_peer: Peer, max_size: Any) -> None:
    with pytest.raises(ValueError):
        fresh_peer.get("a/b", max_size=max_size)
    _assert_no_io(fresh_peer)


@pytest.mark.parametrize("prefix", ["../", ".x", "a/.b", "a b/", "/a"])
def test_invalid_prefixes_are_rejected_at_call_time(fresh_peer: Peer, prefix: str) -> None:
    with pytest.raises(ValueError):
        fresh_peer.list(prefix)  # not iterated: validation is eager
    _assert_no_io(fresh_peer)


@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_invalid_metadata_is_rejected_before_io(fresh_peer: Peer, metadata: dict) -> None:
    with pytest.raises(ValueError):
        fresh_peer.put("a/b", b"x", metadata)
    with pytest.raises(ValueError):
        fresh_peer.replace_metadata("a/b", metadata)
    _assert_no_io(fresh_peer)


def test_concurrent_puts(peer: Peer) -> None:
    def work(writer: int) -> None:
        for j in range(4):
            peer.put(f"c/{writer}/{j}", payload(100 + j, writer), {"writer": str(writer)})
            body = f"writer {writer} round {j}".encode()
            peer.put("c/shared", body, {"writer": str(writer), "round": str(j)})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    expected = sorted([f"c/{w}/{j}" for w in range(8) for j in range(4)] + ["c/shared"])
    assert [i.key for i in peer.list("c/")] == expected
    for w in range(8):
        for j in range(4):
            assert peer.get(f"c/{w}/{j}") == payload(100 + j, w)
    meta = peer.stat("c/shared").metadata  # the last writer's body AND metadata
    assert peer.get("c/shared") == f"writer {meta['writer']} round {meta['round']}".encode()


# -- S3 only: faults against real HTTP servers -------------------------------------------------


def test_s3_missing_bucket_is_permanent(moto_peers: MotoPeers) -> None:
    peer = S3Peer(s3_peer_config(moto_peers[0].endpoint, unique_bucket()), TRANSFER)
    calls: list[Callable[[], object]] = [
        lambda: peer.put("a/b", b"x"),
        lambda: peer.put("a/b", payload(SEGMENT + 1)),
        lambda: peer.get("a/b"),
        lambda: peer.get_range_into("a/b", memoryview(bytearray(4)), 0, 4),
        lambda: peer.stat("a/b"),  # HEAD says a bare 404 for bucket and key alike
        lambda: list(peer.list("a/")),
        lambda: peer.delete("a/b"),
        lambda: peer.replace_metadata("a/b", {}),
    ]
    for call in calls:
        with pytest.raises(PermanentError, match="peers init"):
            call()


@pytest.fixture
def s3_peer(moto_peers: MotoPeers) -> Iterator[S3Peer]:
    peer = S3Peer(s3_peer_config(moto_peers[1].endpoint, unique_bucket()), TRANSFER)
    peer.create_container()
    yield peer
    drop_bucket(peer)
    peer.close()


def test_s3_sends_plain_bodies(s3_peer: S3Peer) -> None:
    peer = s3_peer
    headers: list[dict[str, str]] = []

    def capture(request: Any, **kwargs: Any) -> None:
        headers.append({k.lower(): str(v) for k, v in request.headers.items()})

    peer.client.meta.events.register("before-send.s3", capture)
    peer.put("a/b", b"hello", {"gen": "1"})
    (sent,) = headers
    assert "x-amz-trailer" not in sent and "aws-chunked" not in sent.get("content-encoding", "")
    assert sent["content-length"] == "5"


def test_s3_failed_multipart_upload_is_aborted(s3_peer: S3Peer) -> None:
    peer = s3_peer

    def fail_second_part(params: dict[str, Any], **kwargs: Any) -> None:
        if params["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url=peer.endpoint)

    peer.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(TransientError):
        peer.put("a/big", payload(12 * MiB))
    assert peer.client.list_multipart_uploads(Bucket=peer.bucket).get("Uploads", []) == []
    with pytest.raises(NotFound):
        peer.stat("a/big")


def _s3_peer_on(server: MotoServer, timeout: float) -> S3Peer:
    transfer = TransferConfig(segment_size=SEGMENT, timeout_seconds=timeout, retries=0)
    peer = S3Peer(s3_peer_config(server.endpoint, unique_bucket()), transfer)
    peer.create_container()
    peer.put("a/b", b"body")
    return peer


def test_s3_dead_peer_is_transient_and_fast(moto_peer_factory: Callable[[], MotoServer]) -> None:
    server = moto_peer_factory()
    peer = _s3_peer_on(server, timeout=2)
    server.kill()
    calls: list[Callable[[], object]] = [
        lambda: peer.get("a/b"),
        lambda: peer.get_range_into("a/b", memoryview(bytearray(2)), 1, 2),
        lambda: peer.put("a/c", b"x"),
        lambda: peer.stat("a/b"),
        lambda: list(peer.list()),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(TransientError):
            call()
        assert time.monotonic() - start < 2


def test_s3_hung_peer_times_out(moto_peer_factory: Callable[[], MotoServer]) -> None:
    server = moto_peer_factory()
    peer = _s3_peer_on(server, timeout=2)
    server.stop()
    try:
        start = time.monotonic()
        with pytest.raises(TransientError, match="timeout"):
            peer.get("a/b")
        elapsed = time.monotonic() - start
        assert 1.5 < elapsed < 3
    finally:
        server.cont()
    assert peer.get("a/b") == b"body"  # the same peer works again once the server resumes


# -- S3 only: a hostile peer (support.hostile_proxy in front of a real moto_server) ----------

GiB = 1024 * MiB


@pytest.fixture
def liar(
    moto_peers: MotoPeers, hostile_proxy_factory: Callable[[str], HostileProxy]
) -> Iterator[tuple[S3Peer, HostileProxy]]:
    """An S3 peer whose every request goes through a hostile proxy (no rule yet)."""
    proxy = hostile_proxy_factory(moto_peers[2].endpoint)
    peer = S3Peer(s3_peer_config(proxy.endpoint, unique_bucket(), name="liar"), TRANSFER)
    peer.create_container()
    yield peer, proxy
    proxy.clear()
    drop_bucket(peer)
    peer.close()


@contextlib.contextmanager
def bounded(seconds: float, megabytes: int) -> Iterator[None]:
    """The block takes less than ``seconds`` and allocates less than ``megabytes`` MiB."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.1f}s"
    assert peak < megabytes * MiB, f"allocated {peak / MiB:.0f} MiB"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # 1 GiB with an honest Content-Length: refused before a byte of the body is read.
        (huge_body(r"/chunks/", GiB), "1073741824 bytes, more than the 2000 expected"),
        # No Content-Length at all: read stops after max_size + 1 bytes.
        (huge_body(r"/chunks/", GiB, chunked=True), "longer than the 2000 bytes expected"),
    ],
    ids=["declared", "chunked"],
)
def test_s3_oversized_bodies_are_refused_without_reading_them(
    liar: tuple[S3Peer, HostileProxy], rule: Any, expected: str
) -> None:
    peer, proxy = liar
    peer.put("v/chunks/ab/x", payload(1000))
    proxy.add(rule)
    with bounded(seconds=5, megabytes=16), pytest.raises(MalformedReply, match=expected):
        peer.get("v/chunks/ab/x", max_size=2000)
    assert proxy.hits("huge_body") == 1
    proxy.clear()
    assert peer.get("v/chunks/ab/x", max_size=2000) == payload(1000)  # connection pool fine


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (huge_body(r"/chunks/", GiB), "1073741824 bytes, more than the 2000 expected"),
        (huge_body(r"/chunks/", GiB, chunked=True), "longer than the 2000 bytes expected"),
        (huge_body(r"/chunks/", 2001, chunked=True), "longer than the 2000 bytes expected"),
    ],
    ids=["declared", "chunked", "one-byte-over"],
)
def test_s3_get_into_refuses_oversized_bodies_without_reading_them(
    liar: tuple[S3Peer, HostileProxy], rule: Any, expected: str
) -> None:
    peer, proxy = liar
    peer.put("v/chunks/ab/x", payload(1000))
    proxy.add(rule)
    buf = bytearray(2000)
    with bounded(seconds=5, megabytes=16), pytest.raises(MalformedReply, match=expected):
        peer.get_into("v/chunks/ab/x", memoryview(buf), 2000)
    assert proxy.hits("huge_body") == 1
    proxy.clear()
    assert peer.get_into("v/chunks/ab/x", memoryview(buf), 2000) == 1000
    assert buf[:1000] == payload(1000)


def test_s3_get_into_of_a_cut_body_is_the_peers_error_and_a_retry_rewrites_the_buffer(
    liar: tuple[S3Peer, HostileProxy],
) -> None:
    peer, proxy = liar
    peer.put("v/chunks/ab/x", payload(1000))
    buf = bytearray(2000)
    proxy.add(replace_body(r"/chunks/", b"\xee" * 600, content_length=1500))
    with pytest.raises(TransientError):
        peer.get_into("v/chunks/ab/x", memoryview(buf), 2000)
    with pytest.raises(TransientError):  # declared 1500, 600 arrive: cut short
        peer.get_into("v/chunks/ab/x", memoryview(buf), 2000)
    proxy.clear()
    # The first attempt gets 600 bytes of junk and a cut; the retry starts over at 0.
    cut = replace_body(r"/chunks/", b"\xee" * 600, content_length=1500)
    served: list[str] = []

    def once(request: Request, forward: Any) -> Reply | None:
        if served:
            return None
        reply = cut(request, forward)
        if reply is not None:
            served.append(request.key)
        return reply

    proxy.add(once)
    retrying = wrap_peer(peer, TransferConfig(timeout_seconds=5, retries=1), sleep=lambda _: None)
    buf[:] = b"\x11" * len(buf)
    assert retrying.get_into("v/chunks/ab/x", memoryview(buf), 2000) == 1000
    assert served and buf[:1000] == payload(1000) and buf[1000:] == b"\x11" * 1000


def test_s3_get_into_of_an_understated_content_length_reads_only_what_it_declares(
    liar: tuple[S3Peer, HostileProxy],
) -> None:
    peer, proxy = liar
    peer.put("v/chunks/ab/x", payload(1000))
    proxy.add(huge_body(r"/chunks/", GiB, content_length=10))
    with bounded(seconds=5, megabytes=16):
        assert peer.get_into("v/chunks/ab/x", memoryview(bytearray(2000)), 2000) == 10


def test_s3_understated_content_length_reads_only_what_it_declares(
    liar: tuple[S3Peer, HostileProxy],
) -> None:
    peer, proxy = liar
    peer.put("v/chunks/ab/x", payload(1000))
    proxy.add(huge_body(r"/chunks/", GiB, content_length=10))
    with bounded(seconds=5, megabytes=16):
        assert len(peer.get("v/chunks/ab/x", max_size=2000)) == 10


def test_s3_overstated_content_length_is_a_cut_body(liar: tuple[S3Peer, HostileProxy]) -> None:
    peer, proxy = liar
    peer.put("v/chunks/ab/x", payload(1000))
    proxy.add(replace_body(r"/chunks/", b"short", content_length=1500))
    with pytest.raises(TransientError):
        peer.get("v/chunks/ab/x", max_size=2000)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("repeat", "out of order or repeats pages"),
        ("fresh", "more than 5000 objects"),
        ("empty", "empty pages in a row"),
    ],
)
def test_s3_listing_without_end_is_malformed_and_not_retried(
    liar: tuple[S3Peer, HostileProxy], mode: str, expected: str
) -> None:
    peer, proxy = liar
    for i in range(3):
        peer.put(f"v/manifests/{i}", b"x")
    peer.max_listing = 5000
    proxy.add(endless_listing(mode))  # type: ignore[arg-type]
    sleeps: list[float] = []
    stacked = wrap_peer(peer, TransferConfig(retries=3), sleep=sleeps.append)
    with bounded(seconds=30, megabytes=64), pytest.raises(MalformedReply, match=expected):
        for _ in stacked.list("v/manifests/" if mode != "empty" else "v/none/"):
            pass
    assert sleeps == [] and stacked.is_up
    assert proxy.hits("endless_listing") < 150


def _append_key(key: str) -> Callable[[Request, Any], None]:
    def edit(request: Request, root: Any) -> None:
        ns = root.tag.partition("}")[0] + "}"
        item = root.makeelement(f"{ns}Contents", {})
        for tag, text in (("Key", key), ("Size", "1"), ("ETag", '"x"')):
            child = item.makeelement(f"{ns}{tag}", {})
            child.text = text
            item.append(child)
        root.append(item)  # after the real keys: out of order unless it sorts last

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_append_key("v/manifests/0"), "came after"),  # not after the last key
        (_append_key("v/manifests/5"), "came after"),  # the same key twice
        (_append_key("w/outside"), "outside the prefix"),
    ],
    ids=["out-of-order", "duplicate", "outside-prefix"],
)
def test_s3_listing_out_of_order_or_outside_the_prefix_is_malformed(
    liar: tuple[S3Peer, HostileProxy], edit: Any, expected: str
) -> None:
    peer, proxy = liar
    for i in range(4, 6):
        peer.put(f"v/manifests/{i}", b"x")
    proxy.add(rewrite_listing(edit))
    with pytest.raises(MalformedReply, match=expected):
        list(peer.list("v/manifests/"))


def _sub(pattern: str, replacement: str) -> Callable[[Request, Any], Reply | None]:
    """Rewrite the raw XML of listing answers."""

    def rule(request: Request, forward: Any) -> Reply | None:
        if not request.is_listing:
            return None
        real = forward()
        body = re.sub(pattern.encode(), replacement.encode(), real.body)
        return Reply(real.status, real.without("Content-Length"), body)

    return named("sub", rule)


@pytest.mark.parametrize(
    ("pattern", "replacement"),
    [
        (r"<Size>\d+</Size>", "<Size>abc</Size>"),
        (r"<Size>\d+</Size>", "<Size>-5</Size>"),
        (r"<Size>\d+</Size>", "<Size>" + "9" * 5000 + "</Size>"),
        (r"<Size>\d+</Size>", "<Size>" + "9" * 30 + "</Size>"),
        (r"<LastModified>[^<]*</LastModified>", "<LastModified>yesterday</LastModified>"),
        (r"<Key>[^<]*</Key>", ""),
        (r"<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>"),
    ],
    ids=["size-abc", "size-negative", "size-5000-digits", "size-huge", "date", "no-key",
         "truncated-without-token"],
)  # fmt: skip
def test_s3_unparseable_listings_are_malformed(
    liar: tuple[S3Peer, HostileProxy], pattern: str, replacement: str
) -> None:
    peer, proxy = liar
    for i in range(2):
        peer.put(f"v/k/{i}", b"x")
    proxy.add(_sub(pattern, replacement))
    with pytest.raises(MalformedReply):
        list(peer.list("v/k/"))


def test_s3_unparseable_head_is_malformed(liar: tuple[S3Peer, HostileProxy]) -> None:
    peer, proxy = liar
    peer.put("v/k/x", b"x")

    def bad_date(request: Request, forward: Any) -> Reply | None:
        if request.method != "HEAD":
            return None
        real = forward()
        headers = [*real.without("Last-Modified"), ("Last-Modified", "yesterday")]
        return Reply(real.status, headers, b"", content_length=real.content_length)

    proxy.add(bad_date)
    with pytest.raises(MalformedReply, match="unparseable"):
        peer.stat("v/k/x")


def test_s3_keys_a_peer_injects_are_skipped_with_one_warning(
    liar: tuple[S3Peer, HostileProxy], caplog: pytest.LogCaptureFixture
) -> None:
    peer, proxy = liar
    peer.put("v/m/a", b"x")
    proxy.add(inject_keys(["v/m/.evil", "v/m/..", "v/m/a/../../x", "v/m/\x7f"]))
    with caplog.at_level(logging.WARNING, "chunkvault"):
        assert [i.key for i in peer.list("v/m/")] == ["v/m/a"]
    (warning,) = listing_warnings(caplog)
    assert "peer liar:" in warning
