"""The one small contract every storage peer implements (restic's backend interface, trimmed).

Bodies are ``bytes``: the largest thing we ever store is one chunk (bounded by
``chunking.max_size``) or one manifest, so a whole body in memory is bounded by
configuration, and bytes keep every backend simple. Bodies above the backend's
``segment_size`` are sent as multipart uploads ("segments") by backends that support it.

Everything a peer sends may be crafted. The contract bounds what a reply can cost us:

- ``get(key, max_size)`` never holds more than ``max_size + 1`` bytes of a body, whatever
  the peer declares; a larger body is :class:`MalformedReply`. Callers pass the size they
  expect (``crypto.envelope.sealed_size_limit`` for chunks, the manifest cap, ...).
- ``get_into(key, buf, max_size)`` is ``get`` into the caller's buffer (restore reads each
  chunk body into a reused slab: a fresh multi-MiB ``bytes`` per body cost more CPU in
  page faults than decrypting it). Same rules: at most ``max_size`` bytes land in ``buf``,
  a longer body is :class:`MalformedReply` (one byte past the cap is read to tell, never
  into ``buf``), a body cut short of its declared length is the peer's error as in ``get``.
- ``get_range_into(key, buf, offset, length)`` reads bytes ``[offset, offset + length)`` of
  an object into ``buf[:length]`` (restore reads one chunk body out of a pack object with
  one ranged GET). Nothing is ever written past ``buf[:length]``. The object must hold the
  whole range: a shorter one is :class:`MalformedReply` (the peer's copy is truncated or
  not ours), and so is a reply of more than ``length`` bytes (one byte past is read to
  tell, never into ``buf``) or, on S3, anything but a 206 for exactly that range. A body
  cut short of its declared length is the peer's error as in ``get``.
- ``list(prefix)`` yields keys under ``prefix`` in strictly increasing order, at most
  :data:`MAX_LISTING` of them (``listing.py`` enforces it once for every backend); keys
  that are not valid object keys are skipped with one warning per listing.

Errors are classified, because what to do next depends only on the class:

- :class:`NotFound` - the object (or container) is not there; never retried.
- :class:`PermanentError` - retrying cannot help (bad credentials, bad request, no bucket).
- :class:`MalformedReply` (permanent) - the peer answered with something that breaks the
  contract: too large, unparseable, a listing out of order or without end. Skip that peer
  for this object or listing and use the other replicas.
- :class:`TransientError` - the peer is down, slow or overloaded; retry later or elsewhere.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# S3 lower-cases user metadata names and MinIO counts names towards the 2 KB limit, so we
# only allow short lower-case names and ASCII values: every backend then round-trips them
# exactly.
_META_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# S3 strips leading/trailing spaces and some servers drop empty values: forbid both.
_META_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")
METADATA_LIMIT = 2048  # bytes of names + values, the S3 user-metadata limit
# Object keys: '/'-separated segments of safe characters; no segment may start with '.',
# which keeps '..' out and leaves dot-names free for backend bookkeeping (temp files).
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
MiB = 1024 * 1024
#: ``get``'s cap when the caller gives none: above every object chunkvault writes for which
#: callers pass no tighter bound (the keyring, ``peers test``'s 12 MiB probes).
DEFAULT_MAX_GET = 64 * MiB
# What put takes: the push pipeline sends a view of a reused buffer (chunkvault/buffers.py),
# so a backend copies what it keeps and never holds the body after put returns.
Buffer = bytes | bytearray | memoryview
#: Most objects one ``list`` call yields. A peer that lists more is treated as listing
#: without end (MalformedReply). 1M chunk objects are 2 TiB on one peer at the default
#: 2 MiB average chunk size; 1M manifests are 1M file versions held by one peer.
MAX_LISTING = 1_000_000


class PeerError(Exception):
    """Base class of every error a peer raises; ``peer`` names the peer."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"peer {peer}: {message}")
        self.peer = peer
        self.message = message


class NotFound(PeerError):
    """The object or container does not exist."""


class PermanentError(PeerError):
    """Retrying the same request cannot succeed (auth, bad request, missing bucket...)."""


class MalformedReply(PermanentError):
    """The peer answered with something no honest peer sends: a body over the expected size,
    an unparseable reply, a listing out of order, repeating or without end. Asking again
    will not help; use another replica."""


class TransientError(PeerError):
    """The peer could not answer now (down, timeout, 5xx, throttled); retry may succeed."""


