"""Split a byte stream into chunks: FastCDC (content-defined) or fixed-size. Pure logic
over a readable binary stream; the caller opens the file.

Content-defined chunking keeps chunk boundaries where the content is, so an insert near
the start of a file changes one or two chunks instead of every chunk after it (which is
what makes deduplication across versions work). Memory is bounded by ``max_size``: the
stream is read through a window, never whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from pyfastcdc.cy import FastCDC

# The compiled FastCDC hides its bounds; the pure-Python twin of the same release publishes
# the same ones as class constants (tests/unit/test_chunking.py checks both agree).
from pyfastcdc.py import FastCDC as _FastCDCBounds

KiB = 1024
MiB = 1024 * KiB
CDC_LIMITS: dict[str, tuple[int, int]] = {
    "min_size": (_FastCDCBounds.MIN_SIZE_LOWER_BOUND, _FastCDCBounds.MIN_SIZE_UPPER_BOUND),
    "avg_size": (_FastCDCBounds.AVG_SIZE_LOWER_BOUND, _FastCDCBounds.AVG_SIZE_UPPER_BOUND),
    "max_size": (_FastCDCBounds.MAX_SIZE_LOWER_BOUND, _FastCDCBounds.MAX_SIZE_UPPER_BOUND),
}
# Fixed mode has no library limit. Use FastCDC's max_size bounds for its one size, so a
# chunk is at most 16 MiB in either mode: memory (chunks in flight x chunk size) and the
# per-object read caps stay the same, and a chunk is never so small that per-object cost
# (request, metadata, manifest entry, padding floor) dwarfs its content.
FIXED_LIMITS: tuple[int, int] = CDC_LIMITS["max_size"]


def _bytes(n: int) -> str:
    """Exact and short: 6 MiB, 1536 KiB, 1000 B."""
    for unit, size in (("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def chunker_problems(
    mode: str, min_size: int, avg_size: int, max_size: int
) -> list[tuple[str, str]]:
    """Every reason the chunker would refuse these settings, as ``(key, message)``; empty
    when :class:`Chunker` accepts them. Config validation and the chunker share this, so a
    config that validates always builds a working chunker."""
    if mode == "fixed":
        low, high = FIXED_LIMITS
        if not low <= avg_size <= high:
            return [
                (
                    "avg_size",
                    f"must be {_bytes(low)}..{_bytes(high)} in fixed mode, got {_bytes(avg_size)}",
                )
            ]
        return []
    if mode != "cdc":
        return [("mode", f"must be cdc or fixed, got {mode!r}")]
    problems = []
    sizes = {"min_size": min_size, "avg_size": avg_size, "max_size": max_size}
    for key, (low, high) in CDC_LIMITS.items():
        if not low <= sizes[key] <= high:
            problems.append(
                (
                    key,
                    f"must be {_bytes(low)}..{_bytes(high)} (FastCDC's limit), "
                    f"got {_bytes(sizes[key])}",
                )
            )
    if not min_size <= avg_size <= max_size:
        problems.append(
            (
                "avg_size",
                f"need min_size <= avg_size <= max_size, got {_bytes(min_size)} / "
                f"{_bytes(avg_size)} / {_bytes(max_size)}",
            )
        )
    return problems


@dataclass(frozen=True)
class Chunker:
    mode: Literal["cdc", "fixed"] = "cdc"
    min_size: int = 512 * 1024
    avg_size: int = 2 * 1024 * 1024
    max_size: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        problems = chunker_problems(self.mode, self.min_size, self.avg_size, self.max_size)
        if problems:
            raise ValueError("; ".join(f"chunking.{key}: {msg}" for key, msg in problems))

    def split(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield consecutive chunks whose concatenation is the stream's content. An empty
        stream yields nothing."""
        if self.mode == "fixed":
            while block := _read_full(stream, self.avg_size):
                yield block
            return
        cdc = FastCDC(self.avg_size, min_size=self.min_size, max_size=self.max_size)
        for chunk in cdc.cut_stream(stream):
            # cut_stream reuses its buffer: the view is valid only until the next chunk.
            yield bytes(chunk.data)


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at end of stream (pipes and raw files return
    short reads)."""
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)
