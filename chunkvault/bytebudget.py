"""A byte budget: how many bytes may be in flight at once (``transfer.max_inflight_bytes``).

Memory in a pipeline is bounded by bytes, not by a count of chunks or files: a stage
acquires a chunk's size before it holds the chunk, and the stage that lets go of it
releases the same amount. One chunk larger than the whole budget is still let through,
alone (it takes the whole budget), so nothing can wait forever.
"""

from __future__ import annotations

import threading


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a byte budget needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._peak = 0
        self._cond = threading.Condition()

    def charge(self, size: int) -> int:
        """What ``size`` bytes cost: never more than the whole budget."""
        return min(max(size, 0), self.capacity)

    def acquire(self, size: int) -> int:
        """Block until ``size`` bytes fit; return the charge to give back to :meth:`release`."""
        charge = self.charge(size)
        with self._cond:
            while self._used + charge > self.capacity:
                self._cond.wait()
            self._used += charge
            self._peak = max(self._peak, self._used)
        return charge

    def release(self, charge: int) -> None:
        with self._cond:
            if charge > self._used:
                raise ValueError(f"releasing {charge} bytes, only {self._used} in use")
            self._used -= charge
            self._cond.notify_all()

    @property
    def used(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        """The most bytes ever held at once (for tests and benchmarks)."""
        return self._peak
