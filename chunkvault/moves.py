"""Where an object's copies should be after peers change (one added, re-weighted or being
drained): which copies `peers rebalance` and `peers drain` move. Pure.

An object keeps as many copies as it has (adding missing ones is `repair`'s job, removing
extra ones nobody's). They belong on the top-ranked peers not being drained, as writes
choose (weighted rendezvous on the object's id or name, the best peer of each zone first).
Rendezvous hashing moves little: when a peer joins, an object moves only if the new peer
now ranks among its top peers, and then only one copy moves, to the new peer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose


@dataclass(frozen=True)
class Move:
    to: tuple[str, ...]  # peers that get a copy
    off: tuple[str, ...]  # peers whose copy goes, once every one of ``to`` holds one


def plan_move(
    placement_id: str, holders: Collection[str], peers: Sequence[PlacedPeer]
) -> Move | None:
    """The move that puts the copies on ``holders`` where they belong, or None when they
    are there already. With fewer peers left than copies, the copies on peers being
    drained still go (the object keeps one per peer left)."""
    eligible = [p for p in peers if not p.draining]
    want = [p.name for p in choose(placement_id, eligible, len(holders))]
    to = tuple(name for name in want if name not in holders)
    off = tuple(sorted(name for name in holders if name not in want))
    return Move(to, off) if to or off else None


def plan_share_move(
    placement_id: str, shares: Mapping[str, int], peers: Sequence[PlacedPeer]
) -> Move | None:
    """As :func:`plan_move`, for the shares of an erasure-coded object (``shares``: holder
    -> index): a share stays on a peer among the top-ranked ones not being drained, one
    share per peer; each share elsewhere moves to the best-ranked of those that hold none:
    ``to[i]`` gets the share ``off[i]`` holds. Unlike a copy, a share never goes without a
    peer to take it (each one is a loss survived): with fewer peers left than shares, the
    rest stay where they are (`peers drain` refuses to start then)."""
    eligible = [p for p in peers if not p.draining]
    want = [p.name for p in choose(placement_id, eligible, len(shares))]
    off = sorted((n for n in shares if n not in want), key=lambda n: shares[n])
    to = [name for name in want if name not in shares][: len(off)]
    return Move(tuple(to), tuple(off[: len(to)])) if to else None
