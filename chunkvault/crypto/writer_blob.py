"""A named blob (a manifest batch) as a write-only host stores it: sealed to the vault's
public key, so only the owner opens it, and authenticated by the writer's own key, so
nobody else (a peer knows the public key) can pass a blob off as that writer's
(docs/format.md, "Writer blobs"). Pure functions, no I/O.

    writer blob = 0x10 | writer id:4 | sealed | mac:32
    sealed      = vault_seal.seal(public, vault_uuid, "blob/" kind, name, pad(zstd(payload)))
    mac         = HMAC-SHA256(writer key, b"chunkvault/writer-blob" | 0x10 | vault_uuid:16
                  | kind | 0x00 | name | 0x00 | 0x10 | writer id | sealed)

The first byte (0x10) is no master-key blob version (those are 1 and 2), so a reader
tells the two apart. The MAC is checked before anything is decrypted; it binds the
vault, the kind and the name as well as the sealed bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import zstandard

from chunkvault.crypto import vault_seal
from chunkvault.crypto.envelope import BLOB_FLOOR, EnvelopeError, bounded_decompress
from chunkvault.crypto.padding import PaddingError, pad, unpad


class UntrustedWriter(EnvelopeError):
    """A writer blob of a writer the vault does not trust (unknown, or revoked before the
    time the blob gives): refused by the owner's decision, not a damaged copy."""


VERSION = 0x10
WRITER_ID_BYTES = 4
MAC_BYTES = 32
OVERHEAD = 1 + WRITER_ID_BYTES + 1 + vault_seal.ENC_BYTES + 16 + MAC_BYTES


def _mac(key: bytes, vault_uuid: bytes, kind: str, name: str, signed: bytes) -> bytes:
    context = (b"chunkvault/writer-blob" + bytes([VERSION]) + vault_uuid + kind.encode()
               + b"\0" + name.encode() + b"\0")  # fmt: skip
    return hmac.new(key, context + signed, hashlib.sha256).digest()


def seal(
    public: bytes,
    vault_uuid: bytes,
    writer_id: str,
    writer_key: bytes,
    kind: str,
    name: str,
    payload: bytes,
) -> bytes:
    ident = bytes.fromhex(writer_id)
    if len(ident) != WRITER_ID_BYTES:
        raise ValueError(f"a writer id is {WRITER_ID_BYTES} bytes")
    inner = pad(zstandard.ZstdCompressor(level=3).compress(payload), floor=BLOB_FLOOR)
    sealed = vault_seal.seal(public, vault_uuid, f"blob/{kind}", name.encode(), inner)
    signed = bytes([VERSION]) + ident + sealed
    return signed + _mac(writer_key, vault_uuid, kind, name, signed)


def writer_of(blob: bytes) -> str | None:
    """The writer id a writer blob names (not yet checked), or None if it is none."""
    if len(blob) < OVERHEAD or blob[0] != VERSION:
        return None
    return blob[1 : 1 + WRITER_ID_BYTES].hex()


def check_mac(
    vault_uuid: bytes, writer_id: str, writer_key: bytes, kind: str, name: str, blob: bytes
) -> None:
    """That ``blob`` is writer ``writer_id``'s blob of ``kind`` ``name``, as it wrote it
    (what a writer, which cannot open it, checks of its own copies); EnvelopeError if not."""
    if writer_of(blob) != writer_id:
        raise EnvelopeError(f"{kind} {name}: not a blob of writer {writer_id}")
    signed, mac = blob[:-MAC_BYTES], blob[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(writer_key, vault_uuid, kind, name, signed)):
        raise EnvelopeError(f"{kind} {name}: failed authentication as writer {writer_id}")


def open_blob(
    private: bytes,
    vault_uuid: bytes,
    writer_key: Callable[[str], bytes | None],
    kind: str,
    name: str,
    blob: bytes,
    max_size: int,
) -> tuple[str, bytes]:
    """(writer id, payload) of a writer blob. ``writer_key(id)``: that writer's key, or
    None if the vault does not trust it. EnvelopeError for anything else: not a writer
    blob, an unknown writer, a MAC or seal that fails, a payload over ``max_size``."""
    writer_id = writer_of(blob)
    if writer_id is None:
        raise EnvelopeError(f"{kind} {name}: not a writer blob")
    key = writer_key(writer_id)
    if key is None:
        raise UntrustedWriter(f"{kind} {name}: written by writer {writer_id}, which this vault "
                            "does not trust (unknown, or revoked before the time the blob "
                            "gives)")  # fmt: skip
    check_mac(vault_uuid, writer_id, key, kind, name, blob)
    signed = blob[:-MAC_BYTES]
    inner = vault_seal.open_sealed(
        private, vault_uuid, f"blob/{kind}", name.encode(), signed[1 + WRITER_ID_BYTES :]
    )
    try:
        return writer_id, bounded_decompress(unpad(inner), max_size)
    except PaddingError as exc:
        raise EnvelopeError(f"{kind} {name}: {exc}") from None
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"{kind} {name}: bad compressed payload: {exc}") from None
