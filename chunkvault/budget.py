"""A byte budget: at most ``limit`` bytes held at once, across threads.

The push pipeline takes bytes from it before a chunk is read and gives them back once the
chunk is durable (or known to be stored already), so the plaintext in memory is bounded by
``transfer.max_inflight_bytes`` whatever the file sizes and counts. Pure threading, no I/O.

A request larger than the whole budget is granted when nothing else is held (alone it
cannot be made to fit, and refusing it would deadlock); the config keeps the budget at
least ``chunking.max_size``, so that only happens to odd callers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class BudgetClosed(Exception):
    """The budget was closed while a caller waited (the pipeline is stopping)."""


class ByteBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a byte budget needs a positive limit, got {limit}")
        self.limit = limit
        self._held = 0
        self._peak = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def held(self) -> int:
        with self._cond:
            return self._held

    @property
    def peak(self) -> int:
        """The most bytes ever held at once (what bounds memory; for tests and metrics)."""
        with self._cond:
            return self._peak

    def acquire(self, n: int, timeout: float | None = None) -> bool:
        """Take ``n`` bytes, waiting until they fit. False on timeout; raises
        :class:`BudgetClosed` if the budget is closed meanwhile."""
        if n < 0:
            raise ValueError(f"cannot acquire {n} bytes")
        with self._cond:
            fits = self._cond.wait_for(
                lambda: self._closed or self._held + n <= self.limit or self._held == 0,
                timeout,
            )
            if self._closed:
                raise BudgetClosed()
            if not fits:
                return False
            self._held += n
            self._peak = max(self._peak, self._held)
            return True

    def release(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cannot release {n} bytes")
        with self._cond:
            if n > self._held:
                raise ValueError(f"releasing {n} bytes, but only {self._held} are held")
            self._held -= n
            self._cond.notify_all()

    @contextmanager
    def holding(self, n: int) -> Iterator[None]:
        self.acquire(n)
        try:
            yield
        finally:
            self.release(n)

    def close(self) -> None:
        """Wake every waiter with :class:`BudgetClosed`; later acquires raise it too."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
