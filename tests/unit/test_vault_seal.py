"""Sealing to the vault key (chunkvault.crypto.vault_seal): HPKE base mode, bound to the
vault, the kind of message and its context; a writer can seal, only the private key opens."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkvault.crypto import vault_seal
from chunkvault.crypto.envelope import EnvelopeError

UUID = os.urandom(16)
PRIVATE, PUBLIC = vault_seal.new_key_pair()


def test_a_sealed_message_opens_only_with_its_vault_kind_and_context() -> None:
    sealed = vault_seal.seal(PUBLIC, UUID, "manifest", b"name/1", b"the manifest")
    assert vault_seal.open_sealed(PRIVATE, UUID, "manifest", b"name/1", sealed) == b"the manifest"
    for uuid, kind, context in (
        (os.urandom(16), "manifest", b"name/1"),
        (UUID, "batch", b"name/1"),
        (UUID, "manifest", b"name/2"),
    ):
        with pytest.raises(EnvelopeError, match="failed authentication"):
            vault_seal.open_sealed(PRIVATE, uuid, kind, context, sealed)
    other, _ = vault_seal.new_key_pair()
    with pytest.raises(EnvelopeError, match="failed authentication"):
        vault_seal.open_sealed(other, UUID, "manifest", b"name/1", sealed)


def test_every_seal_is_fresh_and_the_public_key_derives_from_the_private() -> None:
    assert vault_seal.public_key_of(PRIVATE) == PUBLIC
    one = vault_seal.seal(PUBLIC, UUID, "dek", b"c", b"x" * 32)
    two = vault_seal.seal(PUBLIC, UUID, "dek", b"c", b"x" * 32)
    assert one != two and one[1:33] != two[1:33]  # a new ephemeral key each time


@given(st.integers(min_value=0, max_value=63), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_fails(at: int, mask: int) -> None:
    sealed = bytearray(vault_seal.seal(PUBLIC, UUID, "dek", b"c", b"k" * 32))
    sealed[at % len(sealed)] ^= mask
    with pytest.raises(EnvelopeError):
        vault_seal.open_sealed(PRIVATE, UUID, "dek", b"c", bytes(sealed))


def test_truncated_or_unknown_versions_are_clear_errors() -> None:
    sealed = vault_seal.seal(PUBLIC, UUID, "dek", b"c", b"k" * 32)
    with pytest.raises(EnvelopeError, match="too short"):
        vault_seal.open_sealed(PRIVATE, UUID, "dek", b"c", sealed[:40])
    with pytest.raises(EnvelopeError, match="version 9"):
        vault_seal.open_sealed(PRIVATE, UUID, "dek", b"c", b"\x09" + sealed[1:])


def test_a_sealed_dek_has_its_own_first_byte_and_opens_only_for_its_chunk() -> None:
    dek = os.urandom(32)
    sealed = vault_seal.seal_dek(PUBLIC, UUID, "ab" * 32, dek)
    assert len(sealed) == vault_seal.SEALED_DEK_BYTES == 81 and sealed[0] == 0x02
    assert vault_seal.is_sealed_dek(sealed)
    assert vault_seal.open_dek(PRIVATE, UUID, "ab" * 32, sealed) == dek
    with pytest.raises(EnvelopeError):
        vault_seal.open_dek(PRIVATE, UUID, "cd" * 32, sealed)
    with pytest.raises(EnvelopeError, match="not a sealed data key"):
        vault_seal.open_dek(PRIVATE, UUID, "ab" * 32, b"\x01" + sealed[1:])
