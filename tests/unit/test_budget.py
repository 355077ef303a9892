"""The byte budget: bounds what is held across threads, never deadlocks on a big request."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chunkvault.budget import BudgetClosed, ByteBudget


def test_acquire_within_limit_and_release() -> None:
    budget = ByteBudget(100)
    assert budget.acquire(60)
    assert budget.acquire(40)
    assert budget.held == 100
    assert not budget.acquire(1, timeout=0.05)  # full: waits, then gives up
    budget.release(40)
    assert budget.acquire(30, timeout=0.05)
    assert budget.held == 90
    assert budget.peak == 100


def test_request_larger_than_budget_granted_when_nothing_is_held() -> None:
    budget = ByteBudget(10)
    assert budget.acquire(25, timeout=1)  # alone it can never fit: must not deadlock
    assert not budget.acquire(1, timeout=0.05)  # but nothing joins it
    budget.release(25)
    assert budget.held == 0


def test_big_request_waits_until_the_budget_drains() -> None:
    budget = ByteBudget(10)
    budget.acquire(5)
    granted = threading.Event()

    def big() -> None:
        budget.acquire(25)
        granted.set()

    thread = threading.Thread(target=big)
    thread.start()
    assert not granted.wait(0.1)
    budget.release(5)
    assert granted.wait(2)
    thread.join()
    assert budget.held == 25


def test_many_threads_never_exceed_the_limit() -> None:
    budget = ByteBudget(1000)
    seen: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        with budget.holding(100 + n % 7), lock:
            seen.append(budget.held)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(400)))
    assert max(seen) <= 1000
    assert budget.peak <= 1000
    assert budget.held == 0


def test_close_wakes_waiters() -> None:
    budget = ByteBudget(10)
    budget.acquire(10)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            budget.acquire(5)
        except BudgetClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    budget.close()
    thread.join(2)
    assert not thread.is_alive()
    assert len(errors) == 1
    with pytest.raises(BudgetClosed):
        budget.acquire(1)


def test_bad_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)
    budget = ByteBudget(10)
    with pytest.raises(ValueError):
        budget.acquire(-1)
    with pytest.raises(ValueError):
        budget.release(1)  # nothing held
