"""Where copies go when peers change (chunkvault.moves): minimal movement."""

from __future__ import annotations

import hashlib

from chunkvault.backends.memory import MemoryPeer
from chunkvault.backends.stack import wrap_peer
from chunkvault.config import TransferConfig
from chunkvault.moves import Move, plan_move, plan_share_move
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose


def peers(
    *names: str, draining: str = "", weights: dict[str, float] | None = None
) -> list[PlacedPeer]:
    weights = weights or {}
    return [
        PlacedPeer(wrap_peer(MemoryPeer(n), TransferConfig()), weights.get(n, 1.0), None,
                   draining=n == draining)
        for n in names
    ]  # fmt: skip


def ids(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def placed_on(object_id: str, group: list[PlacedPeer], r: int = 2) -> set[str]:
    return {p.name for p in choose(object_id, group, r)}


def test_objects_where_they_belong_do_not_move() -> None:
    group = peers("p0", "p1", "p2")
    assert all(plan_move(i, placed_on(i, group), group) is None for i in ids(200))


def test_a_new_peer_takes_about_its_share_and_every_move_is_one_copy_to_it() -> None:
    before, after = peers("p0", "p1", "p2", "p3"), peers("p0", "p1", "p2", "p3", "p4")
    objects = ids(3000)
    moves = [plan_move(i, placed_on(i, before), after) for i in objects]
    moved = [m for m in moves if m is not None]
    assert all(m.to == ("p4",) and len(m.off) == 1 for m in moved)
    # R=2 of 5 peers: a new peer ranks in an object's top 2 for about 2/5 of them.
    assert abs(len(moved) / len(objects) - 2 / 5) < 0.04


def test_draining_moves_exactly_the_copies_on_that_peer() -> None:
    group = peers("p0", "p1", "p2", "p3")
    drained = peers("p0", "p1", "p2", "p3", draining="p1")
    for i in ids(500):
        holders = placed_on(i, group)
        move = plan_move(i, holders, drained)
        if "p1" not in holders:
            assert move is None
        else:
            assert move is not None and move.off == ("p1",) and len(move.to) == 1
            assert move.to[0] not in holders | {"p1"}


def test_copies_beyond_r_are_kept_and_a_lone_copy_stays_lone() -> None:
    group = peers("p0", "p1", "p2", "p3")
    i = ids(1)[0]
    assert plan_move(i, {p.name for p in group}, group) is None  # 4 copies on 4 peers
    lone = plan_move(i, {"p3"}, group)
    best = next(iter(placed_on(i, group, 1)))
    assert lone == (None if best == "p3" else Move((best,), ("p3",)))


def test_with_fewer_peers_left_than_copies_the_drained_copy_still_goes() -> None:
    group = peers("p0", "p1", "p2", draining="p2")
    move = plan_move(ids(1)[0], {"p0", "p1", "p2"}, group)
    assert move == Move((), ("p2",))


def test_reweighting_moves_copies_toward_the_heavier_peer_only() -> None:
    before = peers("p0", "p1", "p2", "p3")
    after = peers("p0", "p1", "p2", "p3", weights={"p3": 3.0})
    moved = [m for i in ids(2000) if (m := plan_move(i, placed_on(i, before), after))]
    assert moved and all(m.to == ("p3",) for m in moved)


# --- shares of erasure-coded objects (plan_share_move) ---------------------------------------


def shares_on(object_id: str, group: list[PlacedPeer], width: int = 5) -> dict[str, int]:
    return {p.name: i for i, p in enumerate(choose(object_id, group, width))}


def test_shares_where_they_belong_do_not_move_and_a_new_peer_takes_one_at_most() -> None:
    five = peers("p0", "p1", "p2", "p3", "p4")
    six = peers("p0", "p1", "p2", "p3", "p4", "p5")
    assert all(plan_share_move(i, shares_on(i, five), five) is None for i in ids(200))
    moved = 0
    for object_id in ids(600):
        move = plan_share_move(object_id, shares_on(object_id, five), six)
        if move is not None:
            assert move.to == ("p5",) and len(move.off) == 1  # one share, to the new peer
            moved += 1
    assert 0.7 < moved / 600 / (5 / 6) < 1.3  # the new peer enters the top 5 of 5/6


def test_a_drained_peer_loses_every_share_to_a_peer_that_holds_none() -> None:
    six = peers("p0", "p1", "p2", "p3", "p4", "p5", draining="p2")
    for object_id in ids(300):
        held = shares_on(object_id, peers("p0", "p1", "p2", "p3", "p4", "p5"))
        move = plan_share_move(object_id, held, six)
        if "p2" not in held:
            assert move is None
            continue
        assert move is not None and move.off == ("p2",) and len(move.to) == 1
        assert move.to[0] not in held and move.to[0] != "p2"


def test_with_fewer_peers_left_than_shares_a_share_stays_rather_than_go() -> None:
    five = peers("p0", "p1", "p2", "p3", "p4", draining="p4")
    held = {f"p{i}": i for i in range(5)}
    assert plan_share_move("ab" * 32, held, five) is None
