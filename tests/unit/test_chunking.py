import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc.cy import FastCDC

from chunkvault.chunking import CDC_LIMITS, FIXED_LIMITS, Chunker, MiB, chunker_problems

SMALL = Chunker("cdc", min_size=256, avg_size=1024, max_size=4096)


def chunks_of(chunker: Chunker, data: bytes) -> list[bytes]:
    return list(chunker.split(io.BytesIO(data)))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=50_000), st.sampled_from(["cdc", "fixed"]))
def test_chunks_concatenate_to_the_input_and_respect_bounds(data, mode):
    chunker = Chunker(mode, min_size=256, avg_size=1024, max_size=4096)
    chunks = chunks_of(chunker, data)
    assert b"".join(chunks) == data
    assert all(chunks)
    for chunk in chunks[:-1]:
        if mode == "cdc":
            assert 256 <= len(chunk) <= 4096
        else:
            assert len(chunk) == 1024
    if chunks:
        assert len(chunks[-1]) <= 4096


def test_empty_input_has_no_chunks():
    assert chunks_of(SMALL, b"") == []
    assert chunks_of(Chunker("fixed", avg_size=1024), b"") == []


def test_cdc_is_deterministic_and_shift_resistant():
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(200_000))
    before = chunks_of(SMALL, data)
    assert chunks_of(SMALL, data) == before
    # Insert 10 bytes near the start: CDC re-syncs, so most chunks are unchanged...
    after = chunks_of(SMALL, data[:500] + b"INSERTED!!" + data[500:])
    shared = set(before) & set(after)
    assert len(shared) >= len(before) - 3
    # ...while fixed-size chunking shifts every later chunk.
    fixed = Chunker("fixed", avg_size=1024)
    f_before = chunks_of(fixed, data)
    f_after = chunks_of(fixed, data[:500] + b"INSERTED!!" + data[500:])
    assert len(set(f_before) & set(f_after)) <= 1


