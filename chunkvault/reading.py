"""Read one chunk back: best replica first, verify, fall back on any error or corruption.

Order of replicas (:mod:`chunkvault.replica_choice`): up peers before down ones; the peers
the catalog says hold it before the rest (after failovers a replica may sit anywhere; on a
fresh machine the catalog may not know); then the peer expected to answer soonest (its reads
in flight and its usual time per read), a peer whose last read failed last; ties in
rendezvous rank order.

Which wrapped DEK: the one the caller knows (catalog or manifest) first, which costs no
extra request; if it does not open the body, the object's own metadata (a stat).

How much to read: a replica's body is capped at the largest body its plaintext size can
seal to (``sealed_size_limit``), the size taken from the catalog or the caller (both come
from authenticated manifests or our own writes, never from a peer's listing). Unknown, it
is the largest chunk the config allows. A peer serving more is skipped after at most that
many bytes, so a hostile peer costs neither memory nor the restore.

Every problem a peer causes is that peer's: the next replica is tried, and the first
problem of each kind per peer is logged once (:class:`WarnOnce`), not once per chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from chunkvault.backends.base import MalformedReply, NotFound, PeerError
from chunkvault.backends.warn_once import WarnOnce
from chunkvault.catalog import Catalog
from chunkvault.crypto.envelope import MAX_PLAINTEXT, EnvelopeError, open_chunk, sealed_size_limit
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.layout import LayoutError, chunk_key, parse_chunk_metadata
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import rank
from chunkvault.replica_choice import ReplicaChooser

log = logging.getLogger(__name__)


#: What a user can do today when no replica of a chunk can be read.
UNAVAILABLE_HINT = (
    "`chunkvault peers list` shows which peers are down: once they are back, run the same "
    "restore again (files already restored count as identical); replicas reported damaged "
    "above are lost on those peers (a `check` command that finds them is planned)"
)


class ChunkUnavailable(ChunkvaultError):
    """No replica of the chunk could be read and verified."""


class ChunkReader:
    def __init__(
        self,
        vault_id: str,
        peers: Sequence[PlacedPeer],
        keys: MasterKeys,
        catalog: Catalog | None,
        max_chunk_size: int = MAX_PLAINTEXT,
    ) -> None:
        """``max_chunk_size``: the largest plaintext a chunk can have (the config's
        ``max(chunking.max_size, api.max_chunk_bytes)``), for chunks of unknown size."""
        self.vault_id = vault_id
        self.peers = list(peers)
        self.keys = keys
        self.catalog = catalog
        self.max_chunk_size = max_chunk_size
        self._warnings = WarnOnce(log)
        self.chooser = ReplicaChooser()

    def _order(self, chunk_id: str) -> list[PlacedPeer]:
        holders = set(self.catalog.replicas(chunk_id)) if self.catalog else set()
        return self.chooser.order(rank(chunk_id, self.peers), holders)

    def read(
        self, chunk_id: str, wrapped_deks: Sequence[bytes] = (), plain_size: int | None = None
    ) -> bytes:
        """The chunk's plaintext, verified. ``wrapped_deks`` and ``plain_size`` are what the
        caller's manifest says. Raises only :class:`ChunkUnavailable`, whatever peers send."""
        key = chunk_key(self.vault_id, chunk_id)
        deks = list(wrapped_deks)
        if self.catalog is not None and (row := self.catalog.chunk(chunk_id)) is not None:
            deks.insert(0, row.wrapped_dek)
            plain_size = row.plain_size
        limit = sealed_size_limit(self.max_chunk_size if plain_size is None else plain_size)
        problems: list[str] = []
        for placed in self._order(chunk_id):
            peer = placed.peer
            started = time.monotonic()
            try:
                with self.chooser.reading(peer.name):
                    body = peer.get(key, max_size=limit)
            except NotFound:
                continue
            except MalformedReply as exc:
                self._warnings.warn(
                    peer.name, "malformed chunks", "peer %s: %s", peer.name, exc.message
                )
                problems.append(f"{peer.name}: {exc.message}")
                self.chooser.failed(peer.name)
                continue
            except PeerError as exc:
                problems.append(f"{peer.name}: {exc.message}")
                self.chooser.failed(peer.name)
                continue
            data = self._open(chunk_id, body, deks, placed, key, problems)
            if data is not None:
                self.chooser.succeeded(peer.name, time.monotonic() - started)
                return data
            self.chooser.failed(peer.name)
        raise ChunkUnavailable(
            f"chunk {chunk_id[:16]}: no readable replica"
            + (f" ({'; '.join(problems)})" if problems else " (not found on any peer)"),
            UNAVAILABLE_HINT,
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
            self._warnings.warn(
                placed.name,
                "damaged chunks",
                "chunk %s on %s is damaged: %s",
                chunk_id[:12],
                placed.name,
                exc,
            )
            problems.append(f"{placed.name}: {exc}")
            return None
