"""Where things live on a peer, and the user metadata a chunk object carries. Pure.

    <vault>/keyring                      key slots (JSON, docs/format.md)
    <vault>/chunks/<id[:2]>/<id>         one encrypted chunk (envelope body)
    <vault>/packs/<id[:2]>/<id>          small chunks' bodies back to back (chunkvault.packs)
    <vault>/manifests/...                encrypted file manifests and manifest batches

Chunk metadata repeats what is needed to decrypt the body (wrapped DEK, generation,
nonce) plus its SHA-256, so replicas can be verified without keys. Manifests carry the
same wrapped DEKs, so a peer that strips metadata loses nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from chunkvault.crypto.envelope import VERSION, SealedChunk, wrapped_generation

_CHUNK_ID = re.compile(r"[0-9a-f]{64}")  # fullmatch: "$" would allow a trailing newline
META_VERSION = "cv-v"
META_GENERATION = "cv-gen"
META_DEK = "cv-dek"
META_NONCE = "cv-nonce"
META_SHA256 = "cv-sha256"
# On a pack holding a chunk whose data key is sealed to the vault key (a write-only host's);
# a chunk object says so by its generation (0). See :func:`sealed_object`.
META_SEALED = "cv-sealed"


class LayoutError(ValueError):
    """An object key or metadata set that is not chunkvault's."""


def chunks_prefix(vault_id: str) -> str:
    return f"{vault_id}/chunks/"


def chunk_key(vault_id: str, chunk_id: str) -> str:
    if not _CHUNK_ID.fullmatch(chunk_id):
        raise LayoutError(f"not a chunk id: {chunk_id!r}")
    return f"{vault_id}/chunks/{chunk_id[:2]}/{chunk_id}"


def packs_prefix(vault_id: str) -> str:
    return f"{vault_id}/packs/"


def pack_key(vault_id: str, pack_id: str) -> str:
    if not _CHUNK_ID.fullmatch(pack_id):  # pack ids have the chunk ids' shape
        raise LayoutError(f"not a pack id: {pack_id!r}")
    return f"{vault_id}/packs/{pack_id[:2]}/{pack_id}"


def pack_id_from_key(vault_id: str, key: str) -> str:
    pack_id = key.rsplit("/", 1)[-1]
    if not key.startswith(packs_prefix(vault_id)) or key != pack_key(vault_id, pack_id):
        raise LayoutError(f"not a pack object key: {key!r}")
    return pack_id


def pack_metadata(version: int, sha256: str, sealed: bool = False) -> dict[str, str]:
    """A pack object's user metadata: its format version and SHA-256 (checked without
    keys, like a chunk's). No key: the chunks' wrapped DEKs live in the manifests.
    ``sealed``: it holds a write-only host's chunks."""
    meta = {META_VERSION: str(version), META_SHA256: sha256}
    if sealed:
        meta[META_SEALED] = "1"
    return meta


def sealed_object(metadata: Mapping[str, str]) -> bool:
    """Whether a chunk object's or pack's metadata says a write-only host stored it: its
    data keys are sealed to the vault key (a chunk's generation 0, a pack's flag)."""
    return metadata.get(META_SEALED) == "1" or metadata.get(META_GENERATION) == "0"


def chunk_id_from_key(vault_id: str, key: str) -> str:
    prefix = chunks_prefix(vault_id)
    chunk_id = key.rsplit("/", 1)[-1]
    if not key.startswith(prefix) or key != chunk_key(vault_id, chunk_id):
        raise LayoutError(f"not a chunk object key: {key!r}")
    return chunk_id


def chunk_metadata(sealed: SealedChunk) -> dict[str, str]:
    return {
        META_VERSION: str(VERSION),
        META_GENERATION: str(sealed.generation),
        META_DEK: base64.b64encode(sealed.wrapped_dek).decode(),
        META_NONCE: base64.b64encode(sealed.nonce).decode(),
        META_SHA256: sealed.body_sha256,
    }


@dataclass(frozen=True)
class ChunkMeta:
    wrapped_dek: bytes
    generation: int
    sha256: str

    def with_wrapped_dek(self, wrapped: bytes, original: Mapping[str, str]) -> dict[str, str]:
        """The object's metadata with a re-wrapped DEK (other entries kept as they are)."""
        return {
            **original,
            META_DEK: base64.b64encode(wrapped).decode(),
            META_GENERATION: str(wrapped_generation(wrapped)),
        }


def parse_chunk_metadata(meta: Mapping[str, str]) -> ChunkMeta:
    try:
        if meta[META_VERSION] != str(VERSION):
            raise LayoutError(f"unsupported chunk format {meta[META_VERSION]!r}")
        wrapped = base64.b64decode(meta[META_DEK], validate=True)
        generation = wrapped_generation(wrapped)
        return ChunkMeta(wrapped, generation, meta[META_SHA256])
    except KeyError as exc:
        raise LayoutError(f"chunk metadata lacks {exc.args[0]}") from None
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, LayoutError):
            raise
        raise LayoutError(f"chunk metadata is malformed: {exc}") from None
