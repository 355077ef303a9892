"""Per-peer concurrency limit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from chunkvault.backends.base import ObjectInfo, Peer
from chunkvault.backends.wrapper import WrappingPeer

T = TypeVar("T")


class LimitPeer(WrappingPeer):
    """At most ``limit`` requests in flight to the inner peer.

    The slot is held only while a request runs: for ``list`` it is taken per page pull, so
    a slow consumer of a listing does not starve writers. It is the innermost wrapper (see
    ``stack.py``) so that no slot is held while :class:`RetryPeer` sleeps between attempts.
    """

    def __init__(self, inner: Peer, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        super().__init__(inner)
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        with self._slots:
            return fn()

    def _iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._slots:
            items = iter(self.inner.list(prefix))
        while True:
            with self._slots:
                item = next(items, None)
            if item is None:
                return
            yield item