def test_average_size_is_near_configuration():
    data = os.urandom(4 * 1024 * 1024)
    chunker = Chunker("cdc", min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
    chunks = chunks_of(chunker, data)
    mean = len(data) / len(chunks)
    # pyfastcdc's effective mean is about avg + min (cut-point skipping).
    assert 40 * 1024 < mean < 140 * 1024


class TrickleReader(io.RawIOBase):
    """A stream returning at most 100 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(100, len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("mode", ["cdc", "fixed"])
def test_short_reads_give_the_same_chunks(mode):
    data = os.urandom(50_000)
    chunker = Chunker(mode, min_size=256, avg_size=1024, max_size=4096)
    assert list(chunker.split(TrickleReader(data))) == chunks_of(chunker, data)


# --- limits: the chunker, config validation and the real FastCDC agree -------------------


def fastcdc_accepts(min_size: int, avg_size: int, max_size: int) -> bool:
    """Ask the compiled FastCDC that Chunker really runs."""
    try:
        FastCDC(avg_size, min_size=min_size, max_size=max_size)
    except ValueError:
        return False
    return True


def test_published_limits_are_the_compiled_chunkers_limits():
    # DESIGN.md §7: min 64 B..1 MiB, avg 256 B..4 MiB, max 1 KiB..16 MiB.
    assert {
        "min_size": (64, MiB),
        "avg_size": (256, 4 * MiB),
        "max_size": (1024, 16 * MiB),
    } == CDC_LIMITS
    (min_lo, min_hi), (avg_lo, avg_hi), (max_lo, max_hi) = CDC_LIMITS.values()
    # Each bound is accepted and one byte beyond it refused, the others held valid.
    assert fastcdc_accepts(min_lo, avg_lo, max_lo)
    assert fastcdc_accepts(min_hi, avg_hi, max_hi)
    assert not fastcdc_accepts(min_lo - 1, avg_lo, max_lo)
    assert not fastcdc_accepts(min_hi + 1, avg_hi, max_hi)
    assert not fastcdc_accepts(min_lo, avg_lo - 1, max_lo)
    assert not fastcdc_accepts(min_lo, avg_hi + 1, max_hi)
    assert not fastcdc_accepts(min_lo, avg_lo, max_lo - 1)
    assert not fastcdc_accepts(min_hi, avg_hi, max_hi + 1)


sizes = st.one_of(
    st.integers(0, 64 * MiB),
    st.sampled_from(
        sorted({b + d for lim in CDC_LIMITS.values() for b in lim for d in (-1, 0, 1)})
    ),
)


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, sizes)
def test_chunker_accepts_exactly_what_fastcdc_accepts(min_size, avg_size, max_size):
    problems = chunker_problems("cdc", min_size, avg_size, max_size)
    assert (problems == []) == fastcdc_accepts(min_size, avg_size, max_size)
    if problems:
        with pytest.raises(ValueError, match=r"^chunking\.(min|avg|max)_size: "):
            Chunker("cdc", min_size, avg_size, max_size)
    else:
        data = os.urandom(3 * max_size // 2 + 1) if max_size <= MiB else os.urandom(4096)
        assert b"".join(chunks_of(Chunker("cdc", min_size, avg_size, max_size), data)) == data


def test_the_reviews_sizes_are_refused_naming_each_key():
    problems = dict(chunker_problems("cdc", 6 * MiB, 7 * MiB, 8 * MiB))
    assert problems == {
        "min_size": "must be 64 B..1 MiB (FastCDC's limit), got 6 MiB",
        "avg_size": "must be 256 B..4 MiB (FastCDC's limit), got 7 MiB",
    }
    with pytest.raises(ValueError, match=r"chunking\.min_size: .*chunking\.avg_size: "):
        Chunker("cdc", 6 * MiB, 7 * MiB, 8 * MiB)


def test_fixed_mode_checks_only_its_one_size():
    low, high = FIXED_LIMITS
    assert chunker_problems("fixed", 6 * MiB, high, 1) == []  # min/max are not used
    assert [k for k, _ in chunker_problems("fixed", 0, low - 1, 0)] == ["avg_size"]
    assert [k for k, _ in chunker_problems("fixed", 0, high + 1, 0)] == ["avg_size"]
    data = os.urandom(5000)
    assert chunks_of(Chunker("fixed", avg_size=low), data)[0] == data[:low]
    with pytest.raises(ValueError, match=r"chunking\.avg_size: must be 1 KiB\.\.16 MiB in fixed"):
        Chunker("fixed", avg_size=100)


class Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, as pipes and sockets do."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self._step, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 200_000),
    st.integers(0, 2**32 - 1),
    st.sampled_from([(64, 256, 1024), (256, 1024, 4096), (1024, 4096, 16384)]),
    st.sampled_from([1 << 20, 1000, 4097]),
)
def test_cut_points_are_exactly_those_of_pyfastcdc_cut_stream(size, seed, sizes, step):
    """The reused window must cut where pyfastcdc's own streaming does: otherwise chunks
    of files stored before would not deduplicate against the same content now."""
    low, avg, high = sizes
    data = random.Random(seed).randbytes(size)
    expected = [bytes(c.data) for c in FastCDC(avg, min_size=low, max_size=high).cut_stream(
        io.BytesIO(data))]  # fmt: skip
    chunker = Chunker("cdc", min_size=low, avg_size=avg, max_size=high)
    assert [bytes(v) for v in chunker.views(Trickle(data, step))] == expected
    assert chunks_of(chunker, data) == expected  # and again, in the now reused window


def test_windows_are_reused_across_streams_and_given_back_when_abandoned():
    chunker = Chunker("cdc", min_size=256, avg_size=1024, max_size=4096)
    data = random.Random(3).randbytes(50_000)
    for _ in range(3):
        assert b"".join(chunks_of(chunker, data)) == data
    views = chunker.views(io.BytesIO(data))
    next(views)
    views.close()  # a file that changed while read: its reader stops early
    assert b"".join(chunks_of(chunker, data)) == data
    assert chunker._windows.slabs == 1


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 60_000),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["cdc", "fixed"]),
    st.integers(-1, 70_000),
    st.sampled_from([1 << 20, 1000]),
)
def test_a_size_hint_changes_the_buffer_never_the_cuts(size, seed, mode, hint, step):
    """A small file gets a buffer of its size, not a window (a reader of small files held
    a 12 MiB window each); the hint may be wrong (the file grew or shrank while read),
    and the chunks are still exactly those without it."""
    data = random.Random(seed).randbytes(size)
    chunker = Chunker(mode, min_size=256, avg_size=1024 * 8, max_size=4096 * 8)
    expected = [bytes(v) for v in chunker.views(io.BytesIO(data))]
    hinted = [bytes(v) for v in chunker.views(Trickle(data, step), None if hint < 0 else hint)]
    assert hinted == expected


def test_a_small_file_takes_a_buffer_of_its_size_not_a_window():
    chunker = Chunker("cdc", min_size=256, avg_size=1024, max_size=4096)
    window = chunker._window_size()
    taken: list[int] = []
    real_take = chunker._windows.take
    chunker._windows.take = lambda n: taken.append(n) or real_take(n)  # type: ignore[method-assign]
    data = os.urandom(100)
    assert [bytes(v) for v in chunker.views(io.BytesIO(data), len(data))] == [data]
    assert taken == [101] and taken[0] < window
