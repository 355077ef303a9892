"""Sealing to the vault's public key (HPKE, RFC 9180, base mode): what a write-only host
uses instead of the master key, so that it can store data and never read any of it back
(issue 14; docs/format.md, "Sealed to the vault key"). Pure functions, no I/O.

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (``cryptography``'s HPKE).
Single-shot: every message has its own ephemeral key, so nothing a writer keeps after a
seal (nor its whole state dir) opens any earlier message.

    sealed   = version:1 (=1) | enc:32 | AES-256-GCM ciphertext and tag
    info     = b"chunkvault/hpke" | version:1 | vault_uuid:16 | kind | 0x00 | context

HPKE's single-shot API takes no associated data, so the context (the vault, the kind of
message, the chunk id or object name) is bound through ``info``, which enters the key
schedule: a message sealed for one chunk or name does not open for another.

A sealed data key (``seal_dek``) replaces a KEK-wrapped one; it starts with its own byte
(:data:`SEALED_DEK_VERSION`) so a manifest entry says which one it holds:

    sealed DEK = 0x02 | enc:32 | AES-256-GCM(DEK) + tag   (81 bytes)

Base mode authenticates no sender: whoever has the public key can seal. What a reader
accepts as a writer's must therefore be authenticated apart from this (a writer's own key).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from chunkvault.crypto.errors import EnvelopeError

VERSION = 1
SEALED_DEK_VERSION = 0x02  # the first byte of a KEK-wrapped DEK is 0x01 (envelope.VERSION)
KEY_BYTES = 32
DEK_BYTES = 32
TAG_BYTES = 16
ENC_BYTES = 32  # X25519's encapsulated key
SEALED_DEK_BYTES = 1 + ENC_BYTES + DEK_BYTES + TAG_BYTES
UUID_BYTES = 16
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO_PREFIX = b"chunkvault/hpke"


def new_key_pair() -> tuple[bytes, bytes]:
    """A vault key pair: (private, public), 32 raw bytes each."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_of(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _info(vault_uuid: bytes, kind: str, context: bytes) -> bytes:
    if len(vault_uuid) != UUID_BYTES:
        raise ValueError(f"a vault uuid is {UUID_BYTES} bytes, not {len(vault_uuid)}")
    if not kind or "\0" in kind:
        raise ValueError(f"bad message kind {kind!r}")
    return _INFO_PREFIX + bytes([VERSION]) + vault_uuid + kind.encode() + b"\0" + context


def seal(public: bytes, vault_uuid: bytes, kind: str, context: bytes, plaintext: bytes) -> bytes:
    """``plaintext`` sealed to the vault key ``public`` for (``kind``, ``context``)."""
    if len(public) != KEY_BYTES:
        raise ValueError(f"a vault public key is {KEY_BYTES} bytes, not {len(public)}")
    key = X25519PublicKey.from_public_bytes(public)
    return bytes([VERSION]) + _SUITE.encrypt(plaintext, key, info=_info(vault_uuid, kind, context))


def open_sealed(
    private: bytes, vault_uuid: bytes, kind: str, context: bytes, sealed: bytes
) -> bytes:
    """The plaintext of a message from :func:`seal`; EnvelopeError if it is not one, was
    sealed for another vault, kind or context, or was changed."""
    if len(sealed) < 1 + ENC_BYTES + TAG_BYTES:
        raise EnvelopeError(f"sealed message too short ({len(sealed)} bytes)")
    if sealed[0] != VERSION:
        raise EnvelopeError(f"unsupported sealed message version {sealed[0]}")
    key = X25519PrivateKey.from_private_bytes(private)
    try:
        return _SUITE.decrypt(bytes(sealed[1:]), key, info=_info(vault_uuid, kind, context))
    except (InvalidTag, ValueError):
        raise EnvelopeError(f"sealed {kind} failed authentication") from None


def seal_dek(public: bytes, vault_uuid: bytes, chunk_id: str, dek: bytes) -> bytes:
    """A chunk's data key sealed to the vault key (instead of wrapped by a master KEK)."""
    if len(dek) != DEK_BYTES:
        raise ValueError(f"a data key is {DEK_BYTES} bytes")
    body = seal(public, vault_uuid, "dek", chunk_id.encode(), dek)
    return bytes([SEALED_DEK_VERSION]) + body[1:]


def open_dek(private: bytes, vault_uuid: bytes, chunk_id: str, sealed: bytes) -> bytes:
    """The data key of :func:`seal_dek`; EnvelopeError if it does not open for this chunk."""
    if len(sealed) != SEALED_DEK_BYTES or sealed[0] != SEALED_DEK_VERSION:
        raise EnvelopeError(f"not a sealed data key ({len(sealed)} bytes)")
    return open_sealed(private, vault_uuid, "dek", chunk_id.encode(), bytes([VERSION]) + sealed[1:])


def is_sealed_dek(wrapped: bytes) -> bool:
    return len(wrapped) == SEALED_DEK_BYTES and wrapped[0] == SEALED_DEK_VERSION
