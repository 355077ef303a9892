"""LightFuture keeps Future's contract for what the Ingestor's callers use, at a fraction
of its memory."""

from __future__ import annotations

import threading
import tracemalloc
from concurrent.futures import Future, InvalidStateError

import pytest

from chunkvault.light_future import LightFuture


def test_result_callbacks_and_waiting_across_threads() -> None:
    future: LightFuture[int] = LightFuture()
    seen: list[tuple[str, int]] = []
    future.add_done_callback(lambda f: seen.append(("early", f.result())))
    assert not future.done()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    threading.Timer(0.05, future.set_result, (7,)).start()
    assert future.result(timeout=5) == 7  # woken by the other thread
    assert future.done() and future.exception() is None
    future.add_done_callback(lambda f: seen.append(("late", f.result())))  # runs at once
    assert seen == [("early", 7), ("late", 7)]
    with pytest.raises(InvalidStateError):
        future.set_result(8)


def test_an_exception_is_raised_by_result_and_a_failing_callback_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    future: LightFuture[int] = LightFuture()
    future.add_done_callback(lambda f: 1 / 0)
    called: list[BaseException | None] = []
    future.add_done_callback(lambda f: called.append(f.exception()))
    error = ValueError("boom")
    future.set_exception(error)
    with pytest.raises(ValueError, match="boom"):
        future.result()
    assert called == [error]  # the failing callback did not stop the next one
    assert "exception calling callback" in caplog.text


def test_many_waiters_and_setters_race_without_losing_a_wake_up() -> None:
    for _ in range(200):
        future: LightFuture[int] = LightFuture()
        got: list[int] = []
        waiter = threading.Thread(target=lambda f=future, out=got: out.append(f.result(timeout=5)))
        waiter.start()
        future.set_result(1)
        waiter.join(5)
        assert got == [1]


def test_a_twentieth_of_a_futures_memory() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        light = [LightFuture() for _ in range(2000)]
        middle = tracemalloc.get_traced_memory()[0]
        heavy = [Future() for _ in range(2000)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert (middle - before) * 10 < after - middle
    assert len(light) == len(heavy)
