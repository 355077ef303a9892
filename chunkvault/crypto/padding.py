"""Length hiding for sealed objects: Padmé padding above a floor. Pure functions.

A peer sees the size of every object it stores. Sealing pads each payload, inside the
AEAD, so that a size reveals only a coarse bucket:

    padded = length:4 | payload | zero bytes        (length = len(payload), big-endian)
    len(padded) = padme(max(4 + len(payload), floor))

Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication
with PURBs", PoPETs 2019, §4) rounds a length L up to a multiple of 2^(E-S), where
E = floor(log2 L) and S = floor(log2 E) + 1: only the top S bits of L survive, so a size
leaks O(log log L) bits, and the overhead is below 2^-S (under 12% for any L, under 6.25%
from 1 KiB, under 3.2% from 64 KiB). The floor (per object kind, chosen in envelope.py)
makes every small payload the same size, so small files (most files, by count) all
look alike.

The length prefix makes the encoding unambiguous whatever the payload ends with; the
reader also insists the padding is zero. Readers accept any amount of zero padding, so
the padding policy can change without a new format.
"""

from __future__ import annotations

import struct

LENGTH_BYTES = 4
MAX_PAYLOAD = (1 << 32) - 1


class PaddingError(ValueError):
    """A padded payload whose length field or padding is wrong."""


def padme(length: int) -> int:
    """The Padmé size for ``length``: the smallest multiple of 2^(E-S) that is >= it."""
    if length < 2:
        return length
    e = length.bit_length() - 1  # floor(log2 L)
    s = e.bit_length()  # floor(log2 E) + 1
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def padded_size(payload_size: int, floor: int) -> int:
    """Length of the padded form of a payload of ``payload_size`` bytes."""
    return padme(max(LENGTH_BYTES + payload_size, floor))


def pad(*parts: bytes, floor: int) -> bytes:
    """The padded form of the concatenated ``parts`` (joined once, no extra copy)."""
    size = sum(len(part) for part in parts)
    if size > MAX_PAYLOAD:
        raise PaddingError(f"payload of {size} bytes is too large to pad")
    zeros = bytes(padded_size(size, floor) - LENGTH_BYTES - size)
    return b"".join((struct.pack(">I", size), *parts, zeros))


def unpad(padded: bytes | memoryview) -> memoryview:
    """The payload inside ``padded``, as a view (no copy of it; a view's padding is copied
    to be checked); :class:`PaddingError` unless the length field fits and every padding
    byte is zero."""
    if len(padded) < LENGTH_BYTES:
        raise PaddingError(f"padded payload too short ({len(padded)} bytes)")
    (size,) = struct.unpack_from(">I", padded)
    end = LENGTH_BYTES + size
    if end > len(padded):
        raise PaddingError(f"length field {size} exceeds the {len(padded)} bytes present")
    if isinstance(padded, memoryview):  # no count(); the padding is under 1/16 of it
        zeros = padded[end:].tobytes().count(0)
    else:
        zeros = padded.count(0, end)
    if zeros != len(padded) - end:
        raise PaddingError("padding bytes are not zero")
    return memoryview(padded)[LENGTH_BYTES:end]
