"""What `check` concludes (chunkvault.integrity), from holdings alone."""

from __future__ import annotations

from chunkvault.integrity import Holdings, Problem, describe, placement_problems, sampled

PEERS = {"p0", "p1", "p2"}


def held(found: set[str], recorded: set[str] = frozenset(), files=("a", "b")) -> Holdings:
    return Holdings("pack", "ab" * 32, set(files), set(found), set(recorded))


def kinds(problems: list[Problem]) -> list[str]:
    return [p.kind for p in problems]


def test_an_object_on_r_peers_as_recorded_is_fine() -> None:
    assert placement_problems(held({"p0", "p1"}, {"p0", "p1"}), 2, PEERS, True) == []


def test_an_object_on_no_peer_is_lost_only_if_every_peer_was_listed() -> None:
    assert kinds(placement_problems(held(set(), {"p0"}), 2, PEERS, True)) == ["lost"]
    assert kinds(placement_problems(held(set(), {"p0"}), 2, PEERS - {"p0"}, False)) == ["unseen"]


def test_a_recorded_replica_is_missing_only_on_a_peer_that_was_listed() -> None:
    problems = placement_problems(held({"p0"}, {"p0", "p1"}), 2, PEERS, True)
    assert kinds(problems) == ["under-replicated"]  # one problem per object
    assert problems[0].detail == "on 1 of 2 peers (p0); recorded on p1, not there"
    unlisted = placement_problems(held({"p0"}, {"p0", "p1"}), 2, PEERS - {"p1"}, False)
    assert [p.detail for p in unlisted] == ["on 1 of 2 peers (p0)"]
    extra = placement_problems(held({"p0", "p2"}, {"p0", "p1", "p2"}), 2, PEERS, True)
    assert [(p.kind, p.detail) for p in extra] == [("missing", "recorded on p1, not there")]


def test_more_copies_than_r_are_no_problem() -> None:
    assert placement_problems(held({"p0", "p1", "p2"}), 2, PEERS, True) == []


def test_a_problem_names_a_few_files_and_counts_the_rest() -> None:
    files = tuple(f"f{i}" for i in range(8))
    line = describe(Problem("lost", "pack abcd", "on no peer", files))
    assert line == (
        "lost: pack abcd: on no peer (affects 8 file(s): f0, f1, f2, f3, f4 and 3 more)"
    )
    assert describe(Problem("keyring", "keyring on peer p1", "missing")) == (
        "keyring: keyring on peer p1: missing"
    )


def test_a_subset_samples_about_its_fraction_and_another_set_each_seed() -> None:
    names = [f"pack/{i:064x}" for i in range(4000)]
    first = {n for n in names if sampled(n, 0.25, b"seed one")}
    second = {n for n in names if sampled(n, 0.25, b"seed two")}
    assert 800 < len(first) < 1200 and 800 < len(second) < 1200
    assert first != second
    assert all(sampled(n, 1.0, b"any") for n in names[:10])
