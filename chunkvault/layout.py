"""Where things live on a peer, and the user metadata a chunk object carries. Pure.

    <vault>/keyring                      key slots (JSON, docs/format.md)
    <vault>/chunks/<id[:2]>/<id>         one encrypted chunk (envelope body)
    <vault>/packs/<id[:2]>/<id>          small chunks' bodies back to back (chunkvault.packs)
    <object key>.ec<k>-<m>.<i>           share i of an erasure-coded chunk object or pack
                                         (chunkvault.erasure), one per peer
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
from chunkvault.erasure import Scheme, ShareHeader

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


# The suffix of a share's key: its scheme (data-parity) and its index. No leading zeros,
# so one share has one key.
_SHARE_SUFFIX = re.compile(r"\.ec([1-9][0-9]{0,2})-([1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})")
META_SCHEME = "cv-ec"
META_SHARE = "cv-share"
META_OBJECT = "cv-object"
META_OBJECT_SIZE = "cv-object-size"
META_OBJECT_SHA256 = "cv-object-sha256"


def share_key(object_key: str, scheme: Scheme, index: int) -> str:
    """The key of share ``index`` of the object at ``object_key``."""
    if not 0 <= index < scheme.width:
        raise LayoutError(f"share index {index} of a {scheme} scheme")
    return f"{object_key}.ec{scheme}.{index}"


@dataclass(frozen=True)
class DataKey:
    """What a key under chunks/ or packs/ names: a chunk object or pack (``share`` None),
    or share ``share`` of one, in ``scheme``."""

    kind: str  # "chunk" or "pack"
    id: str
    scheme: Scheme | None = None
    share: int | None = None


def parse_data_key(vault_id: str, key: str) -> DataKey:
    """A chunk object's, pack's or share's key; :class:`LayoutError` for anything else."""
    found = _SHARE_SUFFIX.search(key)
    base = key[: found.start()] if found and found.end() == len(key) else key
    for kind, parse in (("chunk", chunk_id_from_key), ("pack", pack_id_from_key)):
        try:
            object_id = parse(vault_id, base)
        except LayoutError:
            continue
        if base is key:
            return DataKey(kind, object_id)
        assert found is not None
        try:
            scheme = Scheme(int(found.group(1)), int(found.group(2)))
        except ValueError as exc:
            raise LayoutError(f"not a share key: {key!r} ({exc})") from None
        index = int(found.group(3))
        if index >= scheme.width:
            raise LayoutError(f"not a share key: {key!r} (index {index} of {scheme})")
        return DataKey(kind, object_id, scheme, index)
    raise LayoutError(f"not a chunk, pack or share key: {key!r}")


def share_metadata(
    base: Mapping[str, str], header: ShareHeader, share_sha256: str, object_id: str
) -> dict[str, str]:
    """A share's user metadata: the object's own (a chunk's wrapped DEK and nonce, a pack's
    format version), with ``cv-sha256`` now the share's SHA-256 (so a share is checked
    alone, without keys, as a whole copy is), and where it belongs: the scheme, its index,
    the object's id, size and SHA-256 (the same as its body header says)."""
    return {
        **base,
        META_SHA256: share_sha256,
        META_SCHEME: str(header.scheme),
        META_SHARE: str(header.index),
        META_OBJECT: object_id,
        META_OBJECT_SIZE: str(header.object_size),
        META_OBJECT_SHA256: header.object_sha256.hex(),
    }


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
