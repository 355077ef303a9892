"""An in-process peer for tests and dry runs, with fault injection.

It behaves like an S3 peer where tests can see it: multipart ETags (``"<md5>-N"`` for
bodies above ``segment_size``, computed exactly as S3 does), listings in key order served
in pages (one "request" per page), NotFound/PermanentError like a bucket. Faults:

- ``peer.down = True``: every request raises :class:`TransientError` (a dead peer);
- ``peer.fail_next(n, error, ops=..., skip=...)``: the next ``n`` matching requests fail
  (ops are the method names; ``get_into`` counts as ``get``, ``get_range_into`` as
  ``get_range``);
- ``peer.hook``: called with the operation name at the start of every request (outside
  the lock), to block, count or slow requests from a test;
- ``peer.calls``: every request that reached the peer, in order;
- ``peer.plant(key, body)``: store an object under any key, as another program writing to
  the same bucket could (keys chunkvault itself would refuse included).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from chunkvault.backends.base import (
    DEFAULT_MAX_GET,
    MAX_LISTING,
    Buffer,
    MalformedReply,
    NotFound,
    ObjectInfo,
    Peer,
    PeerError,
    PermanentError,
    TransientError,
    validate_buffer,
    validate_key,
    validate_max_size,
    validate_metadata,
    validate_prefix,
    validate_range,
)
from chunkvault.backends.listing import checked_listing

MiB = 1024 * 1024


def s3_etag(body: bytes, segment_size: int) -> str:
    """The ETag S3 gives ``body`` uploaded whole, or in ``segment_size`` parts if larger."""
    if len(body) <= segment_size:
        return hashlib.md5(body, usedforsecurity=False).hexdigest()
    digests = b"".join(
        hashlib.md5(body[i : i + segment_size], usedforsecurity=False).digest()
        for i in range(0, len(body), segment_size)
    )
    parts = -(-len(body) // segment_size)
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{parts}"


@dataclass
class _Fault:
    remaining: int
    error: PeerError | type[PeerError]
    ops: frozenset[str] | None
    skip: int


@dataclass(frozen=True)
class _Object:
    body: bytes
    etag: str
    metadata: dict[str, str]
    modified: float


class MemoryPeer(Peer):
    """Objects in a dict, guarded by a lock. Thread-safe."""

    kind = "memory"
    max_listing = MAX_LISTING  # per instance so that tests can lower it

    def __init__(
        self,
        name: str = "memory",
        *,
        segment_size: int = 8 * MiB,
        created: bool = True,
        page_size: int = 1000,
    ) -> None:
        self.name = name
        self.segment_size = segment_size
        self.page_size = page_size
        self.down = False
        self.hook: Callable[[str], None] | None = None
        self.calls: list[str] = []
        self._created = created
        self._objects: dict[str, _Object] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return f"memory:{self.name}"

    def fail_next(
        self,
        n: int = 1,
        error: PeerError | type[PeerError] = TransientError,
        *,
        ops: Iterable[str] | None = None,
        skip: int = 0,
    ) -> None:
        """Make the next ``n`` requests (of ``ops``, after ``skip`` of them) raise ``error``.

        ``error`` is an exception class (instantiated with this peer's name) or instance.
        For ``list``, every page is one request.
        """
        with self._lock:
            self._faults.append(_Fault(n, error, frozenset(ops) if ops else None, skip))

    def plant(self, key: str, body: bytes = b"") -> None:
        """Store ``body`` at ``key`` without validating either and without a request."""
        with self._lock:
            self._objects[key] = _Object(bytes(body), s3_etag(body, self.segment_size), {}, 0.0)

    def _request(self, op: str, *, container: bool = True) -> None:
        """Account for one request and raise the injected fault, if any."""
        if self.hook is not None:
            self.hook(op)
        with self._lock:
            self.calls.append(op)
            if self.down:
                raise TransientError(self.name, f"{op}: peer is down (injected)")
            for fault in self._faults:
                if fault.remaining <= 0 or (fault.ops is not None and op not in fault.ops):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.remaining -= 1
                err = fault.error
                raise err if isinstance(err, PeerError) else err(self.name, f"{op}: injected")
            if container and not self._created:
                raise PermanentError(
                    self.name, f"{op}: container does not exist; run `chunkvault peers init`"
                )

    def create_container(self) -> bool:
        self._request("create_container", container=False)
        with self._lock:
            created, self._created = not self._created, True
        return created

    def put(self, key: str, body: Buffer, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        self._request("put")
        body = bytes(body)
        obj = _Object(body, s3_etag(body, self.segment_size), meta, time.time())
        with self._lock:
            self._objects[key] = obj
        return self._info(key, obj)

    def _find(self, op: str, key: str) -> _Object:
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise NotFound(self.name, f"{op} {key}: no such object")
        return obj

    def get(self, key: str, max_size: int = DEFAULT_MAX_GET) -> bytes:
        validate_key(key)
        validate_max_size(max_size)
        self._request("get")
        body = self._find("get", key).body
        if len(body) > max_size:
            raise MalformedReply(
                self.name, f"get {key}: {len(body)} bytes, more than the {max_size} expected"
            )
        return body

    def get_into(self, key: str, buf: memoryview, max_size: int) -> int:
        validate_key(key)
        view = validate_buffer(buf, max_size)
        body = self.get(key, max_size)
        view[: len(body)] = body
        return len(body)

    def get_range_into(self, key: str, buf: memoryview, offset: int, length: int) -> None:
        validate_key(key)
        view = validate_range(buf, offset, length)
        self._request("get_range")
        body = self._find("get_range", key).body
        if len(body) < offset + length:
            action = f"get {key} bytes {offset}-{offset + length - 1}"
            short = f"object of {len(body)} bytes ends before the range"
            raise MalformedReply(self.name, f"{action}: {short}")
        view[:] = memoryview(body)[offset : offset + length]

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        self._request("stat")
        return self._info(key, self._find("stat", key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return checked_listing(self.name, prefix, self._list(prefix), self.max_listing)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._request("list")
        with self._lock:
            items = sorted((k, o) for k, o in self._objects.items() if k.startswith(prefix))
        for i, (key, obj) in enumerate(items):
            if i and i % self.page_size == 0:
                self._request("list")  # the next page is another request
            yield ObjectInfo(key, len(obj.body), obj.etag, modified=obj.modified)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._request("delete")
        with self._lock:
            self._objects.pop(key, None)

    def replace_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        self._request("replace_metadata")
        with self._lock:
            old = self._objects.get(key)
            if old is None:
                raise NotFound(self.name, f"replace_metadata {key}: no such object")
            # Like S3's copy onto itself: a single-part ETag afterwards.
            etag = s3_etag(old.body, len(old.body) or 1)
            obj = self._objects[key] = _Object(old.body, etag, meta, time.time())
        return self._info(key, obj)

    def _info(self, key: str, obj: _Object) -> ObjectInfo:
        return ObjectInfo(key, len(obj.body), obj.etag, dict(obj.metadata), obj.modified)
