"""Split a byte stream into chunks: FastCDC (content-defined) or fixed-size. Pure logic
over a readable binary stream; the caller opens the file.

Content-defined chunking keeps chunk boundaries where the content is, so an insert near
the start of a file changes one or two chunks instead of every chunk after it (which is
what makes deduplication across versions work). Memory is bounded by ``max_size``: the
stream is read through a window, never whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from pyfastcdc.cy import FastCDC

# The compiled FastCDC hides its bounds; the pure-Python twin of the same release publishes
# the same ones as class constants (tests/unit/test_chunking.py checks both agree).
from pyfastcdc.py import FastCDC as _FastCDCBounds

from chunkvault.buffers import BufferPool

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
    # Read windows, reused across files (one per file being read at once).
    _windows: BufferPool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = chunker_problems(self.mode, self.min_size, self.avg_size, self.max_size)
        if problems:
            raise ValueError("; ".join(f"chunking.{key}: {msg}" for key, msg in problems))
        object.__setattr__(self, "_windows", BufferPool(self._window_size()))

    def split(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield consecutive chunks whose concatenation is the stream's content. An empty
        stream yields nothing."""
        for view in self.views(stream):
            yield bytes(view)

    def views(self, stream: BinaryIO, size_hint: int | None = None) -> Iterator[memoryview]:
        """:meth:`split` without a copy per chunk: each view is valid only until the next
        is asked for (the window is reused), so copy what you keep. ``size_hint``: the
        stream's expected size; a stream smaller than the window gets a buffer of its size
        instead (a reader of small files would otherwise hold a 12 MiB window each). The
        cuts are the same either way; a stream that turns out longer is still split whole."""
        if self.mode == "fixed":
            yield from self._fixed_views(stream, size_hint)
        else:
            yield from self._cdc_views(stream, size_hint)

    def _take_window(self, size: int, size_hint: int | None) -> bytearray:
        if size_hint is not None and 0 <= size_hint < size - 1:
            return self._windows.take(size_hint + 1)  # + 1: the read that sees the end
        return self._windows.take(size)

    def _window_size(self) -> int:
        if self.mode == "fixed":
            return self.avg_size
        # At least max_size, for a cut to see all it may look at; the rest is what each
        # refill reads, for at most max_size moved to the front: half of max_size more
        # moves each byte at most twice (about 0.1 ms per MiB), for a window of 12 MiB at
        # the default 8 MiB max_size where pyfastcdc's own takes 16 MiB.
        return self.max_size + max(64 * KiB, self.max_size // 2)

    def _fixed_views(self, stream: BinaryIO, size_hint: int | None) -> Iterator[memoryview]:
        window = self._take_window(self.avg_size, size_hint)
        try:
            view = memoryview(window)
            n = _readinto_full(stream, view)
            if n == len(view) < self.avg_size:  # longer than its hint: on in a full window
                full = self._windows.take(self.avg_size)
                memoryview(full)[:n] = view[:n]
                view.release()
                self._windows.give(window)
                window, view = full, memoryview(full)
                n += _readinto_full(stream, view[n:])
            while n:
                yield view[:n]
                n = _readinto_full(stream, view)
        finally:
            self._windows.give(window)

    def _cdc_views(self, stream: BinaryIO, size_hint: int | None) -> Iterator[memoryview]:
        """pyfastcdc's ``cut_stream`` over a window reused across files. ``cut_stream``
        allocates (and zeroes) a window of twice ``max_size`` per stream: 16 MiB of fresh
        pages per file, which cost a push of 4 MiB files more CPU than its crypto. The cuts
        are the same: a cut looks at most ``max_size`` bytes ahead, so one is taken only
        while that much is buffered (or the stream has ended), as ``cut_stream`` does."""
        cdc = FastCDC(self.avg_size, min_size=self.min_size, max_size=self.max_size)
        size = self._window_size()
        window = self._take_window(size, size_hint)
        try:
            view = memoryview(window)
            start = end = 0
            ended = False
            while True:
                if not ended and end - start < self.max_size:
                    view[: end - start] = view[start:end]  # memmove: overlap is fine
                    start, end = 0, end - start
                    while True:
                        while end < len(view):
                            n = stream.readinto(view[end:])
                            if not n:
                                ended = True
                                break
                            end += n
                        if ended or len(view) == size:
                            break
                        # Longer than its hint: go on in a full window.
                        full = self._windows.take(size)
                        memoryview(full)[:end] = view[:end]
                        view.release()
                        self._windows.give(window)
                        window, view = full, memoryview(full)
                if start == end:
                    return
                cuts = cdc.cut_buf(view[start:end])
                while ended or end - start >= self.max_size:
                    chunk = next(cuts, None)
                    if chunk is None:
                        break
                    yield chunk.data
                    start += chunk.length
                del cuts
        finally:
            self._windows.give(window)


def _readinto_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; fewer bytes only at its end (pipes and raw files
    return short reads)."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got
