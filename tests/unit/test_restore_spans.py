"""Span planning for packed chunks: adjacent bodies in one read, bounded size and waste."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkvault.restore_spans import plan_spans


def test_adjacent_bodies_are_one_span_and_a_shared_body_is_read_once() -> None:
    wanted = [(5, 100, "a"), (105, 50, "b"), (155, 10, "c"), (105, 50, "d")]
    (span,) = plan_spans("p", wanted, max_span=1000, max_gap=0)
    assert (span.offset, span.length) == (5, 160)
    assert [(b.offset, b.length, b.wanted_by) for b in span.bodies] == [
        (5, 100, ("a",)), (105, 50, ("b", "d")), (155, 10, ("c",)),
    ]  # fmt: skip


def test_a_gap_wider_than_allowed_or_a_full_span_starts_a_new_span() -> None:
    wanted = [(0, 10, 1), (15, 10, 2), (100, 10, 3), (110, 10, 4)]
    spans = plan_spans("p", wanted, max_span=20, max_gap=5)
    assert [(s.offset, s.length) for s in spans] == [(0, 10), (15, 10), (100, 20)]
    assert [(s.offset, s.length) for s in plan_spans("p", wanted, 1000, 5)] == [(0, 25), (100, 20)]


def test_a_body_over_max_span_is_a_span_of_its_own() -> None:
    spans = plan_spans("p", [(0, 50, "big"), (50, 5, "small")], max_span=10, max_gap=100)
    assert [(s.offset, s.length) for s in spans] == [(0, 50), (50, 5)]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_spans("p", [(0, 0, "x")], 10, 0)
    with pytest.raises(ValueError):
        plan_spans("p", [], 0, 0)


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 500)), max_size=60),
    st.integers(1, 3000),
    st.integers(0, 800),
)
def test_every_body_is_in_exactly_one_span_within_the_bounds(
    places: list[tuple[int, int]], max_span: int, max_gap: int
) -> None:
    wanted = [(offset, length, i) for i, (offset, length) in enumerate(places)]
    spans = plan_spans("p", wanted, max_span, max_gap)
    seen = []
    for span in spans:
        assert span.length <= max_span or len(span.bodies) == 1
        previous_end = None
        for body in span.bodies:
            assert span.offset <= body.offset
            assert body.offset + body.length <= span.offset + span.length
            if previous_end is not None:
                assert body.offset - previous_end <= max_gap
            previous_end = max(previous_end or 0, body.offset + body.length)
            seen += list(body.wanted_by)
    assert sorted(seen) == list(range(len(places)))
