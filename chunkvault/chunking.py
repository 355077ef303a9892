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


@dataclass(frozen=True)
class Chunker:
    mode: Literal["cdc", "fixed"] = "cdc"
    min_size: int = 512 * 1024
    avg_size: int = 2 * 1024 * 1024
    max_size: int = 8 * 1024 * 1024

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
