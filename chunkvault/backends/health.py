"""Health tracking: fail fast on a peer that keeps failing (a circuit breaker).

States: *up* -> after ``down_after_failures`` consecutive transient failures -> *down* for
``down_seconds`` (every call raises :class:`PeerDown` at once, nothing is sent) -> *half-open*:
exactly one call (the probe) goes through; success -> *up*, failure -> *down* again.

Only :class:`TransientError` counts as a failure. :class:`NotFound` and
:class:`PermanentError` are answers: the peer is alive, and a missing key or a refused
request must not take a healthy peer out of rotation.

An explicit :meth:`HealthPeer.probe` is a deliberate check that has already been retried,
so its verdict counts at once: a failed probe marks the peer down, and a probe the peer
refuses (no bucket, bad credentials) shows it as not up until a request succeeds.
:attr:`HealthPeer.is_up` is then the one answer to "is this peer up" that `status`,
`peers list`, ``GET /status`` and the metrics all report; :meth:`HealthPeer.check` is how
they refresh it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from chunkvault.backends.base import (
    NotFound,
    ObjectInfo,
    Peer,
    PeerDown,
    PeerError,
    PermanentError,
    TransientError,
)
from chunkvault.backends.wrapper import WrappingPeer

T = TypeVar("T")
log = logging.getLogger(__name__)

#: A key no one writes: ``stat`` of it is the cheapest round trip (S3: one HEAD -> 404).
PROBE_KEY = "chunkvault-probe/no-such-object"
#: A peer that has not answered a :meth:`HealthPeer.check` probe for this long is not up
#: (a hung peer takes its timeouts times its retries to fail; nobody should wait that long
#: to be told it is not answering).
SLOW_PROBE_SECONDS = 5.0


class HealthPeer(WrappingPeer):
    """Track consecutive transient failures; mark the peer down and fail fast."""

    def __init__(
        self,
        inner: Peer,
        down_after_failures: int = 3,
        down_seconds: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if down_after_failures < 1:
            raise ValueError(f"down_after_failures must be >= 1, got {down_after_failures}")
        super().__init__(inner)
        self.down_after_failures = down_after_failures
        self.down_seconds = down_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._down_until: float | None = None  # None = up
        self._probing = False  # a half-open probe call is in flight
        self._last_error: str | None = None
        self._last_latency: float | None = None
        self._refused: str | None = None  # why the last probe was refused, until a success
        self._probed_at: float | None = None  # clock() when the last probe completed
        self._probe_since: float | None = None  # clock() when the check() probe in flight began
        self._probe_lock = threading.Lock()  # one check() probe at a time

    # -- state, for `status` and placement ---------------------------------------------------

    @property
    def is_up(self) -> bool:
        """Neither marked down, nor refusing its probe, nor silent on one for too long."""
        return self._down_until is None and self._refused is None and self._silent_for() is None

    @property
    def error(self) -> str | None:
        """Why the peer is not up (None when it is)."""
        if self._refused is not None:
            return self._refused
        if self._down_until is not None:
            return self._last_error
        silent = self._silent_for()
        return None if silent is None else f"no answer to a probe for {silent:.0f}s"

    def _silent_for(self) -> float | None:
        """Seconds the check() probe in flight has waited, once that is too long."""
        since = self._probe_since
        if since is None:
            return None
        waited = self._clock() - since
        return waited if waited >= SLOW_PROBE_SECONDS else None

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def last_error(self) -> str | None:
        """The most recent transient failure or refused probe; kept after recovery, for
        diagnostics."""
        return self._last_error

    @property
    def last_latency(self) -> float | None:
        """Seconds taken by the most recent answered request (any outcome but transient)."""
        return self._last_latency

    @property
    def down_for(self) -> float:
        """Seconds until the next probe is allowed (0 when up or half-open)."""
        until = self._down_until
        return 0.0 if until is None else max(0.0, until - self._clock())

    # -- transitions ------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Raise PeerDown, or let the call through; True if it is the half-open probe."""
        with self._lock:
            if self._down_until is None:
                return False
            now = self._clock()
            if now >= self._down_until and not self._probing:
                self._probing = True
                return True
            wait = max(0.0, self._down_until - now)
            failures, error = self._failures, self._last_error
        when = "a probe is in flight" if wait == 0 else f"next probe in {wait:.1f}s"
        raise PeerDown(
            self.name, f"marked down after {failures} consecutive failures ({when}): {error}"
        )

    def _answered(self, probe: bool, latency: float | None, *, served: bool = True) -> None:
        """``served``: the request did what was asked (or found nothing): a refusal of an
        earlier probe no longer holds. A refused request (PermanentError) is not that."""
        with self._lock:
            if probe:
                self._probing = False
            was_down = self._down_until is not None
            self._failures = 0
            self._down_until = None
            if served:
                self._refused = None
            if latency is not None:
                self._last_latency = latency
        if was_down:
            log.info("peer %s is back up", self.name)

    def _failed(self, exc: TransientError, *, probe: bool = False, checked: bool = False) -> None:
        """``checked``: the failure of an explicit :meth:`probe`, whose caller reports the
        state itself (so it is logged at INFO: `status` shows it in its table)."""
        with self._lock:
            if probe:
                self._probing = False
            self._failures += 1
            self._last_error = exc.message
            if checked:
                self._probed_at = self._clock()
            # A failed probe (half-open or explicit) re-arms the cool-off; a failure that
            # completes while already down (a call admitted before) must not push the next
            # probe further away.
            mark = (
                probe
                or checked
                or (self._down_until is None and self._failures >= self.down_after_failures)
            )
            if mark:
                self._down_until = self._clock() + self.down_seconds
        if mark:
            log.log(
                logging.INFO if checked else logging.WARNING,
                "peer %s marked down for %.0fs after %d failures: %s",
                self.name,
                self.down_seconds,
                self._failures,
                exc.message,
            )

    def _abandoned(self, probe: bool) -> None:
        # Neither an answer nor a peer failure (a bug, KeyboardInterrupt, a listing the
        # caller stopped reading): let the next call be the probe.
        if probe:
            with self._lock:
                self._probing = False

    # -- hooks ------------------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        probe = self._admit()
        start = self._clock()
        try:
            result = fn()
        except NotFound:
            self._answered(probe, self._clock() - start)
            raise
        except PermanentError:
            self._answered(probe, self._clock() - start, served=False)
            raise
        except TransientError as exc:
            self._failed(exc, probe=probe)
            raise
        except BaseException:
            self._abandoned(probe)
            raise
        self._answered(probe, self._clock() - start)
        return result

    def _iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        # Admission happens at the first next(), inside the generator: a listing that is
        # created but never iterated must not hold the half-open probe slot forever.
        probe = self._admit()
        answered = False
        try:
            for info in self.inner.list(prefix):
                if not answered:
                    self._answered(probe, None)
                    answered, probe = True, False
                yield info
        except NotFound:
            self._answered(probe, None)
            raise
        except PermanentError:
            self._answered(probe, None, served=False)
            raise
        except TransientError as exc:
            self._failed(exc, probe=probe)
            raise
        except BaseException:
            self._abandoned(probe)
            raise
        if not answered:
            self._answered(probe, None)

    def probe(self) -> float:
        """One cheap request, even while down; update the state; return its latency.

        Raises the peer's error if it fails (after the inner retries): a transient one
        marks the peer down at once (the retries already happened), a refusal keeps it
        from being up until a request succeeds. A missing object is the expected answer.
        """
        start = self._clock()
        try:
            self.inner.stat(PROBE_KEY)
        except NotFound:
            pass
        except PermanentError as exc:
            self._answered(False, self._clock() - start, served=False)
            with self._lock:
                self._refused = self._last_error = exc.message
                self._probed_at = self._clock()
            raise
        except TransientError as exc:
            self._failed(exc, checked=True)
            raise
        latency = self._clock() - start
        self._answered(False, latency)
        with self._lock:
            self._probed_at = self._clock()
        return latency

    def check(self, max_age: float = 0.0) -> None:
        """Make the state current: probe now, unless a probe completed less than
        ``max_age`` seconds ago or the peer is in its cool-off (``max_age`` > 0 only: it
        is known to be down, and the next request after the cool-off probes it).

        Never raises a peer error: the outcome is the state. One probe at a time: with
        ``max_age`` > 0 a caller that finds one in flight returns at once (the state is as
        current as it gets, and a busy ``GET /status`` does not pile up threads behind a
        hung peer); with 0 it waits for that probe and then sends its own."""
        if not self._probe_lock.acquire(blocking=max_age <= 0):
            return
        try:
            if max_age > 0:
                probed = self._probed_at
                if self.down_for > 0 or (probed is not None and self._clock() - probed < max_age):
                    return
            self._probe_since = self._clock()
            try:
                with contextlib.suppress(PeerError):  # recorded: is_up and error say what
                    self.probe()
            finally:
                self._probe_since = None
        finally:
            self._probe_lock.release()
