"""Read one chunk back: best replica first, verify, fall back on any error or corruption.

Order of replicas (:mod:`chunkvault.replica_choice`): up peers before down ones; the peers
the catalog says hold it before the rest (after failovers a replica may sit anywhere; on a
fresh machine the catalog may not know); then the peer expected to answer soonest (its reads
in flight and its usual time per read), a peer whose last read failed last; ties in
rendezvous rank order.

Which wrapped DEK: the one the caller knows (catalog or manifest) first, which costs no
extra request; if it does not open the body, the object's own metadata (a stat).

Where to read: :meth:`ChunkReader.read_into` reads the body into the caller's buffer (a
reused slab, see :mod:`chunkvault.buffers`), decrypts it in place and returns the plaintext
as a view of it; :meth:`ChunkReader.read` is the same into a buffer of its own, copied out.
In-place decryption spends the body when a data key does not open it (GCM writes before it
knows the tag is bad), so the body is read again before the next key is tried: that only
happens when the catalog's or manifest's key is stale, rare enough to cost a request.

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
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from chunkvault import shortfall
from chunkvault.backends.base import MalformedReply, NotFound, Peer, PeerError
from chunkvault.backends.warn_once import WarnOnce
from chunkvault.catalog import Catalog
from chunkvault.crypto.envelope import (
    MAX_PLAINTEXT,
    EnvelopeError,
    checks_id,
    open_chunk_into,
    sealed_size_limit,
    unwrap_dek,
)
from chunkvault.crypto.material import MasterKeys
from chunkvault.erasure import Scheme
from chunkvault.errors import ChunkvaultError
from chunkvault.layout import (
    LayoutError,
    chunk_key,
    pack_key,
    parse_chunk_metadata,
    parse_data_key,
    share_key,
)
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import rank
from chunkvault.replica_choice import ReplicaChooser
from chunkvault.shares import Coded, ObjectUnreadable, ShareReader

log = logging.getLogger(__name__)


#: What a user can do today when no replica of a chunk can be read.
UNAVAILABLE_HINT = (
    "`chunkvault peers list` shows which peers are down: once they are back, run the same "
    "restore again (files already restored count as identical); replicas reported damaged "
    "above are lost on those peers (`chunkvault check --read-data` lists every damaged copy, "
    "`chunkvault repair` replaces them)"
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
        self.shares = ShareReader(self.peers, self.chooser, self._warnings, self._note_bad_share)

    def _order(self, chunk_id: str) -> list[PlacedPeer]:
        """The replicas of a chunk object, best first."""
        return self._order_for(self._where(chunk_id, None))

    def _order_for(self, where: _Where) -> list[PlacedPeer]:
        if self.catalog is None:
            holders: set[str] = set()
        elif where.offset is None:
            holders = set(self.catalog.replicas(where.placement_id))
        else:
            holders = set(self.catalog.pack_replicas(where.placement_id))
        return self.chooser.order(rank(where.placement_id, self.peers), holders)

    def read(
        self, chunk_id: str, wrapped_deks: Sequence[bytes] = (), plain_size: int | None = None
    ) -> bytes:
        """The chunk's plaintext, verified. ``wrapped_deks`` and ``plain_size`` are what the
        caller's manifest says. Raises only :class:`ChunkUnavailable`, whatever peers send."""
        deks, known_size, places = self._known(chunk_id, wrapped_deks, None)
        plain_size = plain_size if known_size is None else known_size
        limit = sealed_size_limit(self.max_chunk_size if plain_size is None else plain_size)
        return bytes(self._read(chunk_id, deks, memoryview(bytearray(limit)), limit, places))

    def read_into(
        self,
        chunk_id: str,
        buf: bytearray | memoryview,
        wrapped_deks: Sequence[bytes],
        plain_size: int,
        packed: tuple[str, int, int] | None = None,
    ) -> memoryview:
        """The chunk's plaintext, verified, as a view of ``buf`` (of a new buffer if the
        chunk is compressed): release it before reusing ``buf``. ``buf`` holds at least
        ``sealed_size_limit(plain_size)`` bytes; ``plain_size`` comes from an authenticated
        manifest. ``packed``: (pack id, offset, length) of a packed chunk's body, from the
        same manifest. Raises only :class:`ChunkUnavailable`, whatever peers send."""
        limit = sealed_size_limit(plain_size)
        view = memoryview(buf)
        if len(view) < limit:
            raise ValueError(f"a buffer of {len(view)} bytes cannot hold a {limit}-byte body")
        deks, _, places = self._known(chunk_id, wrapped_deks, packed)
        return self._read(chunk_id, deks, view, limit, places)

    def read_span_into(self, pack_id: str, view: memoryview, offset: int, length: int) -> str:
        """Bytes ``[offset, offset + length)`` of a pack into ``view`` from its best replica
        (restore reads the bodies of many small chunks with one request); the peer that
        served them. Open each body with :meth:`open_in_span`. Raises only
        :class:`ChunkUnavailable`."""
        where = self._where(pack_id, (pack_id, offset, length))
        if where.scheme is not None:
            return self._span_from_shares(where, view)
        problems: list[str] = []
        for placed in self._order_for(where):
            peer = placed.peer
            started = time.monotonic()
            try:
                with self.chooser.reading(peer.name):
                    where.get(peer, view, length)
            except NotFound:
                self._note_bad(where, peer.name, "missing")
                continue
            except PeerError as exc:
                if isinstance(exc, MalformedReply):
                    self._warnings.warn(
                        peer.name, "malformed chunks", "peer %s: %s", peer.name, exc.message
                    )
                problems.append(f"{peer.name}: {exc.message}")
                self.chooser.failed(peer.name)
                continue
            self.chooser.succeeded(peer.name, time.monotonic() - started)
            return peer.name
        raise ChunkUnavailable(
            f"pack {pack_id[:16]}: no readable replica"
            + (f" ({'; '.join(problems)})" if problems else " (not found on any peer)"),
            UNAVAILABLE_HINT,
        )

    def open_in_span(
        self, chunk_id: str, body: memoryview, wrapped_deks: Sequence[bytes], plain_size: int,
        peer: str,
    ) -> memoryview | None:  # fmt: skip
        """Open one chunk's body read by :meth:`read_span_into` from ``peer``, in place; its
        verified plaintext, or None if that copy is damaged (warned once per peer; read
        the chunk alone with :meth:`read_into`, which tries the other replicas)."""
        error: Exception | None = None
        # The caller's keys first: the manifest that placed this body there wrapped its
        # DEK, and a wrapping opens only for this chunk id. The catalog (a query, and a
        # GIL hand-off, per chunk) only when none of them opens.
        tried = dict.fromkeys(wrapped_deks)
        for wrapped in _then(tried, lambda: self._known(chunk_id, (), None)[0]):
            try:
                dek = unwrap_dek(self.keys, chunk_id, wrapped)
            except EnvelopeError as exc:  # not this chunk's key: the body is untouched
                error = exc
                continue
            try:
                return open_chunk_into(
                    self.keys, chunk_id, body, dek, sealed_size_limit(plain_size),
                    check_id=checks_id(wrapped),
                )  # fmt: skip
            except EnvelopeError as exc:  # spent in place: only a new read can try again
                error = exc
                break
        self._warnings.warn(
            peer, "damaged chunks", "chunk %s on %s is damaged: %s", chunk_id[:12], peer, error
        )
        self.chooser.failed(peer)
        return None

    def _span_from_shares(self, where: _Where, view: memoryview) -> str:
        """:meth:`read_span_into` of an erasure-coded pack: from its data shares, else
        rebuilt. Returns what the damaged-chunk warnings name (no one peer served it)."""
        assert where.scheme is not None and where.offset is not None
        coded = self._coded(where, where.size)
        try:
            self.shares.read_range_into(coded, view, where.offset, where.length)
        except ObjectUnreadable:
            try:
                self.shares.rebuild_range_into(coded, view, where.offset, where.length)
            except ObjectUnreadable as exc:
                raise ChunkUnavailable(
                    f"pack {where.placement_id[:16]}: fewer than {where.scheme.data} good "
                    f"shares ({exc})",
                    UNAVAILABLE_HINT,
                ) from None
        return f"the shares of pack {where.placement_id[:12]}"

    def _coded(self, where: _Where, size: int) -> Coded:
        """The erasure-coded object ``where`` names, for :class:`ShareReader` (``size``:
        the most bytes it may have; a pack's own size, for ranges)."""
        assert where.scheme is not None
        if self.catalog is None:
            recorded: dict[str, int] = {}
        elif where.offset is None:
            recorded = self.catalog.chunk_shares(where.placement_id)
        else:
            recorded = self.catalog.pack_shares(where.placement_id)
        return Coded(where.key, where.placement_id, where.scheme, recorded, size, where.sha256)

    def _read_shares_at(
        self,
        chunk_id: str,
        deks: list[bytes],
        view: memoryview,
        limit: int,
        where: _Where,
        problems: list[str],
    ) -> memoryview | None:
        """:meth:`_read_at` of a chunk in an erasure-coded object: a chunk object rebuilt
        from its shares, or a packed chunk's range of its pack's data shares (rebuilt when
        one is unreadable or what it read does not open)."""
        assert where.scheme is not None
        label = f"the shares of {where.placement_id[:12]}"
        try:
            if where.offset is None:
                # Rebuilt straight into the caller's buffer; only if the first key that
                # unwraps does not open it (in place: the bytes are spent) is it read again
                # into a buffer of its own, for the other keys.
                coded = self._coded(where, limit)
                size = self.shares.read_object_into(coded, view[:limit])
                data = self._open_copy(chunk_id, deks, view, size, limit, None, label, [],
                                       where)  # fmt: skip
                if data is not None:
                    return data
                body = self.shares.read_object(coded)
                view[: len(body)] = body
                return self._open_copy(chunk_id, deks, view, len(body), limit, body, label,
                                       problems, where)  # fmt: skip
            coded = self._coded(where, where.size)
            try:
                self.shares.read_range_into(coded, view, where.offset, where.length)
                data = self._open_copy(chunk_id, deks, view, where.length, limit, None, label,
                                       [], where)  # fmt: skip
                if data is not None:
                    return data
            except ObjectUnreadable:
                pass
            self.shares.rebuild_range_into(coded, view, where.offset, where.length)
            copy = bytes(view[: where.length])
            return self._open_copy(chunk_id, deks, view, where.length, limit, copy, label,
                                   problems, where)  # fmt: skip
        except ObjectUnreadable as exc:
            problems.append(f"{label}: {exc}")
            return None

    def _open_copy(
        self,
        chunk_id: str,
        deks: list[bytes],
        view: memoryview,
        size: int,
        limit: int,
        body: bytes | None,
        label: str,
        problems: list[str],
        where: _Where,
    ) -> memoryview | None:
        """Open ``view[:size]`` with each data key in turn, putting ``body`` (the bytes
        read) back before each new key (in-place decryption spends them); without
        ``body``, one key only. A chunk object's shares carry its wrapped DEK too."""
        error: Exception | None = None
        tried: set[bytes] = set()
        for wrapped in self._share_deks(deks, where):
            try:
                dek = unwrap_dek(self.keys, chunk_id, wrapped)
            except EnvelopeError as exc:
                error = exc
                continue
            if dek in tried:
                continue
            if tried:
                if body is None:
                    break
                view[:size] = body
            tried.add(dek)
            try:
                return open_chunk_into(self.keys, chunk_id, view[:size], dek, limit,
                                       check_id=checks_id(wrapped))  # fmt: skip
            except EnvelopeError as exc:
                error = exc
        if body is not None:  # (a range read first is retried rebuilt: no warning yet)
            self._warnings.warn(label, "damaged chunks", "chunk %s in %s does not open: %s",
                                chunk_id[:12], label, error)  # fmt: skip
        problems.append(f"{label}: {error}")
        return None

    def _share_deks(self, deks: list[bytes], where: _Where) -> Iterator[bytes]:
        """The known wrapped DEKs, then (a chunk object's, only if those failed) the one
        in the metadata of a share's object on a recorded holder."""
        yield from dict.fromkeys(deks)
        if where.offset is not None or where.scheme is None or self.catalog is None:
            return
        for name, index in self.catalog.chunk_shares(where.placement_id).items():
            placed = next((p for p in self.peers if p.name == name), None)
            if placed is None:
                continue
            try:
                info = placed.peer.stat(share_key(where.key, where.scheme, index))
                yield parse_chunk_metadata(info.metadata).wrapped_dek
                return
            except (PeerError, LayoutError):
                continue

    def _note_bad_share(self, skey: str, peer: str, state: str) -> None:
        """A share the catalog may record on ``peer`` is missing or damaged there."""
        if self.catalog is None:
            return
        try:
            data_key = parse_data_key(self.vault_id, skey)
        except LayoutError:
            return
        if data_key.kind == "chunk":
            recorded = self.catalog.chunk_shares(data_key.id)
            mark = self.catalog.set_replica_state
            key = chunk_key(self.vault_id, data_key.id)
        else:
            recorded = self.catalog.pack_shares(data_key.id)
            mark = self.catalog.set_pack_replica_state
            key = pack_key(self.vault_id, data_key.id)
        if recorded.get(peer) != data_key.share or data_key.scheme is None:
            return
        try:
            mark(data_key.id, peer, state)
            shortfall.note(self.catalog, key, data_key.scheme.width,
                           [p for p in recorded if p != peer])  # fmt: skip
        except sqlite3.Error as exc:
            log.debug("cannot note the %s share of %s on %s: %s", state, key, peer, exc)

    def _known(
        self, chunk_id: str, wrapped_deks: Sequence[bytes], packed: tuple[str, int, int] | None
    ) -> tuple[list[bytes], int | None, list[_Where]]:
        """The wrapped DEKs to try, the catalog's (our own write) first, then the caller's;
        the plain size the catalog knows; where to read the body: the caller's place first,
        then the catalog's if it differs (a chunk packed again since)."""
        deks = list(wrapped_deks)
        places = [self._where(chunk_id, packed)]
        if self.catalog is None or (row := self.catalog.chunk(chunk_id)) is None:
            return deks, None, places
        known = self._where(chunk_id, (row.pack, row.pack_offset, row.stored_size) if row.pack
                            else None)  # fmt: skip
        if known != places[0]:
            places.append(known)
        return [row.wrapped_dek, *deks], row.plain_size, places

    def _where(self, chunk_id: str, packed: tuple[str, int, int] | None) -> _Where:
        """Where the body is; an erasure-coded object's scheme, size and SHA-256 from the
        catalog (objects it does not know are read as whole copies)."""
        if packed is None:
            row = self.catalog.chunk(chunk_id) if self.catalog is not None else None
            if row is not None and row.scheme is not None and row.pack is None:
                return _Where(chunk_key(self.vault_id, chunk_id), chunk_id, None, 0,
                              Scheme.parse(row.scheme), row.stored_size,
                              row.sha256 or None)  # fmt: skip
            return _Where(chunk_key(self.vault_id, chunk_id), chunk_id, None, 0)
        pack_id, offset, length = packed
        pack = self.catalog.pack(pack_id) if self.catalog is not None else None
        if pack is not None and pack.scheme is not None:
            return _Where(pack_key(self.vault_id, pack_id), pack_id, offset, length,
                          Scheme.parse(pack.scheme), pack.stored_size,
                          pack.sha256 or None)  # fmt: skip
        return _Where(pack_key(self.vault_id, pack_id), pack_id, offset, length)

    def _read(
        self, chunk_id: str, deks: list[bytes], view: memoryview, limit: int, places: list[_Where]
    ) -> memoryview:
        problems: list[str] = []
        for where in places:
            if where.offset is not None and not 0 < where.length <= limit:
                problems.append(f"its place in pack {where.placement_id[:12]} is {where.length} "
                                f"bytes, more than a body of its size")  # fmt: skip
                continue
            data = self._read_at(chunk_id, deks, view, limit, where, problems)
            if data is not None:
                return data
        raise ChunkUnavailable(
            f"chunk {chunk_id[:16]}: no readable replica"
            + (f" ({'; '.join(problems)})" if problems else " (not found on any peer)"),
            UNAVAILABLE_HINT,
        )

    def _read_at(
        self,
        chunk_id: str,
        deks: list[bytes],
        view: memoryview,
        limit: int,
        where: _Where,
        problems: list[str],
    ) -> memoryview | None:
        if where.scheme is not None:
            return self._read_shares_at(chunk_id, deks, view, limit, where, problems)
        for placed in self._order_for(where):
            peer = placed.peer
            started = time.monotonic()
            try:
                with self.chooser.reading(peer.name):
                    size = where.get(peer, view, limit)
            except NotFound:
                self._note_bad(where, peer.name, "missing")
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
            data = self._open(chunk_id, view, size, limit, deks, placed, where, problems)
            if data is not None:
                self.chooser.succeeded(peer.name, time.monotonic() - started)
                return data
            self.chooser.failed(peer.name)
            # (A body from a span that does not open comes here too: restore reads that
            # chunk alone, from the same peer first.)
            self._note_bad(where, peer.name, "damaged")
        return None

    def _note_bad(self, where: _Where, peer: str, state: str) -> None:
        """A copy the catalog records on ``peer`` is missing or damaged there: no longer
        counted, and noted short so the agent's background repair replaces it
        (:mod:`chunkvault.healing`), back to as many copies as were recorded."""
        if self.catalog is None:
            return
        # Only where the catalog places the body: a packed chunk is tried as an object of
        # its own first when the caller does not say where it is (its replicas there are
        # its pack's), and a place from a manifest need not be the catalog's.
        if where.offset is None:
            row = self.catalog.chunk(where.placement_id)
            if row is None or row.pack is not None:
                return
            recorded = self.catalog.replicas(where.placement_id)
            mark = self.catalog.set_replica_state
        else:
            if self.catalog.pack(where.placement_id) is None:
                return
            recorded = self.catalog.pack_replicas(where.placement_id)
            mark = self.catalog.set_pack_replica_state
        if peer not in recorded:
            return
        try:
            mark(where.placement_id, peer, state)
            shortfall.note(
                self.catalog, where.key, len(recorded), [p for p in recorded if p != peer]
            )
        except sqlite3.Error as exc:  # e.g. a catalog this reader may not write: reading goes on
            log.debug("cannot note the %s copy of %s on %s: %s", state, where.key, peer, exc)

    def _open(
        self,
        chunk_id: str,
        view: memoryview,
        size: int,
        limit: int,
        deks: list[bytes],
        placed: PlacedPeer,
        where: _Where,
        problems: list[str],
    ) -> memoryview | None:
        """Open the body in ``view[:size]`` with each data key in turn (the object's own
        metadata supplies the last one), reading the body again after a key that failed."""
        error: Exception | None = None
        tried: set[bytes] = set()
        spent = False
        try:
            for wrapped in self._candidates(deks, placed, where):
                try:
                    dek = unwrap_dek(self.keys, chunk_id, wrapped)
                except EnvelopeError as exc:  # not this chunk's key: the body is untouched
                    error = exc
                    continue
                if dek in tried:  # the same key wrapped twice (a rotation): no use
                    continue
                tried.add(dek)
                if spent:
                    size = where.get(placed.peer, view, limit)
                try:
                    # limit (the largest body of this size) also caps what zstd may inflate
                    return open_chunk_into(self.keys, chunk_id, view[:size], dek, limit,
                                           check_id=checks_id(wrapped))  # fmt: skip
                except EnvelopeError as exc:
                    error, spent = exc, True
        except (PeerError, LayoutError) as exc:
            error = exc
        self._warnings.warn(
            placed.name,
            "damaged chunks",
            "chunk %s on %s is damaged: %s",
            chunk_id[:12],
            placed.name,
            error,
        )
        problems.append(f"{placed.name}: {error}")
        return None

    @staticmethod
    def _candidates(deks: list[bytes], placed: PlacedPeer, where: _Where) -> Iterator[bytes]:
        """The wrapped DEKs to try: the known ones, then (a stat, only if those failed)
        the one in a chunk object's metadata (a pack has none: its chunks' keys are only
        in the manifests)."""
        yield from dict.fromkeys(deks)  # unique, in order
        if where.offset is None:
            yield parse_chunk_metadata(placed.peer.stat(where.key).metadata).wrapped_dek


@dataclass(frozen=True)
class _Where:
    """Where a chunk's body is: a chunk object (``offset`` None) or a range of a pack."""

    key: str
    placement_id: str  # what placement ranks the replicas on: the chunk or pack id
    offset: int | None
    length: int
    # An erasure-coded object (chunkvault.shares): its scheme, size (at least; a pack's,
    # for ranges of its shares) and SHA-256 (None: unknown here).
    scheme: Scheme | None = None
    size: int = 0
    sha256: str | None = None

    def get(self, peer: Peer, view: memoryview, limit: int) -> int:
        if self.offset is None:
            return peer.get_into(self.key, view, limit)
        peer.get_range_into(self.key, view, self.offset, self.length)
        return self.length


def _then(first: dict[bytes, None], more: Callable[[], Sequence[bytes]]) -> Iterator[bytes]:
    """``first``'s keys, then those of ``more()`` not among them (asked only if needed)."""
    yield from first
    yield from (k for k in dict.fromkeys(more()) if k not in first)
