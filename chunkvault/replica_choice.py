"""Which replica of a chunk to read first: up peers, known holders, then the one expected to
answer soonest.

The expected wait on a peer is (reads in flight on it + 1) x its usual time per read, an
average over this reader's own reads seeded by the health tracker's last latency. So a
restore spreads its reads over every holder and moves them away from a slow or loaded
peer, instead of sending each chunk to its rendezvous-first holder whatever that peer is
doing (least expected delay, as load balancers do). A peer whose last read failed (down,
damaged, hostile) goes after those whose last read worked, until it serves one again.
Ties keep the rendezvous rank, so an idle reader reads where the chunk was placed first.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from chunkvault.peerset import PlacedPeer

#: Weight of the newest read in the running average of a peer's time per read.
EWMA_ALPHA = 0.3


@dataclass
class PeerReads:
    in_flight: int = 0
    seconds: float | None = None  # running average time of one read
    failed: bool = False  # the last read from this peer did not give a good chunk


@dataclass(frozen=True)
class Candidate:
    """What the choice looks at for one peer (a snapshot; pure data)."""

    up: bool
    holder: bool
    failed: bool
    in_flight: int
    seconds: float

    def key(self) -> tuple[bool, bool, bool, float]:
        return (not self.up, not self.holder, self.failed, (self.in_flight + 1) * self.seconds)


def order(candidates: Sequence[Candidate]) -> list[int]:
    """Indices of ``candidates`` (given in rendezvous rank order), best first."""
    return sorted(range(len(candidates)), key=lambda i: candidates[i].key())


class ReplicaChooser:
    """Per-peer read statistics of one reader; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, PeerReads] = {}

    def order(self, ranked: Sequence[PlacedPeer], holders: Collection[str]) -> list[PlacedPeer]:
        with self._lock:
            candidates = [self._candidate(p, p.name in holders) for p in ranked]
        return [ranked[i] for i in order(candidates)]

    def _candidate(self, placed: PlacedPeer, holder: bool) -> Candidate:
        reads = self._peers.get(placed.name) or PeerReads()
        seconds = reads.seconds
        if seconds is None:  # nothing read here yet: what the health tracker last saw
            seconds = placed.peer.last_latency or 0.0
        return Candidate(placed.peer.is_up, holder, reads.failed, reads.in_flight, seconds)

    @contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Count a read from ``name`` as in flight while the block runs."""
        with self._lock:
            self._peers.setdefault(name, PeerReads()).in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._peers[name].in_flight -= 1

    def succeeded(self, name: str, seconds: float) -> None:
        with self._lock:
            reads = self._peers.setdefault(name, PeerReads())
            reads.failed = False
            old = reads.seconds
            reads.seconds = seconds if old is None else old + EWMA_ALPHA * (seconds - old)

    def failed(self, name: str) -> None:
        with self._lock:
            self._peers.setdefault(name, PeerReads()).failed = True

    def stats(self, name: str) -> PeerReads:
        with self._lock:
            reads = self._peers.get(name) or PeerReads()
            return PeerReads(reads.in_flight, reads.seconds, reads.failed)
