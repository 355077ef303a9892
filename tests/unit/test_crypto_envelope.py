"""Chunk envelope format: pinned test vectors and tamper detection."""

import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkvault.crypto.envelope import (
    FLAG_ZSTD,
    EnvelopeError,
    open_chunk,
    rewrap_dek,
    seal_chunk,
    wrapped_generation,
)
from chunkvault.crypto.material import MasterKeys

UUID = bytes(range(16))
PLAIN = b"chunkvault test vector\n" * 4

# Fixed keys and nonces pin every byte of format version 1 (docs/format.md).
VECTOR_ID = "350ddbd3ae4631b4009f9eee462c053341ec0393dcc30abf1a32291619cd8fe3"
VECTOR_BODY = (
    "0100040404040404040404040404234f66a3c6e8666bf560a02a14274d50e719ec182cb14d81401d69fa55"
    "ef9c30d75940b93227c8317c51f4735fbe8ffedc3f7093a2d8a74cdea1cef123576eb6057a06fb657f8c2b"
    "0ca69f955de872b2790f2e77acee4c55f630dbe0e5f14db17c703e66bccb3cdcec238ec3"
)
VECTOR_WRAPPED = (
    "01000000010505050505050505050505052b536d0ea37e35486351dafb4ca235d5a88876dd08bdb7760ac2"
    "2e2e75bf0b0e290c4f8c6fe42e71b6fc8700ca24d8b4"
)


def fixed_keys() -> MasterKeys:
    return MasterKeys(UUID, b"\x01" * 32, {1: b"\x02" * 32}, 1)


def test_vector_pins_the_format():
    keys = fixed_keys()
    sealed = seal_chunk(
        keys, PLAIN, compress=False, dek=b"\x03" * 32, _nonces=(b"\x04" * 12, b"\x05" * 12)
    )
    assert sealed.chunk_id == hmac.new(b"\x01" * 32, PLAIN, hashlib.sha256).hexdigest()
    assert sealed.chunk_id == VECTOR_ID
    assert sealed.body.hex() == VECTOR_BODY
    assert sealed.wrapped_dek.hex() == VECTOR_WRAPPED
    assert len(sealed.body) == 2 + 12 + len(PLAIN) + 16
    assert (
        open_chunk(keys, VECTOR_ID, bytes.fromhex(VECTOR_BODY), bytes.fromhex(VECTOR_WRAPPED))
        == PLAIN
    )


def test_compression_only_when_it_pays():
    keys = MasterKeys.generate(UUID)
    text = seal_chunk(keys, b"abc" * 10000)
    assert text.compressed and len(text.body) < 1000
    noise = seal_chunk(keys, os.urandom(100_000))
    assert not noise.compressed
    off = seal_chunk(keys, b"abc" * 10000, compress=False)
    assert not off.compressed
    for sealed, plain in ((text, b"abc" * 10000), (off, b"abc" * 10000)):
        assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == plain


def test_each_seal_uses_a_fresh_data_key_and_nonce():
    keys = MasterKeys.generate(UUID)
    a, b = seal_chunk(keys, PLAIN), seal_chunk(keys, PLAIN)
    assert a.chunk_id == b.chunk_id  # dedup works on ids...
    assert a.body != b.body and a.wrapped_dek != b.wrapped_dek  # ...not on ciphertexts


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000), st.booleans())
def test_round_trip_any_bytes(data, compress):
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, data, compress=compress)
    assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == data


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("index", [0, 1, 2, 13, 14, 40, -1])
def test_flipped_body_byte_is_detected(index):
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN * 10)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, sealed.chunk_id, flip(sealed.body, index), sealed.wrapped_dek)


@pytest.mark.parametrize("index", [0, 4, 5, 16, 17, 40, -1])
def test_flipped_wrapped_dek_byte_is_detected(index):
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, sealed.chunk_id, sealed.body, flip(sealed.wrapped_dek, index))


def test_swapped_objects_and_foreign_keys_are_detected():
    keys = MasterKeys.generate(UUID)
    a, b = seal_chunk(keys, b"first chunk" * 50), seal_chunk(keys, b"second chunk" * 50)
    # b's object (body + DEK) stored under a's id: AAD binds the id, so it fails.
    with pytest.raises(EnvelopeError):
        open_chunk(keys, a.chunk_id, b.body, b.wrapped_dek)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, a.chunk_id, a.body, b.wrapped_dek)
    # Another vault with the same KEK bytes (uuid differs) cannot open it either.
    other = MasterKeys(os.urandom(16), keys.id_key, dict(keys.keks), keys.current)
    with pytest.raises(EnvelopeError):
        open_chunk(other, a.chunk_id, a.body, a.wrapped_dek)
    # Toggling the compressed flag is caught by the AAD.
    body = bytearray(a.body)
    body[1] ^= FLAG_ZSTD
    with pytest.raises(EnvelopeError):
        open_chunk(keys, a.chunk_id, bytes(body), a.wrapped_dek)


def test_truncated_and_unknown_versions_are_rejected():
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    with pytest.raises(EnvelopeError, match="too short"):
        open_chunk(keys, sealed.chunk_id, sealed.body[:20], sealed.wrapped_dek)
    with pytest.raises(EnvelopeError, match="version"):
        open_chunk(keys, sealed.chunk_id, b"\x09" + sealed.body[1:], sealed.wrapped_dek)
    with pytest.raises(EnvelopeError, match="flags"):
        open_chunk(keys, sealed.chunk_id, b"\x01\x80" + sealed.body[2:], sealed.wrapped_dek)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek[:-1])


def test_rewrap_moves_a_data_key_to_a_new_generation_without_touching_the_body():
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    new_gen = keys.add_generation()
    rewrapped = rewrap_dek(keys, sealed.chunk_id, sealed.wrapped_dek, new_gen)
    assert wrapped_generation(rewrapped) == new_gen == 2
    keys.drop_generations_except(new_gen)
    assert open_chunk(keys, sealed.chunk_id, sealed.body, rewrapped) == PLAIN
    with pytest.raises(EnvelopeError, match="generation 1"):
        open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek)
