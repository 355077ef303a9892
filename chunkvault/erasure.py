"""Reed-Solomon shares of a data object: pure, no I/O (zfec does the arithmetic).

A data object (a sealed chunk's body or a pack) of ``size`` bytes is padded with zeros to
``k * segment`` bytes, ``segment = ceil(size / k)``, and cut into ``k`` data segments; zfec
computes ``m`` parity segments from them. Any ``k`` of the ``k + m`` segments give the
object back. The code is systematic: data segment ``i`` *is* bytes ``[i * segment,
(i + 1) * segment)`` of the object, so a healthy vault reads the data shares and decodes
nothing, and a byte range of the object (a packed chunk) is a byte range of one or two
data shares.

Each segment is stored as a share object: a 48-byte header, then the segment::

    magic "CVS" | version 1 | k | m | index | 0 | object size (u64 BE) | object SHA-256

The header makes a share self-describing (a peer that strips metadata loses nothing):
its place among the shares, and the size that cuts the padding off. Nothing in it is
secret, and none of it is trusted: a decoded object counts only once it opens (a chunk's
AES-GCM tag) or matches its SHA-256. docs/format.md specifies it.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import zfec

__all__ = [
    "HEADER_SIZE",
    "MAX_SHARES",
    "Scheme",
    "ShareError",
    "ShareHeader",
    "decode",
    "decode_into",
    "encode",
    "judge",
    "parse_header",
    "segment_size",
    "span",
    "verified",
]

MAGIC = b"CVS"
VERSION = 1
_HEADER = struct.Struct(">3sBBBBxQ32s")
HEADER_SIZE = _HEADER.size  # 48
#: zfec's limit on k + m (GF(2^8): 256 distinct evaluation points).
MAX_SHARES = 256


class ShareError(ValueError):
    """Bytes that are not a share of the object they are said to be, or too few shares."""


@dataclass(frozen=True)
class Scheme:
    """``data`` + ``parity`` shares, any ``data`` of which rebuild the object."""

    data: int
    parity: int

    def __post_init__(self) -> None:
        if not (self.data >= 1 and self.parity >= 1 and self.width <= MAX_SHARES):
            raise ValueError(
                f"erasure scheme {self.data}+{self.parity}: need data >= 1, parity >= 1 and "
                f"data + parity <= {MAX_SHARES}"
            )

    @property
    def width(self) -> int:
        """How many shares there are, each on a peer of its own."""
        return self.data + self.parity

    def __str__(self) -> str:
        return f"{self.data}-{self.parity}"

    @classmethod
    def parse(cls, text: str) -> Scheme:
        """The scheme :func:`str` wrote ("3-2"); ValueError otherwise."""
        data, sep, parity = text.partition("-")
        if not (sep and data.isdigit() and parity.isdigit()):
            raise ValueError(f"not an erasure scheme: {text!r}")
        return cls(int(data), int(parity))

    def required(self, losses: int) -> int:
        """Shares a write must reach to survive ``losses`` lost peers (at most parity)."""
        return self.data + min(max(0, losses), self.parity)

    def stored_size(self, size: int) -> int:
        """Bytes on the peers for an object of ``size`` bytes, headers included."""
        return self.width * (HEADER_SIZE + segment_size(size, self.data))


@dataclass(frozen=True)
class ShareHeader:
    scheme: Scheme
    index: int
    object_size: int
    object_sha256: bytes

    @property
    def segment(self) -> int:
        return segment_size(self.object_size, self.scheme.data)

    def to_bytes(self) -> bytes:
        s = self.scheme
        return _HEADER.pack(
            MAGIC, VERSION, s.data, s.parity, self.index, self.object_size, self.object_sha256
        )


def segment_size(size: int, k: int) -> int:
    """The length of each share's segment for an object of ``size`` bytes (at least 1:
    zfec needs non-empty blocks)."""
    return max(1, -(-size // k))


def encode(
    body: bytes | bytearray | memoryview, scheme: Scheme, sha256: bytes | None = None
) -> list[bytearray]:
    """The ``scheme.width`` share bodies (header + segment) of ``body``, by index
    (``sha256``: the body's, when the caller has it). Each share is built in its own
    buffer, the data segments copied once from ``body`` and the parity computed from
    them: about (k + m) / k of the body, plus the parity zfec returns, is held at once."""
    view = memoryview(body).cast("B")
    size = len(view)
    k = scheme.data
    seg = segment_size(size, k)
    digest = sha256 if sha256 is not None else hashlib.sha256(view).digest()
    shares = []
    for i in range(scheme.width):
        share = bytearray(HEADER_SIZE + seg)  # zeros past the object: the padding
        share[:HEADER_SIZE] = ShareHeader(scheme, i, size, digest).to_bytes()
        if i < k:
            part = view[i * seg : (i + 1) * seg]
            share[HEADER_SIZE : HEADER_SIZE + len(part)] = part
        shares.append(share)
    blocks = tuple(memoryview(share)[HEADER_SIZE:] for share in shares[:k])
    parity = zfec.Encoder(k, scheme.width).encode(blocks, tuple(range(k, scheme.width)))
    for share, segment in zip(shares[k:], parity, strict=True):
        share[HEADER_SIZE:] = segment
    del blocks, parity
    return shares


def parse_header(share: bytes | bytearray | memoryview) -> ShareHeader:
    """The header of a share body; :class:`ShareError` if it is not one."""
    view = memoryview(share)
    if len(view) < HEADER_SIZE:
        raise ShareError(f"a share of {len(view)} bytes is shorter than its header")
    magic, version, k, m, index, size, sha = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise ShareError("not a share (bad magic)")
    if version != VERSION:
        raise ShareError(f"unsupported share format {version}")
    try:
        scheme = Scheme(k, m)
    except ValueError as exc:
        raise ShareError(str(exc)) from None
    if index >= scheme.width:
        raise ShareError(f"share index {index} of a {scheme} scheme")
    header = ShareHeader(scheme, index, size, sha)
    if len(view) != HEADER_SIZE + header.segment:
        raise ShareError(
            f"share {index} is {len(view)} bytes, its header says {HEADER_SIZE + header.segment}"
        )
    return header


def decode(shares: Mapping[int, bytes | bytearray | memoryview], header: ShareHeader) -> bytearray:
    """The object rebuilt from any ``k`` of its share bodies (by index), as ``header``
    (one of theirs, or the catalog's idea of it) describes it. The data shares are joined
    as they are; zfec runs only if one is missing. :class:`ShareError` if there are too
    few, or one does not fit ``header``. The result is not verified: the caller opens or
    hashes it (see :func:`verified`)."""
    out = bytearray(header.object_size)
    decode_into(shares, header, memoryview(out))
    return out


def decode_into(
    shares: Mapping[int, bytes | bytearray | memoryview], header: ShareHeader, out: memoryview
) -> int:
    """:func:`decode` into ``out[:size]`` (no buffer of its own); returns the size.
    :class:`ShareError` also if ``out`` is shorter than the object."""
    if len(out) < header.object_size:
        raise ShareError(f"an object of {header.object_size} bytes, more than {len(out)}")
    k = header.scheme.data
    seg = header.segment
    chosen = sorted(shares)[:k] if len(shares) >= k else None
    if chosen is None:
        raise ShareError(f"{len(shares)} share(s) of a {header.scheme} object: need {k}")
    blocks = []
    for index in chosen:
        view = memoryview(shares[index]).cast("B")
        if len(view) != HEADER_SIZE + seg:
            raise ShareError(f"share {index} is {len(view)} bytes, not {HEADER_SIZE + seg}")
        blocks.append(view[HEADER_SIZE:])
    if chosen == list(range(k)):
        segments: Sequence[bytes | memoryview] = blocks
    else:
        segments = zfec.Decoder(k, header.scheme.width).decode(
            tuple(bytes(b) for b in blocks), tuple(chosen)
        )
    size = header.object_size  # the padding is never copied
    for i, segment in enumerate(segments):
        start = i * seg
        if start >= size:
            break
        out[start : min(size, start + seg)] = memoryview(segment)[: size - start]
    return size


def verified(body: bytes | bytearray | memoryview, header: ShareHeader) -> bool:
    """Whether a decoded object is the one ``header`` names (its SHA-256)."""
    return hashlib.sha256(body).digest() == header.object_sha256


#: Subsets of the shares at hand that one rebuild decodes, at most, looking for ``k`` that
#: verify (3+2 has 10 in all; a wide scheme would have thousands).
MAX_DECODES = 32


def judge(
    shares: Mapping[str, bytes | bytearray | memoryview],
    expected: Mapping[str, int],
    scheme: Scheme,
    accept: Callable[[bytearray], bool],
) -> tuple[bytearray | None, dict[str, str]]:
    """What each holder's share is worth: ``shares`` are the bodies the holders served,
    ``expected`` the index each one's key gives. Returns the object, rebuilt from ``k``
    shares naming one object whose SHA-256 and ``accept`` (the caller's check: a chunk's
    AES-GCM tag) it passes, or None; and each holder whose share is not the one that
    object encodes to (or is no share of it), with why. With no object rebuilt, only the
    shares that are malformed are judged."""
    bad: dict[str, str] = {}
    headers: dict[str, ShareHeader] = {}
    for holder, body in shares.items():
        try:
            header = parse_header(body)
        except ShareError as exc:
            bad[holder] = str(exc)
            continue
        if (header.scheme, header.index) != (scheme, expected[holder]):
            bad[holder] = (f"its header says share {header.index} of {header.scheme}, its key "
                           f"share {expected[holder]} of {scheme}")  # fmt: skip
            continue
        headers[holder] = header
    groups: dict[tuple[int, bytes], dict[int, str]] = {}
    for holder, header in sorted(headers.items(), key=lambda h: h[1].index):
        groups.setdefault((header.object_size, header.object_sha256), {}).setdefault(
            header.index, holder
        )
    body: bytearray | None = None
    for group in sorted(groups.values(), key=len, reverse=True):
        if len(group) < scheme.data:
            break
        subsets = itertools.islice(itertools.combinations(sorted(group), scheme.data),
                                   MAX_DECODES)  # fmt: skip
        for subset in subsets:
            header = headers[group[subset[0]]]
            candidate = decode({i: shares[group[i]] for i in subset}, header)
            if verified(candidate, header) and accept(candidate):
                body = candidate
                break
        if body is not None:
            break
    if body is None:
        return None, bad
    right = encode(body, scheme)
    for holder, header in headers.items():
        if bytes(shares[holder]) != right[header.index]:
            bad[holder] = "not the share its object encodes to"
    return body, bad


def span(offset: int, length: int, object_size: int, k: int) -> list[tuple[int, int, int]]:
    """Where bytes ``[offset, offset + length)`` of an object sit in its data shares:
    ``(index, start, end)`` ranges of share bodies (header included in the positions), in
    order. :class:`ShareError` for a range outside the object."""
    if offset < 0 or length <= 0 or offset + length > object_size:
        raise ShareError(f"bytes {offset}+{length} are not within an object of {object_size}")
    seg = segment_size(object_size, k)
    out = []
    pos, end = offset, offset + length
    while pos < end:
        index, within = divmod(pos, seg)
        take = min(end - pos, seg - within)
        out.append((index, HEADER_SIZE + within, HEADER_SIZE + within + take))
        pos += take
    return out
