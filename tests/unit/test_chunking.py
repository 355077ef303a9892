import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkvault.chunking import Chunker

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
