"""Which replica a reader tries first: health, holders, expected wait, then rank."""

from __future__ import annotations

from chunkvault.backends import MemoryPeer, wrap_peer
from chunkvault.config import TransferConfig
from chunkvault.peerset import PlacedPeer
from chunkvault.replica_choice import Candidate, ReplicaChooser, order


def placed(*names: str) -> list[PlacedPeer]:
    return [PlacedPeer(wrap_peer(MemoryPeer(n), TransferConfig()), 1.0, None) for n in names]


def cand(up: bool = True, holder: bool = True, failed: bool = False, busy: int = 0,
         seconds: float = 0.0) -> Candidate:  # fmt: skip
    return Candidate(up, holder, failed, busy, seconds)


def test_up_before_down_holders_before_others_working_before_failed() -> None:
    assert order([cand(up=False), cand()]) == [1, 0]
    assert order([cand(holder=False), cand(seconds=9.0)]) == [1, 0]
    assert order([cand(failed=True), cand(seconds=9.0, busy=5)]) == [1, 0]


def test_the_peer_expected_to_answer_soonest_first_ties_in_rank_order() -> None:
    assert order([cand(seconds=0.2), cand(seconds=0.1)]) == [1, 0]
    # Two reads in flight on the faster peer: (2 + 1) x 0.1 > 1 x 0.2.
    assert order([cand(seconds=0.2), cand(seconds=0.1, busy=2)]) == [0, 1]
    assert order([cand(seconds=0.1), cand(seconds=0.1), cand(seconds=0.1)]) == [0, 1, 2]


def test_the_chooser_learns_from_reads_and_spreads_them_over_holders() -> None:
    chooser = ReplicaChooser()
    ranked = placed("a", "b", "c")
    holders = {"a", "b"}
    assert [p.name for p in chooser.order(ranked, holders)] == ["a", "b", "c"]
    chooser.succeeded("a", 0.5)
    chooser.succeeded("b", 0.1)
    assert [p.name for p in chooser.order(ranked, holders)] == ["b", "a", "c"]
    with chooser.reading("b"), chooser.reading("b"), chooser.reading("b"), chooser.reading("b"):
        # 5 x 0.1 = 0.5 on b, 1 x 0.5 on a: a tie, kept in rank order.
        assert chooser.stats("b").in_flight == 4
        assert [p.name for p in chooser.order(ranked, holders)] == ["a", "b", "c"]
    assert chooser.stats("b").in_flight == 0
    chooser.failed("b")
    assert [p.name for p in chooser.order(ranked, holders)] == ["a", "b", "c"]
    chooser.succeeded("b", 0.1)  # serves again: back in favour
    assert chooser.order(ranked, holders)[0].name == "b"


def test_a_peer_marked_down_by_its_health_goes_last() -> None:
    chooser = ReplicaChooser()
    ranked = placed("a", "b")
    ranked[0].peer._down_until = float("inf")  # what HealthPeer does after failures
    assert [p.name for p in chooser.order(ranked, {"a", "b"})] == ["b", "a"]
