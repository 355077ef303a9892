"""Writer blobs (chunkvault.crypto.writer_blob): sealed to the vault key, authenticated by
the writer's own key; only the owner opens one, and nobody without a trusted writer's key
(a peer knows the public key) can make one that opens."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkvault.crypto import vault_seal, writer_blob
from chunkvault.crypto.envelope import EnvelopeError

UUID = os.urandom(16)
PRIVATE, PUBLIC = vault_seal.new_key_pair()
WRITER, KEY = "0a0b0c0d", os.urandom(32)
NAME = "home/manifests/batch/00000000001796000000-0123456789abcdef"


def trusted(writer_id: str) -> bytes | None:
    return KEY if writer_id == WRITER else None


def sealed(payload: bytes = b'{"v":1,"entries":[]}') -> bytes:
    return writer_blob.seal(PUBLIC, UUID, WRITER, KEY, "batch", NAME, payload)


def test_the_owner_opens_what_a_trusted_writer_sealed() -> None:
    blob = sealed(b"x" * 10_000)
    assert writer_blob.writer_of(blob) == WRITER
    assert writer_blob.open_blob(PRIVATE, UUID, trusted, "batch", NAME, blob, 1 << 20) == (
        WRITER, b"x" * 10_000
    )  # fmt: skip
    with pytest.raises(EnvelopeError, match="more than the 100 allowed"):
        writer_blob.open_blob(PRIVATE, UUID, trusted, "batch", NAME, blob, 100)


def test_a_blob_is_bound_to_its_vault_kind_and_name() -> None:
    blob = sealed()
    for uuid, kind, name in ((os.urandom(16), "batch", NAME), (UUID, "manifest", NAME),
                             (UUID, "batch", NAME[:-1] + "0")):  # fmt: skip
        with pytest.raises(EnvelopeError, match="failed authentication"):
            writer_blob.open_blob(PRIVATE, uuid, trusted, kind, name, blob, 1 << 20)


def test_an_unknown_or_revoked_writer_is_refused_before_anything_is_opened() -> None:
    with pytest.raises(EnvelopeError, match="does not trust"):
        writer_blob.open_blob(PRIVATE, UUID, lambda _: None, "batch", NAME, sealed(), 1 << 20)


def test_a_peer_with_the_public_key_but_no_writer_key_cannot_forge_one() -> None:
    forged = writer_blob.seal(PUBLIC, UUID, WRITER, os.urandom(32), "batch", NAME, b"{}")
    with pytest.raises(EnvelopeError, match="as writer 0a0b0c0d"):
        writer_blob.open_blob(PRIVATE, UUID, trusted, "batch", NAME, forged, 1 << 20)
    with pytest.raises(EnvelopeError, match="not a writer blob"):
        writer_blob.open_blob(PRIVATE, UUID, trusted, "batch", NAME, b"\x02" + sealed()[1:], 99)


@settings(max_examples=60)
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_fails(at: int, mask: int) -> None:
    blob = bytearray(sealed())
    blob[at % len(blob)] ^= mask
    with pytest.raises(EnvelopeError):
        writer_blob.open_blob(PRIVATE, UUID, trusted, "batch", NAME, bytes(blob), 1 << 20)


def test_only_the_private_key_opens_it() -> None:
    other, _ = vault_seal.new_key_pair()
    with pytest.raises(EnvelopeError, match="failed authentication"):
        writer_blob.open_blob(other, UUID, trusted, "batch", NAME, sealed(), 1 << 20)
