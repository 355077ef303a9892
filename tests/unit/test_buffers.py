from __future__ import annotations

import threading

import pytest

from chunkvault.buffers import BufferPool


def test_slabs_are_reused_not_remade():
    pool = BufferPool(1024)
    a = pool.take(1000)
    assert len(a) == 1024 and pool.capacity(1000) == 1024
    pool.give(a)
    b = pool.take(600)
    assert b is a and pool.slabs == 1


def test_small_and_oversized_requests_get_their_own_exact_buffer():
    pool = BufferPool(1024)
    small = pool.take(100)  # below 1/8 of a slab: not worth a slab
    big = pool.take(5000)
    assert (len(small), len(big)) == (100, 5000)
    assert pool.capacity(100) == 100 and pool.capacity(5000) == 5000
    pool.give(small)
    pool.give(big)
    assert pool.slabs == 0 and pool.take(100) is not small


def test_slabs_made_is_the_most_in_use_at_once():
    pool = BufferPool(4096)
    barrier = threading.Barrier(4)
    lock = threading.Lock()
    seen: list[bytearray] = []

    def work() -> None:
        for _ in range(50):
            buf = pool.take(4000)
            with lock:
                seen.append(buf)
            pool.give(buf)
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= pool.slabs <= 4
    assert len({id(b) for b in seen}) == pool.slabs


def test_bad_slab_size_is_refused():
    with pytest.raises(ValueError, match="positive"):
        BufferPool(0)
