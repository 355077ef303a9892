"""The upload service: the one path from "a chunk" to "replicas on peers".

:meth:`UploadService.store_chunk` is what every producer calls (the file pipeline and the
``POST /upload`` translation in :meth:`UploadService.upload`): dedup check, seal, rank the
peers by weighted rendezvous hashing, write the replicas concurrently (single PUT up to
``segment_size``, multipart above, done by the backend), walk down the ranking past
failed or down peers, and record where the replicas really are.

Chunks of ``POST /upload`` are sealed with the API id-key domain
(:func:`~chunkvault.crypto.domains.api_chunk_keys`): they never share an id, an object or
a dedup decision with the watched tree's chunks, so an API client cannot confirm that the
vault holds some content. For the same reason the API's answer never says "deduplicated".
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from chunkvault import shortfall
from chunkvault.backends.base import PeerError
from chunkvault.backends.listing import show_key
from chunkvault.catalog import Catalog, ChunkRow
from chunkvault.config import Config
from chunkvault.crypto.domains import DomainKeys, api_chunk_keys
from chunkvault.crypto.envelope import (
    PLAIN_OFFSET,
    seal_chunk_into,
    sealed_size_limit,
    unwrap_dek,
)
from chunkvault.crypto.material import MasterKeys
from chunkvault.erasure import Scheme
from chunkvault.layout import chunk_key, chunk_metadata, pack_key
from chunkvault.packs import PackWriter
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose
from chunkvault.shares import write_shares
from chunkvault.staging import Staging
from chunkvault.stored import StoredChunk, Written, settled, stored_reason
from chunkvault.upload_requests import (
    ChunkOutcome,
    RequestConflict,
    UnknownRequest,
    UploadChunk,
    UploadRequest,
    UploadResponse,
)

log = logging.getLogger(__name__)
# Many stripes: a chunk holds its stripe while its replicas are written, and with a
# pipeline of chunks in flight two unrelated chunks on one stripe would wait for each other.
_STRIPES = 1024


@dataclass(frozen=True)
class Unknown:
    """Chunks the catalog did not have when asked (:meth:`UploadService.unknown_chunks`),
    and how many times chunks had left the open packs for the catalog by then."""

    ids: frozenset[str]
    forgets: int


class UploadService:
    def __init__(
        self,
        config: Config,
        peers: Sequence[PlacedPeer],
        keys: MasterKeys,
        catalog: Catalog,
        staging: Staging | None = None,
        after_pack: Callable[[], None] | None = None,
    ) -> None:
        """``after_pack``: called once each pack's chunks have settled (see
        :class:`~chunkvault.packs.PackWriter`)."""
        self.config = config
        self.vault_id = config.vault.id
        self.peers = list(peers)
        self.keys = keys
        self.catalog = catalog
        self.staging = staging
        self._api_keys: DomainKeys | None = None
        # Replica writes of all chunks share this pool (every replica of every chunk in
        # flight at once); LimitPeer caps each peer.
        # Erasure-coded, new data objects are this scheme's shares (a flow setting its own
        # replicas keeps whole copies).
        self.scheme = config.replication.scheme
        replicas = max(2, config.replication.replicas, self.scheme.width if self.scheme else 0)
        self._replica_pool = ThreadPoolExecutor(
            max_workers=config.transfer.concurrency * replicas, thread_name_prefix="replica"
        )
        self._chunk_pool = ThreadPoolExecutor(
            max_workers=config.transfer.concurrency, thread_name_prefix="api-chunk"
        )
        # Identical chunks stored at once would race (two DEKs); one stripe lock each.
        self._chunk_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._request_locks = [threading.Lock() for _ in range(_STRIPES)]
        # Observers (metrics): called with (peer name, bytes) per replica written, and
        # (peer name) per failed replica write.
        self.on_write: Callable[[str, int], None] | None = None
        self.on_write_error: Callable[[str], None] | None = None
        # Called with (request id, [(client id, stored chunk, SHA-256)]) for the chunks a
        # POST /upload stored, before it answers; returns {client id: why} for those it
        # could not keep. A write-only host commits them as file versions there (the
        # owner could not find them otherwise: see chunkvault.vault).
        self.on_uploaded: (
            Callable[[str, list[tuple[str, StoredChunk, str]]], dict[str, str]] | None
        ) = None
        chunking = config.chunking
        # Chunks below the threshold go into packs (chunkvault.packs); 0 turns packing off.
        self.pack_threshold = chunking.pack_threshold
        self.packs: PackWriter | None = None
        if self.pack_threshold > 0:
            self.packs = PackWriter(
                self.vault_id, catalog, self.write_replicas,
                pack_size=chunking.pack_size, flush_seconds=chunking.pack_flush_seconds,
                on_written=after_pack,
            )  # fmt: skip

    def close(self) -> None:
        # Not waiting: a write hung on a dead peer must not hold up a stop (it times out
        # on its own, and whatever it was part of is redone from the durable queue).
        if self.packs is not None:
            self.packs.close()
        self._chunk_pool.shutdown(wait=False, cancel_futures=True)
        self._replica_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def api_keys(self) -> DomainKeys:
        """The id-key domain of API chunks, over whatever master keys the service holds."""
        if self._api_keys is None or self._api_keys.base is not self.keys:
            self._api_keys = api_chunk_keys(self.keys)
        return self._api_keys

    @staticmethod
    def _stripe(locks: list[threading.Lock], key: str) -> threading.Lock:
        return locks[int(hashlib.blake2b(key.encode(), digest_size=2).hexdigest(), 16) % _STRIPES]

    # --- the one path to the peers ---------------------------------------------------------

    def store_chunk(
        self,
        data: bytes | memoryview,
        *,
        replicas: int | None = None,
        compress: bool | None = None,
        keys: MasterKeys | None = None,
    ) -> StoredChunk:
        """Store one chunk. ``keys`` selects the id-key domain (default: the vault's, for
        the watched tree); KEKs are the same in every domain."""
        size = len(data)
        buf = bytearray(sealed_size_limit(size))
        buf[PLAIN_OFFSET : PLAIN_OFFSET + size] = data
        del data
        return self.store_in_place(buf, size, replicas=replicas, compress=compress, keys=keys)

    def store_in_place(
        self,
        buf: bytearray,
        size: int,
        *,
        replicas: int | None = None,
        compress: bool | None = None,
        keys: MasterKeys | None = None,
    ) -> StoredChunk:
        """:meth:`store_chunk` of the ``size`` plaintext bytes at ``buf[PLAIN_OFFSET:]``,
        sealed in place and sent from ``buf`` (``len(buf) >= sealed_size_limit(size)``).
        ``buf`` is the caller's again once this returns. A small chunk's pack is written
        at once: callers with many chunks use :meth:`start_in_place` instead."""
        started = self.start_in_place(buf, size, replicas=replicas, compress=compress, keys=keys)
        if not started.done() and self.packs is not None:
            self.packs.flush()
        return started.result()

    def start_in_place(
        self,
        buf: bytearray,
        size: int,
        *,
        replicas: int | None = None,
        compress: bool | None = None,
        keys: MasterKeys | None = None,
    ) -> Future[StoredChunk]:
        """Store the chunk in ``buf`` (as :meth:`store_in_place`); ``buf`` is the caller's
        again once this returns, the future completes once the chunk is durable: at once
        for a chunk object, when its pack is written for a small chunk (the push
        pipeline's one buffer per chunk; :meth:`flush` writes open packs now)."""
        keys = keys or self.keys
        target, minimum, scheme = self.redundancy(replicas)
        if compress is None:
            compress = self.config.chunking.compression == "zstd"
        chunk_id = keys.chunk_id(memoryview(buf)[PLAIN_OFFSET : PLAIN_OFFSET + size])
        packed = self.packed(size)
        with self._stripe(self._chunk_locks, chunk_id):
            known = self.catalog.chunk(chunk_id)
            have = self.catalog.replicas(chunk_id) if known else []
            if known is not None:  # it stays as it is stored: copies or shares
                target, minimum, scheme = self._kept_as(known, replicas)
            if known and len(have) >= minimum:
                return settled(_already_stored(known, have, target))
            if packed and self.packs is not None and (waiting := self.packs.pending(chunk_id)):
                return _deduplicated(waiting)
            if known and have and keys.seal_to is not None:
                # A write-only host cannot open the DEK it sealed to store the chunk again
                # under it: the copies it has stand, and the background repair copies them
                # (as they are) to the peers that lack one.
                shortfall.note(self.catalog, self._object_key(known), target, have)
                return settled(_already_stored(known, have, target))
            # Re-replicating a known chunk reuses its DEK, so every manifest's copy of the
            # wrapped DEK stays valid (a write-only host's with no copy left starts anew).
            reuse = known is not None and keys.seal_to is None
            dek = unwrap_dek(keys, chunk_id, known.wrapped_dek) if known and reuse else None
            sealed = seal_chunk_into(
                keys, buf, size, compress=compress, level=self.config.chunking.zstd_level,
                dek=dek, chunk_id=chunk_id,
            )  # fmt: skip
            if packed and self.packs is not None:
                return self.packs.add(
                    chunk_id, size, sealed.body, sealed.wrapped_dek, sealed.generation,
                    target, minimum, again=known is not None, scheme=scheme,
                )  # fmt: skip
            result = self.write_replicas(
                chunk_key(self.vault_id, chunk_id), chunk_id, sealed.body,
                chunk_metadata(sealed), target, scheme,
            )  # fmt: skip
            written, errors = result.peers, result.errors
            # (With a reused DEK this is a new wrapping of the same key: equally valid.)
            wrapped = sealed.wrapped_dek
            if written:
                self.catalog.record_chunk(
                    ChunkRow(
                        chunk_id, size, len(sealed.body), wrapped, sealed.generation,
                        sealed.body_sha256, scheme=None if scheme is None else str(scheme),
                    ),
                    written, result.shares, replace=scheme is not None,
                )  # fmt: skip
        ok = len(written) >= minimum
        if ok:
            reason = stored_reason(len(written), target)
        else:
            reason = f"stored on {len(written)} peer(s), need {minimum}: " + "; ".join(errors)
        return settled(StoredChunk(
            chunk_id, size, wrapped, tuple(written), ok, reason,
            len(sealed.body) * len(written), target,
        ))  # fmt: skip

    def unknown_chunks(self, chunk_ids: Sequence[str]) -> Unknown:
        """Which of ``chunk_ids`` the catalog does not have, in one query: what
        :meth:`start_sealed` is told, so that it need not look each one up itself."""
        forgets = self.packs.forgets if self.packs is not None else -1  # before the query
        known = self.catalog.known_chunks(chunk_ids)
        return Unknown(frozenset(c for c in chunk_ids if c not in known), forgets)

    def start_sealed(
        self, chunk_id: str, size: int, body: bytes, wrapped_dek: bytes, generation: int,
        *, replicas: int | None = None, unknown: Unknown | None = None,
    ) -> Future[StoredChunk] | None:  # fmt: skip
        """A small chunk of the watched tree sealed elsewhere (a seal worker, see
        :mod:`chunkvault.seal_workers`) into its pack, deduplicated as :meth:`start_in_place`
        does. None when the catalog knows the chunk with too few replicas: storing it again
        reuses its DEK, so it is sealed again by :meth:`start_in_place`. ``unknown``: from
        :meth:`unknown_chunks`; the catalog is asked again only if a chunk moved from a pack
        to the catalog since (every chunk gets there through a pack: a chunk that is neither
        waiting in one nor moved since is still unknown)."""
        if self.packs is None or not self.packed(size):
            raise ValueError(f"a chunk of {size} bytes does not go into a pack")
        target, minimum, scheme = self.redundancy(replicas)
        with self._stripe(self._chunk_locks, chunk_id):
            if (waiting := self.packs.pending(chunk_id)) is not None:
                return _deduplicated(waiting)
            still_unknown = (
                unknown is not None
                and chunk_id in unknown.ids
                and unknown.forgets == self.packs.forgets
            )
            known = None if still_unknown else self.catalog.chunk(chunk_id)
            if known is not None:
                have = self.catalog.replicas(chunk_id)
                target, minimum, scheme = self._kept_as(known, replicas)
                if len(have) < minimum:
                    return None
                return settled(_already_stored(known, have, target))
            return self.packs.add(
                chunk_id, size, body, wrapped_dek, generation, target, minimum, scheme=scheme
            )

    def redundancy(self, replicas: int | None) -> tuple[int, int, Scheme | None]:
        """How a new data object of a flow asking for ``replicas`` (None: the vault's way)
        is stored: (pieces, pieces that must be written for it to count as stored, the
        erasure scheme or None for whole copies). ``min_replicas`` - 1 is the number of
        peer losses a write must survive, in shares as in copies."""
        losses = self.config.replication.min_replicas - 1
        if replicas is None and self.scheme is not None:
            return self.scheme.width, self.scheme.required(losses), self.scheme
        target = min(replicas or self.config.replication.replicas, len(self.peers))
        return target, min(losses + 1, target), None

    def _kept_as(self, known: ChunkRow, replicas: int | None) -> tuple[int, int, Scheme | None]:
        """:meth:`redundancy` of a chunk the catalog knows: as it is stored (its own
        object's or its pack's scheme), whatever the config says now."""
        scheme = known.scheme
        if known.pack is not None:
            pack = self.catalog.pack(known.pack)
            scheme = pack.scheme if pack is not None else None
        if scheme is None:
            return self.redundancy(replicas or self.config.replication.replicas)
        s = Scheme.parse(scheme)
        return s.width, s.required(self.config.replication.min_replicas - 1), s

    def _object_key(self, row: ChunkRow) -> str:
        return pack_key(self.vault_id, row.pack) if row.pack else chunk_key(self.vault_id, row.id)

    def packed(self, size: int) -> bool:
        """A chunk of ``size`` plaintext bytes goes into a pack (not an object of its own)."""
        return self.packs is not None and size < self.pack_threshold

    def flush(self) -> None:
        """Write the open packs now: nothing more is coming soon."""
        if self.packs is not None:
            self.packs.flush()

    def write_replicas(
        self,
        key: str,
        placement_id: str,
        body: bytes | bytearray | memoryview,
        metadata: dict[str, str],
        target: int,
        scheme: Scheme | None = None,
    ) -> Written:
        """Write ``key`` to the top-ranked distinct peers for ``placement_id`` (a chunk or
        pack id); replace failures with the next ranked. With ``scheme``: its shares, one
        per peer (:func:`chunkvault.shares.write_shares`)."""
        if scheme is not None:
            result = write_shares(
                self._replica_pool, self.peers, key, placement_id, body, metadata, scheme,
                self.on_write, self.on_write_error,
            )  # fmt: skip
            if 0 < len(result.peers) < scheme.width:  # the background repair tops it up
                shortfall.note(self.catalog, key, scheme.width, result.peers)
            return result
        # Skip peers in their cool-off. Once it has passed, a down peer is tried again:
        # that write is the health tracker's probe, so a recovered peer rejoins.
        excluded = {p.name for p in self.peers if p.peer.down_for > 0 or p.draining}
        written: list[str] = []
        errors: list[str] = []
        while len(written) < target:
            chosen = choose(placement_id, self.peers, target, exclude=excluded)
            todo = [p for p in chosen if p.name not in written][: target - len(written)]
            if not todo:
                if not chosen and excluded and not written and not errors:
                    errors.append("every peer is down")
                break
            futures = {
                p.name: self._replica_pool.submit(p.peer.put, key, body, metadata) for p in todo
            }
            # Every put ends before any outcome is read: ``body`` is a view of a buffer the
            # pipeline reuses once this returns, and a put raising an unexpected error
            # must not leave a sibling still sending from it.
            wait(futures.values())
            for name, future in futures.items():
                try:
                    future.result()
                    written.append(name)
                    if self.on_write is not None:
                        self.on_write(name, len(body))
                except PeerError as exc:
                    if self.on_write_error is not None:
                        self.on_write_error(name)
                    errors.append(f"{name}: {exc.message}")
                    excluded.add(name)
                    log.warning("%s: replica on %s failed: %s", show_key(key), name, exc.message)
        if 0 < len(written) < target:  # the agent's background repair tops it up
            shortfall.note(self.catalog, key, target, written)
        return Written(written, errors)

    # --- the seed's upload API (translation layer) -----------------------------------------

    def upload(self, request: UploadRequest) -> UploadResponse:
        with self._stripe(self._request_locks, request.request_id):
            recorded = self.catalog.api_request(request.request_id)
            if recorded is not None:
                canonical, response = recorded
                if canonical != request.canonical():
                    # The bare id: the API leads with what went wrong (api/app.py).
                    raise RequestConflict(request.request_id)
                return _response_from_json(response, replayed=True)
            # Every chunk sealed and handed over first, then the small ones' pack written
            # once: a request's small chunks share a pack.
            digests: dict[str, str] = {}
            start = functools.partial(self._upload_start, digests=digests)
            started = list(self._chunk_pool.map(start, request.chunks))
            self.flush()
            outcomes = [_upload_outcome(chunk, s) for chunk, s in zip(request.chunks, started,
                                                                          strict=True)]  # fmt: skip
            if self.on_uploaded is not None:
                outcomes = self._committed(request.request_id, outcomes, started, digests)
            chunk_map = {o.id: cid for o, cid in outcomes if o.send == "OK" and cid}
            response = UploadResponse(request.request_id, tuple(o for o, _ in outcomes))
            self.catalog.record_api_request(
                request.request_id, request.canonical(), _response_to_json(response), chunk_map
            )
        if self.staging is not None:
            for client_id in chunk_map:
                self.staging.discard(client_id)
        return response

    def _committed(
        self,
        request_id: str,
        outcomes: list[tuple[ChunkOutcome, str | None]],
        started: list[ChunkOutcome | Future[StoredChunk]],
        digests: dict[str, str],
    ) -> list[tuple[ChunkOutcome, str | None]]:
        """Hand the chunks stored to ``on_uploaded`` (it commits them as versions); those
        it could not commit are NOTOK, with its reason."""
        assert self.on_uploaded is not None
        stored = [(o.id, s.result(), digests[o.id]) for (o, _), s in zip(outcomes, started,
                                                                          strict=True)
                  if o.send == "OK" and isinstance(s, Future)]  # fmt: skip
        failed = self.on_uploaded(request_id, stored) if stored else {}
        return [
            (ChunkOutcome(o.id, "NOTOK", failed[o.id]), None) if o.id in failed else (o, cid)
            for o, cid in outcomes
        ]

    def _upload_start(
        self, chunk: UploadChunk, digests: dict[str, str] | None = None
    ) -> ChunkOutcome | Future[StoredChunk]:
        """Seal and store one staged chunk (``digests``: its SHA-256 goes there, for
        ``on_uploaded``)."""
        client_id, declared = chunk.id, chunk.size_in_kb
        data = self.staging.get(client_id) if self.staging else None
        if data is None:
            return ChunkOutcome(
                client_id, "NOTOK", "not staged (or expired): PUT /chunks/{id} first"
            )  # fmt: skip
        actual = math.ceil(len(data) / 1024)
        if actual != declared:
            return ChunkOutcome(
                client_id, "NOTOK",
                f"size mismatch: declared {declared} KB, staged {len(data)} bytes ({actual} KB)",
            )  # fmt: skip
        size = len(data)
        if digests is not None and self.on_uploaded is not None:
            digests[client_id] = hashlib.sha256(data).hexdigest()
        buf = bytearray(sealed_size_limit(size))
        buf[PLAIN_OFFSET : PLAIN_OFFSET + size] = data
        del data
        return self.start_in_place(buf, size, keys=self.api_keys)

    def request_detail(self, request_id: str) -> UploadResponse:
        recorded = self.catalog.api_request(request_id)
        if recorded is None:
            raise UnknownRequest(request_id)
        return _response_from_json(recorded[1], replayed=True)


def _already_stored(known: ChunkRow, have: list[str], target: int) -> StoredChunk:
    """A chunk the catalog has on ``have`` peers, for one more file that holds it."""
    return StoredChunk(
        known.id, known.plain_size, known.wrapped_dek, tuple(have), True, "deduplicated",
        target=target, pack=known.pack, offset=known.pack_offset,
        length=known.stored_size if known.pack else 0,
    )  # fmt: skip


def _deduplicated(waiting: Future[StoredChunk]) -> Future[StoredChunk]:
    """A chunk already waiting in a pack, for its second user: the same outcome once the
    pack is written, counted as deduplicated (nothing more was sent for it)."""
    future: Future[StoredChunk] = Future()

    def on_written(done: Future[StoredChunk]) -> None:
        stored = done.result()
        future.set_result(
            replace(stored, reason="deduplicated", sent_bytes=0) if stored.ok else stored
        )

    waiting.add_done_callback(on_written)
    return future


def _upload_outcome(
    chunk: UploadChunk, started: ChunkOutcome | Future[StoredChunk]
) -> tuple[ChunkOutcome, str | None]:
    if isinstance(started, ChunkOutcome):
        return started, None
    stored = started.result()
    if not stored.ok:
        return ChunkOutcome(chunk.id, "NOTOK", stored.reason, stored.peers), None
    # Stored now or before: the same words and peer order, so the answer does not tell
    # whether the content was already there.
    reason = stored_reason(len(stored.peers), stored.target)
    return ChunkOutcome(chunk.id, "OK", reason, tuple(sorted(stored.peers))), stored.chunk_id


def _response_to_json(response: UploadResponse) -> dict[str, object]:
    return {
        "request_id": response.request_id,
        "chunks": [
            {"id": c.id, "send": c.send, "reason": c.reason, "peers": list(c.peers)}
            for c in response.chunks
        ],
    }


def _response_from_json(data: dict[str, object], replayed: bool) -> UploadResponse:
    chunks = data["chunks"]
    assert isinstance(chunks, list)
    return UploadResponse(
        str(data["request_id"]),
        tuple(
            ChunkOutcome(c["id"], c["send"], c.get("reason", ""), tuple(c.get("peers", ())))
            for c in chunks
        ),
        replayed=replayed,
    )
