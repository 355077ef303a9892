"""One more copy of a verified chunk object or pack on a peer, recorded in the catalog:
what `repair`, `peers rebalance` and the agent's background repair write. The caller has
opened the body already; the object's metadata is rebuilt from what is known (the wrapped
DEK from a manifest or the catalog, the SHA-256 of the body), never copied from a peer."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from chunkvault.backends.base import Peer
from chunkvault.catalog import Catalog, ChunkRow, PackRow
from chunkvault.crypto.envelope import SealedChunk, wrapped_generation
from chunkvault.crypto.material import SEALED_GENERATION
from chunkvault.erasure import Scheme, encode, parse_header
from chunkvault.layout import (
    chunk_key,
    chunk_metadata,
    pack_key,
    pack_metadata,
    share_key,
    share_metadata,
)
from chunkvault.manifest import ChunkRef
from chunkvault.packs import VERSION as PACK_VERSION


def put_chunk(
    vault_id: str, catalog: Catalog, peer: Peer, ref: ChunkRef, body: bytes | memoryview
) -> None:
    """A chunk object's copy on ``peer``; PeerError if the write fails."""
    generation = wrapped_generation(ref.wrapped_dek)
    sealed = SealedChunk(ref.id, body, ref.wrapped_dek, generation, ref.size)
    peer.put(chunk_key(vault_id, ref.id), body, chunk_metadata(sealed))
    row = catalog.chunk(ref.id) or ChunkRow(
        ref.id, ref.size, len(body), ref.wrapped_dek, generation, sealed.body_sha256
    )
    catalog.record_chunk(row, [peer.name])


def put_share(
    vault_id: str,
    catalog: Catalog,
    peer: Peer,
    kind: str,
    refs: Sequence[ChunkRef],
    object_id: str,
    body: bytes | memoryview,
    scheme: Scheme,
    index: int,
    share: bytes | None = None,
) -> None:
    """Share ``index`` of a verified erasure-coded chunk object or pack (``body``, the
    whole object; ``share``: its share, if already encoded) on ``peer``, recorded in the
    catalog; ``refs``: the chunk (a chunk object's) or the chunks the manifests place in
    the pack. PeerError if the write fails."""
    share = share if share is not None else encode(body, scheme)[index]
    header = parse_header(share)
    share_sha = hashlib.sha256(share).hexdigest()
    form = str(scheme)
    if kind == "chunk":
        ref = refs[0]
        generation = wrapped_generation(ref.wrapped_dek)
        sealed = SealedChunk(ref.id, body, ref.wrapped_dek, generation, ref.size)
        base = chunk_metadata(sealed)
        key = chunk_key(vault_id, object_id)
        peer.put(share_key(key, scheme, index), share,
                 share_metadata(base, header, share_sha, object_id))  # fmt: skip
        row = catalog.chunk(ref.id)
        if row is None or row.scheme != form or row.pack is not None:
            row = ChunkRow(ref.id, ref.size, len(body), ref.wrapped_dek, generation,
                           sealed.body_sha256, scheme=form)  # fmt: skip
        catalog.record_chunk(row, [peer.name], {peer.name: index})
        return
    rows = [
        ChunkRow(r.id, r.size, r.length, r.wrapped_dek, wrapped_generation(r.wrapped_dek), "",
                 pack=object_id, pack_offset=r.offset)
        for r in refs
    ]  # fmt: skip
    sealed_pack = any(r.generation == SEALED_GENERATION for r in rows)
    sha256 = hashlib.sha256(body).hexdigest()  # the whole pack, rebuilt and verified
    base = pack_metadata(PACK_VERSION, sha256, sealed_pack)
    key = pack_key(vault_id, object_id)
    peer.put(share_key(key, scheme, index), share,
             share_metadata(base, header, share_sha, object_id))  # fmt: skip
    known = catalog.pack(object_id)
    if known is None or known.scheme != form:
        known = PackRow(object_id, len(body), sha256, form)
    catalog.record_pack(known, rows, [peer.name], {peer.name: index})


def put_pack(
    vault_id: str,
    catalog: Catalog,
    peer: Peer,
    pack_id: str,
    body: bytes | memoryview,
    chunks: Sequence[ChunkRow],
) -> None:
    """A pack's copy on ``peer``; its ``chunks`` (those the caller knows are in it) get
    the new replica too. PeerError if the write fails."""
    sha256 = hashlib.sha256(body).hexdigest()
    sealed = any(c.generation == SEALED_GENERATION for c in chunks)
    peer.put(pack_key(vault_id, pack_id), body, pack_metadata(PACK_VERSION, sha256, sealed))
    # A pack this catalog did not write may have been copied only up to its last chunk
    # the manifests place, so its SHA-256 is not the other copies' (left unknown).
    known = catalog.pack(pack_id) or PackRow(pack_id, len(body), "")
    catalog.record_pack(known, chunks, [peer.name])
