"""Which bytes of a pack to read at once to restore many small chunks: pure, no I/O.

Restoring a tree of small files chunk by chunk costs one ranged GET per chunk. Their
bodies sit back to back in packs, in about the order they were pushed, so the chunks that
many files of one restore need from a pack are usually next to each other: one GET of the
span covering them replaces many. A span never exceeds ``max_span`` bytes (the restore's
buffer size) and never reads more than ``max_gap`` bytes nobody asked for between two
bodies (a second GET is cheaper than that much waste). A body wanted by several files is
read and opened once (:attr:`Span.bodies` groups them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Body(Generic[T]):
    """One chunk body in a pack, and who wants it (the caller's handles)."""

    offset: int
    length: int
    wanted_by: tuple[T, ...]


@dataclass(frozen=True)
class Span(Generic[T]):
    """Bytes ``[offset, offset + length)`` of one pack, holding ``bodies``."""

    pack: str
    offset: int
    length: int
    bodies: tuple[Body[T], ...] = field(default_factory=tuple)


def plan_spans(
    pack: str, wanted: Iterable[tuple[int, int, T]], max_span: int, max_gap: int
) -> list[Span[T]]:
    """Spans of ``pack`` covering every ``(offset, length, handle)`` in ``wanted``.

    A body longer than ``max_span`` is a span of its own (the caller reads it alone)."""
    if max_span < 1 or max_gap < 0:
        raise ValueError(f"max_span {max_span} and max_gap {max_gap}: need >= 1 and >= 0")
    by_place: dict[tuple[int, int], list[T]] = {}
    for offset, length, handle in wanted:
        if offset < 0 or length < 1:
            raise ValueError(f"a body at {offset} of {length} bytes")
        by_place.setdefault((offset, length), []).append(handle)
    spans: list[Span[T]] = []
    current: list[Body[T]] = []
    start = end = 0
    for (offset, length), handles in sorted(by_place.items()):
        body = Body(offset, length, tuple(handles))
        fits = current and offset - end <= max_gap and max(end, offset + length) - start <= max_span
        if current and not fits:
            spans.append(Span(pack, start, end - start, tuple(current)))
            current = []
        if not current:
            start, end = offset, offset + length
        current.append(body)
        end = max(end, offset + length)
    if current:
        spans.append(Span(pack, start, end - start, tuple(current)))
    return spans
