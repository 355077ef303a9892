"""Read one chunk back: best replica first, verify, fall back on any error or corruption.

Order of replicas: the peers the catalog says hold it, in rendezvous rank order, then the
remaining peers in rank order (after failovers a replica may sit anywhere; on a fresh
machine the catalog may not know). Up peers before down ones.

Which wrapped DEK: the one the caller knows (catalog or manifest) first, which costs no
extra request; if it does not open the body, the object's own metadata (a stat).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from chunkvault.backends.base import NotFound, PeerError
from chunkvault.catalog import Catalog
from chunkvault.crypto.envelope import EnvelopeError, open_chunk
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.layout import LayoutError, chunk_key, parse_chunk_metadata
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import rank

log = logging.getLogger(__name__)


class ChunkUnavailable(ChunkvaultError):
    """No replica of the chunk could be read and verified."""


class ChunkReader:
    def __init__(
        self, vault_id: str, peers: Sequence[PlacedPeer], keys: MasterKeys, catalog: Catalog | None
    ) -> None:
        self.vault_id = vault_id
        self.peers = list(peers)
        self.keys = keys
        self.catalog = catalog

    def _order(self, chunk_id: str) -> list[PlacedPeer]:
        ranked = rank(chunk_id, self.peers)
        holders = set(self.catalog.replicas(chunk_id)) if self.catalog else set()
        # Stable sort: (down last, known holders first), rank order within each group.
        return sorted(ranked, key=lambda p: (not p.peer.is_up, p.name not in holders))

    def read(self, chunk_id: str, wrapped_deks: Sequence[bytes] = ()) -> bytes:
        key = chunk_key(self.vault_id, chunk_id)
        deks = list(wrapped_deks)
        if self.catalog is not None and (row := self.catalog.chunk(chunk_id)) is not None:
            deks.insert(0, row.wrapped_dek)
        problems: list[str] = []
        for placed in self._order(chunk_id):
            peer = placed.peer
            try:
                body = peer.get(key)
            except NotFound:
                continue
            except PeerError as exc:
                problems.append(f"{peer.name}: {exc.message}")
                continue
            data = self._open(chunk_id, body, deks, placed, key, problems)
            if data is not None:
                return data
        raise ChunkUnavailable(
            f"chunk {chunk_id[:16]}: no readable replica"
            + (f" ({'; '.join(problems)})" if problems else " (not found on any peer)"),
            "check `chunkvault peers list`; `chunkvault check` finds damaged replicas",
        )

    def _open(
        self,
        chunk_id: str,
        body: bytes,
        deks: list[bytes],
        placed: PlacedPeer,
        key: str,
        problems: list[str],
    ) -> bytes | None:
        for wrapped in dict.fromkeys(deks):  # unique, in order
            try:
                return open_chunk(self.keys, chunk_id, body, wrapped)
            except EnvelopeError:
                continue
        try:
            meta = parse_chunk_metadata(placed.peer.stat(key).metadata)
            return open_chunk(self.keys, chunk_id, body, meta.wrapped_dek)
        except (PeerError, LayoutError, EnvelopeError) as exc:
            log.warning("chunk %s on %s is damaged: %s", chunk_id[:12], placed.name, exc)
            problems.append(f"{placed.name}: {exc}")
            return None