class PeerDown(TransientError):
    """The health tracker has marked the peer down; no request was sent."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a peer knows about one stored object."""

    key: str
    size: int
    etag: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Seconds since the epoch, when the backend knows it.
    modified: float | None = None

    @property
    def multipart_parts(self) -> int:
        """Number of parts for an S3 multipart ETag (``"<md5>-N"``), else 0."""
        head, sep, tail = self.etag.strip('"').rpartition("-")
        return int(tail) if sep and head and tail.isdigit() else 0


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ``ValueError``."""
    if not key or len(key) > 512 or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid object key {key!r}")
    for segment in key.split("/"):
        if not _KEY_SEGMENT.match(segment):
            raise ValueError(f"invalid object key {key!r}")
    return key


def validate_max_size(max_size: int) -> int:
    """A ``get`` cap is a non-negative int (a bad one is our bug, hence ValueError)."""
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f"max_size must be an int >= 0, got {max_size!r}")
    return max_size


def validate_buffer(buf: memoryview, max_size: int) -> memoryview:
    """A ``get_into`` buffer: a writable byte view of at least ``max_size`` bytes (else our
    bug, hence ValueError); returned as a flat ``B`` view."""
    validate_max_size(max_size)
    view = memoryview(buf)
    if view.readonly or not view.c_contiguous:
        raise ValueError("get_into needs a writable, contiguous buffer")
    view = view.cast("B")
    if len(view) < max_size:
        raise ValueError(f"get_into buffer of {len(view)} bytes, under max_size {max_size}")
    return view


def validate_range(buf: memoryview, offset: int, length: int) -> memoryview:
    """A ``get_range_into`` request: ``offset`` >= 0, ``length`` >= 1 and a writable byte
    view of at least ``length`` bytes (else our bug, hence ValueError); returned as the flat
    ``B`` view of ``buf[:length]``, the only bytes a ranged read may write."""
    for name, value, least in (("offset", offset, 0), ("length", length, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return validate_buffer(buf, length)[:length]


def validate_prefix(prefix: str) -> str:
    """A listing prefix is empty, or a key prefix (it may end in '/')."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Check user metadata against what every backend can round-trip exactly."""
    meta = dict(metadata or {})
    total = 0
    for name, value in meta.items():
        if not _META_NAME.match(name):
            raise ValueError(f"invalid metadata name {name!r}: use [a-z0-9-], at most 64")
        if not isinstance(value, str) or not _META_VALUE.match(value):
            raise ValueError(
                f"metadata {name!r}: value must be non-empty printable ASCII without "
                "leading or trailing spaces"
            )
        total += len(name) + len(value)
    if total > METADATA_LIMIT:
        raise ValueError(f"user metadata is {total} bytes, over the {METADATA_LIMIT} limit")
    return meta


class Peer(ABC):
    """A place that stores objects by key. Implementations must be thread-safe."""

    #: unique name from the config
    name: str
    #: "s3", "filesystem" or "memory"
    kind: str

    @property
    @abstractmethod
    def location(self) -> str:
        """Human-readable location: endpoint/bucket, a directory, or ``memory``."""

    @abstractmethod
    def create_container(self) -> bool:
        """Create the bucket / root directory if missing. True if it was created."""

    @abstractmethod
    def put(self, key: str, body: Buffer, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Store ``body`` at ``key`` atomically (readers see the old or the new object).
        ``body`` may be reused by the caller once this returns: keep a copy, not it."""

    @abstractmethod
    def get(self, key: str, max_size: int = DEFAULT_MAX_GET) -> bytes:
        """Return the whole body. Raises :class:`NotFound` if missing, and
        :class:`MalformedReply` if the body is larger than ``max_size`` bytes, having held
        at most ``max_size + 1`` of them in memory (also when the peer lies about the size).
        """

    @abstractmethod
    def get_into(self, key: str, buf: memoryview, max_size: int) -> int:
        """Read the whole body into ``buf[:n]`` and return ``n``; ``buf`` holds at least
        ``max_size`` bytes. Errors as :meth:`get`: :class:`NotFound`, :class:`MalformedReply`
        for a body over ``max_size`` (``buf`` then holds junk), and whatever a cut body
        raises in :meth:`get`. Bytes of ``buf`` past ``n`` are left as they were."""

    @abstractmethod
    def get_range_into(self, key: str, buf: memoryview, offset: int, length: int) -> None:
        """Read bytes ``[offset, offset + length)`` of the object into ``buf[:length]``;
        ``buf`` holds at least ``length`` bytes, and nothing past ``buf[:length]`` is ever
        written. Raises :class:`NotFound` if missing, :class:`MalformedReply` if the object
        is shorter than ``offset + length`` or the peer sends more (or, on S3, answers other
        than a 206 for exactly that range); a body cut short raises what it does in
        :meth:`get`. After an error ``buf[:length]`` holds junk. ValueError (before any
        I/O) for a bad key, ``offset`` < 0, ``length`` < 1 or a buffer under ``length``."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, etag and user metadata. Raises :class:`NotFound` if missing."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in strictly increasing key order, at
        most :data:`MAX_LISTING`; every key is a valid object key. Only ``key`` and ``size``
        are always set: metadata is empty and ``etag`` may be (use :meth:`stat`). A peer
        that breaks these rules raises :class:`MalformedReply` while being iterated."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error (S3 semantics)."""

    @abstractmethod
    def replace_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Replace the user metadata of ``key`` without re-sending its body
        (S3: server-side copy onto itself). Raises :class:`NotFound` if missing."""

    def prepare(self) -> None:  # noqa: B027 - optional hook, most peers need nothing
        """Make ahead of time what the first request needs (no request is sent): a
        command calls it in the background while it does other work."""

    def close(self) -> None:  # noqa: B027 - optional hook, most peers hold nothing
        """Release connections and threads."""
