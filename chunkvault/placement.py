"""Where a chunk's replicas live: weighted rendezvous hashing (pure, no I/O).

Every peer gets a score per chunk, ``-weight / ln(u)`` with ``u`` a hash of (chunk, peer)
mapped into (0, 1); the peers sorted by descending score are that chunk's preference list.
This is Ceph's straw2 / "logarithmic method" rendezvous hashing: a peer wins a chunk with
probability proportional to its weight, and adding or removing a peer only moves chunks
that gain or lose that peer. The byte-exact construction is specified in docs/placement.md.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

__all__ = ["PlacementPeer", "choose", "rank", "score"]

# Part of the hash input: changing it re-places every chunk, so bump it only with a migration.
# BLAKE2 zero-pads the personalization string to 16 bytes.
_PERSON = b"cv-place-v1"


class PlacementPeer(Protocol):
    """Anything with these attributes: config objects, backends, frozen dataclasses.

    Read-only properties (rather than plain attributes) so that frozen dataclasses and
    ``int`` weights also satisfy the protocol for a type checker.
    """

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    @property
    def zone(self) -> str | None: ...


P = TypeVar("P", bound=PlacementPeer)


def _unit(chunk_id: str, peer_name: str) -> float:
    """The pair's hash as an exact double in (0, 1); never 0 or 1, so ln(u) is finite and < 0."""
    data = chunk_id.encode("utf-8") + b"\x00" + peer_name.encode("utf-8")
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8, person=_PERSON).digest(), "big")
    # Keep the top 52 bits: (k + 0.5) / 2**52 is then exactly representable, so every
    # implementation gets the same u. (h + 0.5) / 2**64 would round, and reach 1.0 for the
    # top 2**10 values of h, making ln(u) == 0.
    return ((h >> 12) + 0.5) / 2.0**52


def score(chunk_id: str, peer: PlacementPeer) -> float:
    """The peer's straw length for this chunk; higher is better. Always > 0."""
    weight = peer.weight
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"peer {peer.name!r}: weight must be a finite number > 0, got {weight!r}")
    return -weight / math.log(_unit(chunk_id, peer.name))


def rank(chunk_id: str, peers: Sequence[P]) -> list[P]:
    """All peers, best first: descending score, ties broken by ascending name."""
    names = [p.name for p in peers]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate peer names: {', '.join(dupes)}")
    # One hash per pair; the name tie-break makes the order independent of input order.
    keyed = sorted((-score(chunk_id, p), p.name, i) for i, p in enumerate(peers))
    return [peers[i] for _, _, i in keyed]


def choose(chunk_id: str, peers: Sequence[P], r: int, exclude: Collection[str] = ()) -> list[P]:
    """The r peers that hold this chunk's replicas (fewer if not enough peers remain).

    Peers named in ``exclude`` (e.g. ones that just failed a write) are dropped before
    choosing, so the next-ranked peer takes their place - including their zone slot.
    Zone-aware like CRUSH's chooseleaf: the best peer of each zone first, in score order,
    then the remaining slots from the rest of the ranking. A peer without a zone counts as
    a zone of its own, so with no zones at all this is simply the top r of ``rank``.
    """
    if r < 0:
        raise ValueError(f"replica count must be >= 0, got {r}")
    ranked = rank(chunk_id, peers)  # validates the full set, excluded peers included
    excluded = set(exclude)
    eligible = [p for p in ranked if p.name not in excluded]
    leaders: list[P] = []
    rest: list[P] = []
    seen: set[str | tuple[str]] = set()
    for p in eligible:
        # A 1-tuple can never equal a zone string, so zone-less peers never collide.
        key: str | tuple[str] = p.zone if p.zone is not None else (p.name,)
        (rest if key in seen else leaders).append(p)
        seen.add(key)
    return (leaders + rest)[:r]
