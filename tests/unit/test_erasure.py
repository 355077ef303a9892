"""chunkvault.erasure: shares round-trip from any k of them, to the byte; a range maps onto
the data shares; headers that do not fit are refused."""

from __future__ import annotations

import hashlib
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkvault.erasure import (
    HEADER_SIZE,
    Scheme,
    ShareError,
    decode,
    encode,
    parse_header,
    segment_size,
    span,
    verified,
)


@given(
    body=st.binary(min_size=0, max_size=3000),
    k=st.integers(1, 6),
    m=st.integers(1, 4),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_any_k_shares_give_the_object_back(
    body: bytes, k: int, m: int, data: st.DataObject
) -> None:
    scheme = Scheme(k, m)
    shares = encode(body, scheme)
    assert len(shares) == scheme.width
    assert sum(len(s) for s in shares) == scheme.stored_size(len(body))
    picked = data.draw(st.lists(st.integers(0, scheme.width - 1), min_size=k, max_size=k,
                                unique=True))  # fmt: skip
    header = parse_header(shares[picked[0]])
    assert header.index == picked[0] and header.scheme == scheme
    rebuilt = decode({i: shares[i] for i in picked}, header)
    assert rebuilt == body
    assert verified(rebuilt, header)


def test_every_subset_of_three_of_five_decodes_a_real_sized_pack() -> None:
    body = os.urandom(1_000_003)  # not a multiple of 3: the padding is cut off
    shares = encode(body, Scheme(3, 2))
    header = parse_header(shares[4])
    for subset in itertools.combinations(range(5), 3):
        assert decode({i: shares[i] for i in subset}, header) == body


def test_the_code_is_systematic() -> None:
    body = os.urandom(10_000)
    shares = encode(body, Scheme(3, 2))
    seg = segment_size(len(body), 3)
    assert b"".join(s[HEADER_SIZE:] for s in shares[:3])[: len(body)] == body
    assert all(len(s) == HEADER_SIZE + seg for s in shares)


def test_header_fields() -> None:
    body = b"x" * 100
    share = encode(body, Scheme(4, 2))[5]
    header = parse_header(share)
    assert (header.scheme.data, header.scheme.parity, header.index) == (4, 2, 5)
    assert header.object_size == 100
    assert header.object_sha256 == hashlib.sha256(body).digest()
    assert share[:4] == b"CVS\x01"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: b"XYZ" + s[3:], "bad magic"),
        (lambda s: s[:3] + b"\x02" + s[4:], "unsupported share format 2"),
        (lambda s: s[:4] + b"\x00" + s[5:], "data >= 1"),
        (lambda s: s[:6] + b"\x07" + s[7:], "share index 7"),
        (lambda s: s[:-1], "its header says"),
        (lambda s: s + b"\x00", "its header says"),
        (lambda s: s[:50], "its header says"),
        (lambda s: s[:10], "shorter than its header"),
    ],
)
def test_malformed_headers_are_share_errors(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    share = encode(b"hello world" * 10, Scheme(3, 2))[1]
    with pytest.raises(ShareError, match=message):
        parse_header(mutate(share))


def test_too_few_or_misfit_shares_are_refused() -> None:
    body = os.urandom(999)
    shares = encode(body, Scheme(3, 2))
    header = parse_header(shares[0])
    with pytest.raises(ShareError, match="need 3"):
        decode({0: shares[0], 4: shares[4]}, header)
    with pytest.raises(ShareError, match="not"):
        decode({0: shares[0], 1: shares[1], 2: shares[2][:-1]}, header)


def test_a_forged_share_decodes_to_something_that_does_not_verify() -> None:
    body = os.urandom(3000)
    shares = encode(body, Scheme(3, 2))
    header = parse_header(shares[0])
    forged = bytearray(shares[3])
    forged[HEADER_SIZE + 5] ^= 1
    rebuilt = decode({0: shares[0], 1: shares[1], 3: bytes(forged)}, header)
    assert rebuilt != body and not verified(rebuilt, header)


@pytest.mark.parametrize(("k", "m"), [(0, 1), (1, 0), (200, 57), (-1, 2)])
def test_schemes_out_of_bounds(k: int, m: int) -> None:
    with pytest.raises(ValueError, match="erasure scheme"):
        Scheme(k, m)


@given(size=st.integers(1, 5000), k=st.integers(1, 7), data=st.data())
def test_span_covers_the_range_from_the_data_shares(size: int, k: int, data: st.DataObject) -> None:
    body = bytes(i % 251 for i in range(size))
    shares = encode(body, Scheme(k, 1))
    offset = data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, size - offset))
    pieces = span(offset, length, size, k)
    assert all(index < k for index, _, _ in pieces)
    assert b"".join(shares[i][a:b] for i, a, b in pieces) == body[offset : offset + length]


def test_span_outside_the_object() -> None:
    with pytest.raises(ShareError):
        span(90, 20, 100, 3)
    with pytest.raises(ShareError):
        span(0, 0, 100, 3)


# --- share keys (chunkvault.layout) ---------------------------------------------------------

CID = "ab" + "0" * 62


def test_share_keys_name_their_object_scheme_and_index() -> None:
    from chunkvault.layout import DataKey, chunk_key, pack_key, parse_data_key, share_key

    key = share_key(chunk_key("v", CID), Scheme(3, 2), 4)
    assert key == f"v/chunks/ab/{CID}.ec3-2.4"
    assert parse_data_key("v", key) == DataKey("chunk", CID, Scheme(3, 2), 4)
    assert parse_data_key("v", chunk_key("v", CID)) == DataKey("chunk", CID)
    packed = share_key(pack_key("v", CID), Scheme(10, 4), 13)
    assert parse_data_key("v", packed) == DataKey("pack", CID, Scheme(10, 4), 13)


@pytest.mark.parametrize(
    "suffix",
    [".ec3-2.5", ".ec3-2.05", ".ec03-2.1", ".ec0-2.0", ".ec3-0.0", ".ec3-2.1\n", ".ec3-2",
     ".ec3-2.1.ec3-2.1", ".ec200-100.0", "x.ec3-2.1"],
)  # fmt: skip
def test_keys_that_are_no_share_are_layout_errors(suffix: str) -> None:
    from chunkvault.layout import LayoutError, chunk_key, parse_data_key, share_key

    with pytest.raises(LayoutError):
        parse_data_key("v", chunk_key("v", CID) + suffix)
    with pytest.raises(LayoutError):
        share_key(chunk_key("v", CID), Scheme(3, 2), 5)


def test_the_vector_of_docs_format() -> None:
    shares = encode(b"chunkvault erasure", Scheme(3, 2))
    sha = "14c998def7bab7e4b978347cc14333a038d7068ac1041f6829dc8ad55c32945b"
    segments = ["6368756e6b76", "61756c742065", "726173757265", "15b6a9e45f84", "c2deb7ad1bf8"]
    for i, (share, segment) in enumerate(zip(shares, segments, strict=True)):
        header = f"435653010302{i:02x}00{18:016x}"
        assert share.hex() == header + sha + segment
