"""The byte budget that bounds memory in flight."""

from __future__ import annotations

import threading

import pytest

from chunkvault.bytebudget import ByteBudget


def test_acquire_blocks_until_enough_is_released() -> None:
    budget = ByteBudget(10)
    first = budget.acquire(6)
    got = threading.Event()

    def take() -> None:
        budget.release(budget.acquire(6))
        got.set()

    thread = threading.Thread(target=take)
    thread.start()
    assert not got.wait(0.2)  # 6 + 6 > 10: it waits
    budget.release(first)
    assert got.wait(5)
    thread.join()
    assert budget.used == 0 and budget.peak == 6


def test_a_chunk_larger_than_the_budget_takes_all_of_it_and_still_passes() -> None:
    budget = ByteBudget(10)
    charge = budget.acquire(25)
    assert charge == 10 and budget.used == 10
    budget.release(charge)
    assert budget.used == 0


def test_releasing_more_than_held_is_a_bug_that_is_caught() -> None:
    budget = ByteBudget(10)
    budget.acquire(3)
    with pytest.raises(ValueError, match="only 3 in use"):
        budget.release(4)
    with pytest.raises(ValueError):
        ByteBudget(0)


def test_many_threads_never_hold_more_than_the_capacity() -> None:
    budget = ByteBudget(100)

    def work() -> None:
        for size in (30, 70, 1, 100, 45):
            budget.release(budget.acquire(size))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.used == 0 and budget.peak <= 100
