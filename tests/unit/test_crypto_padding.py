"""Padmé padding above a floor: bounds, leakage, overhead and an unambiguous encoding."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkvault.crypto.padding import (
    LENGTH_BYTES,
    PaddingError,
    pad,
    padded_size,
    padme,
    unpad,
)

FLOOR = 1024
lengths = st.integers(1, 1 << 40)


def test_known_values():
    # E = floor(log2 L), S = floor(log2 E) + 1, round up to a multiple of 2^(E-S).
    assert [padme(n) for n in (0, 1, 2, 3, 7, 8, 9, 10, 11)] == [0, 1, 2, 3, 7, 8, 10, 10, 12]
    assert padme(1024) == 1024 and padme(1025) == 1088  # E=10, S=4: multiples of 64
    assert padme(2**20 + 1) == 2**20 + 2**15  # E=20, S=5: multiples of 32 KiB
    assert padded_size(0, FLOOR) == padded_size(FLOOR - LENGTH_BYTES, FLOOR) == FLOOR
    assert padded_size(FLOOR - LENGTH_BYTES + 1, FLOOR) == 1088
    assert padded_size(0, 512) == 512 and padded_size(509, 512) == 544


@given(lengths)
def test_padme_rounds_up_to_the_top_bits_only(length):
    padded = padme(length)
    e = length.bit_length() - 1
    s = e.bit_length()
    assert padded >= length
    assert padded % (1 << (e - s)) == 0  # the low E-S bits carry nothing
    assert padme(padded) == padded  # a padded size is its own bucket
    # Overhead below 2^-S, hence under 12% for every length (Nikitin et al. 2019).
    assert (padded - length) * (1 << s) < length or padded == length
    assert (padded - length) / length < 0.12


@given(lengths, lengths)
def test_padme_is_monotonic(a, b):
    a, b = sorted((a, b))
    assert padme(a) <= padme(b)


@pytest.mark.parametrize("e", [10, 16, 20, 24, 30])
def test_only_2_to_the_s_sizes_per_doubling(e):
    # Every length in [2^E, 2^(E+1)) lands on one of 2^S sizes: a size tells O(log log L)
    # bits. Checked over a sample, not all 2^E lengths.
    s = e.bit_length()
    step = max(1, (1 << e) // 4096)
    buckets = {padme(n) for n in range(1 << e, 1 << (e + 1), step)}
    assert len(buckets) <= (1 << s) + 1  # +1: the top rounds up to 2^(E+1) itself


@given(st.integers(0, 64 << 20))
def test_overhead_above_the_floor_is_bounded(size):
    padded = padded_size(size, FLOOR)
    assert padded >= max(FLOOR, size + LENGTH_BYTES)
    if size + LENGTH_BYTES > FLOOR:
        assert (padded - size - LENGTH_BYTES) / (size + LENGTH_BYTES) < 0.0625  # E >= 10
    if size >= 64 * 1024:
        assert (padded - size - LENGTH_BYTES) / (size + LENGTH_BYTES) < 0.032  # E >= 16


@settings(max_examples=200)
@given(st.binary(max_size=20_000), st.integers(0, 20_000))
def test_round_trip(payload, cut):
    padded = pad(payload, floor=FLOOR)
    assert len(padded) == padded_size(len(payload), FLOOR)
    assert unpad(padded) == payload
    assert pad(payload[:cut], payload[cut:], floor=FLOOR) == padded  # parts are simply concatenated


def test_every_small_payload_has_the_floor_size():
    assert {len(pad(bytes(n), floor=FLOOR)) for n in range(FLOOR - LENGTH_BYTES + 1)} == {FLOOR}


def test_the_length_field_makes_the_encoding_unambiguous():
    # Payloads that end in zero bytes keep them: nothing is stripped by guessing.
    for payload in (b"", b"\0", b"abc\0\0", bytes(1500)):
        assert unpad(pad(payload, floor=FLOOR)) == payload


@pytest.mark.parametrize(
    ("padded", "message"),
    [
        (b"\0\0\0", "too short"),
        (struct.pack(">I", 5) + b"abcd", "exceeds"),
        (struct.pack(">I", 2) + b"ab" + b"\0\0\x01\0", "not zero"),
        (struct.pack(">I", 0xFFFFFFFF) + bytes(100), "exceeds"),
    ],
)
def test_malformed_padding_is_refused(padded, message):
    with pytest.raises(PaddingError, match=message):
        unpad(padded)


def test_readers_accept_any_zero_padding():
    # The policy (Padmé, floor) is the writer's: a reader accepts any zero padding, so
    # the policy can change without a format change.
    assert unpad(struct.pack(">I", 3) + b"abc") == b"abc"
    assert unpad(struct.pack(">I", 3) + b"abc" + bytes(5000)) == b"abc"


def test_unpad_takes_a_view_of_a_reused_buffer_and_still_checks_every_padding_byte():
    """Restore opens chunks in slabs: unpad gets a view, and returns a view of the same
    buffer (no copy of the payload)."""
    slab = bytearray(pad(b"payload", floor=FLOOR)) + b"\xff" * 10  # stale bytes past the end
    view = memoryview(slab)[: len(slab) - 10]
    inner = unpad(view)
    assert inner == b"payload" and inner.obj is slab
    slab[len(slab) - 11] = 1  # one padding byte not zero
    with pytest.raises(PaddingError, match="not zero"):
        unpad(view)
