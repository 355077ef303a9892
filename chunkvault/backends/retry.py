"""Retries with exponential backoff and full jitter: the ONE place requests are retried.

botocore's own retries are switched off (``total_max_attempts=1`` in ``s3.py``) so that
attempts do not multiply (4 botocore x 4 ours = 16) and so that every failure is seen here
and, after the last attempt, by the health tracker.

Only :class:`TransientError` is retried. :class:`NotFound` and :class:`PermanentError`
cannot change by asking again, and :class:`PeerDown` means the health tracker already
decided not to send anything: retrying it would defeat the fail-fast.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from chunkvault.backends.base import ObjectInfo, Peer, PeerDown, TransientError
from chunkvault.backends.wrapper import WrappingPeer

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryPeer(WrappingPeer):
    """Retry transient failures up to ``retries`` times after the first attempt."""

    def __init__(
        self,
        inner: Peer,
        retries: int = 3,
        *,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        super().__init__(inner)
        self.retries = retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1``: uniform in [0, min(cap, base * 2^n)].

        Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the
        retries of many workers that failed together instead of having them retry in step.
        """
        return self._rng() * min(self.max_delay, self.base_delay * 2**attempt)

    def _wait(self, op: str, attempt: int, exc: TransientError) -> None:
        delay = self.backoff(attempt)
        log.debug(
            "peer %s: %s failed (%s); retry %d/%d in %.2fs",
            self.name,
            op,
            exc.message,
            attempt + 1,
            self.retries,
            delay,
        )
        self._sleep(delay)

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except PeerDown:
                raise
            except TransientError as exc:
                if attempt >= self.retries:
                    raise
                self._wait(op, attempt, exc)
                attempt += 1

    def _iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        # A listing that fails halfway restarts and skips what was already yielded: keys
        # come in key order, so "everything <= the last key" is exactly what was seen.
        # Progress resets the attempt count, so a long listing through a flaky peer goes
        # on as long as every attempt moves forward (it ends: the listing is finite).
        last: str | None = None
        attempt = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if last is not None and info.key <= last:
                        continue
                    yield info
                    last = info.key
                    attempt = 0
                return
            except PeerDown:
                raise
            except TransientError as exc:
                if attempt >= self.retries:
                    raise
                self._wait("list", attempt, exc)
                attempt += 1
