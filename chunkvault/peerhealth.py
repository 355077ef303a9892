"""Peer health as `status`, `peers list` and ``GET /status`` report it: refresh each peer's
health tracker (probes, in parallel), then read one row per peer from it. The tracker
(:class:`chunkvault.backends.health.HealthPeer`) is the only judge of "up"; nothing here
decides it again."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from chunkvault.backends.health import SLOW_PROBE_SECONDS
from chunkvault.peerset import PlacedPeer

#: ``GET /status``: a probe younger than this is current enough (a dashboard polling every
#: second must not send every peer a request per poll). The CLI always probes now.
PROBE_MAX_AGE = 5.0
#: ``GET /status`` waits this long for probes at most: by then a peer that has not
#: answered is reported as not up, and its probe goes on in the background.
PROBE_WAIT = SLOW_PROBE_SECONDS + 0.5
#: Name prefix of the probe threads (the daemon does not wait for them on exit).
PROBE_THREAD_PREFIX = "probe"


def check_peers(
    peers: Sequence[PlacedPeer], max_age: float = 0.0, budget: float | None = None
) -> None:
    """Probe every peer whose state is older than ``max_age`` (0: every peer), all at
    once: one slow peer must not serialise the others. Waits for every probe, or at most
    ``budget`` seconds."""
    if not peers:
        return
    pool = ThreadPoolExecutor(max_workers=len(peers), thread_name_prefix=PROBE_THREAD_PREFIX)
    try:
        wait([pool.submit(placed.peer.check, max_age) for placed in peers], timeout=budget)
    finally:
        pool.shutdown(wait=budget is None)


def peer_row(placed: PlacedPeer) -> dict[str, Any]:
    """What is known about one peer now. ``error`` says why it is not up (None when up);
    ``last_error`` is the most recent failure, kept after a recovery."""
    peer = placed.peer
    latency = peer.last_latency
    up = peer.is_up  # read once: the daemon's workers may change it meanwhile
    return {
        "name": peer.name,
        "kind": peer.kind,
        "location": peer.location,
        "weight": placed.weight,
        "zone": placed.zone,
        "draining": placed.draining,
        "up": up,
        "error": None if up else peer.error or peer.last_error,
        "consecutive_failures": peer.consecutive_failures,
        "last_error": peer.last_error,
        "latency_ms": None if latency is None else round(latency * 1000, 1),
    }
