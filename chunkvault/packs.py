"""Packs: the sealed bodies of small chunks back to back in one object, so a tree of small
files costs a few large PUTs instead of one per chunk per replica (restic's packs, kopia's
pack manager beside its content manager).

    <vault>/packs/<id[:2]>/<id>        id = 64 random hex (placement ranks on it)
    body = b"CVPK" | version(1)=0x01 | chunk body | chunk body | ...

Each chunk body is exactly the envelope a chunk object would hold (its own DEK, the chunk
id in its AAD), so reading a packed chunk is one ranged GET of its body and the usual
open-and-verify. The pack holds no key and no index: where each chunk sits (pack id, offset,
length) travels with its wrapped DEK in the manifest entries and the catalog, so master-key
rotation never rewrites a pack (docs/format.md).

Writing (:class:`PackWriter`): a chunk worker seals a small chunk and hands its body here;
the body is copied into the open pack for its replica count and the worker goes on. The
chunk settles (its future completes) once the pack is on ``min_replicas`` peers. A pack is
written when it reaches ``pack_size``, when ``pack_flush_seconds`` have passed since its
first chunk, or when the caller says nothing more is coming (:meth:`PackWriter.flush`), so
a lone small file is never held back. Once a pack's chunks have settled, ``on_written``
runs: the vault commits the files they completed at once, in one batch per pack, rather
than all at the end (so a push's last batch is small and off the critical path). A chunk
already waiting in a pack is not added again: its second user waits for the same pack
(dedup before durability).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from chunkvault.catalog import Catalog, ChunkRow, PackRow
from chunkvault.crypto.material import SEALED_GENERATION
from chunkvault.erasure import Scheme
from chunkvault.layout import pack_key, pack_metadata
from chunkvault.stored import StoredChunk, Written, settled, stored_reason

log = logging.getLogger(__name__)

MAGIC = b"CVPK"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
#: Packs being written at once before :meth:`PackWriter.add` waits: bounds the memory of
#: packs to (this + open packs) x pack_size while a slow peer holds writes up.
MAX_FLUSHING = 2
#: While no pack is being written, a pack goes once it holds this fraction of pack_size:
#: idle peers would otherwise wait for a full pack, and the last pack of a push (sent
#: after the last file is read, on the critical path) would often be a full one.
EARLY_FRACTION = 4

#: (object key, placement id, body, metadata, replicas, erasure scheme) -> where it went
WriteReplicas = Callable[[str, str, bytes | bytearray, dict[str, str], int, Scheme | None], Written]


def new_pack_id() -> str:
    return os.urandom(32).hex()


@dataclass
class _Slot:
    chunk_id: str
    plain_size: int
    wrapped_dek: bytes
    generation: int
    offset: int
    length: int
    again: bool  # the catalog knows it (under min_replicas): this pack is its new place
    future: Future[StoredChunk] = field(default_factory=Future)


@dataclass
class _Pack:
    target: int
    minimum: int
    scheme: Scheme | None  # shares, or (None) ``target`` whole copies
    id: str = field(default_factory=new_pack_id)
    body: bytearray = field(default_factory=lambda: bytearray(HEADER))
    slots: list[_Slot] = field(default_factory=list)


class PackWriter:
    """Open packs (one per replica count or erasure scheme), written by a small pool of
    their own."""

    def __init__(
        self,
        vault_id: str,
        catalog: Catalog,
        write: WriteReplicas,
        *,
        pack_size: int,
        flush_seconds: float,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        """``on_written``: called after each pack's chunks have settled (their files'
        completions ran), in the thread that wrote it."""
        self.vault_id = vault_id
        self.on_written = on_written
        self.catalog = catalog
        self._write = write
        self.pack_size = pack_size
        self.flush_seconds = flush_seconds
        self._cond = threading.Condition()
        self._open: dict[tuple[int, Scheme | None], _Pack] = {}
        self._pending: dict[str, Future[StoredChunk]] = {}
        self._flushing = 0
        # Counts every time chunks left _pending (after the catalog got them): a chunk
        # looked up before and not pending now is still unknown if it has not moved.
        self.forgets = 0
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=MAX_FLUSHING, thread_name_prefix="pack")

    def pending(self, chunk_id: str) -> Future[StoredChunk] | None:
        """The future of ``chunk_id`` if it waits in a pack not yet written."""
        with self._cond:
            return self._pending.get(chunk_id)

    def add(
        self,
        chunk_id: str,
        plain_size: int,
        body: bytes | bytearray | memoryview,
        wrapped_dek: bytes,
        generation: int,
        target: int,
        minimum: int,
        again: bool = False,
        scheme: Scheme | None = None,
    ) -> Future[StoredChunk]:
        """Copy ``body`` (a sealed chunk) into the open pack for ``target`` replicas (or
        ``scheme``'s shares, ``target`` its width); the future completes once that pack is
        written (or failed). ``body`` is the caller's again when this returns. ``again``:
        the catalog knows the chunk, with too few replicas; once written, this pack is
        where it is."""
        slot_key = (target, scheme)
        with self._cond:
            if self._closed:
                return settled(_failed(chunk_id, plain_size, "stopped before it was stored"))
            waiting = self._pending.get(chunk_id)
            if waiting is not None:
                return waiting
            pack = self._open.get(slot_key)
            if pack is not None and len(pack.body) + len(body) > self.pack_size:
                self._start_locked(pack)
                pack = None
            while self._flushing >= MAX_FLUSHING and not self._closed:
                self._cond.wait()  # the peers are behind: hold the chunk workers back
            if self._closed:
                return settled(_failed(chunk_id, plain_size, "stopped before it was stored"))
            if pack is None:
                pack = self._open.get(slot_key)
            if pack is None:
                pack = self._open[slot_key] = _Pack(target, minimum, scheme)
                timer = threading.Timer(self.flush_seconds, self._flush_stale, (pack,))
                timer.daemon = True
                timer.start()
            slot = _Slot(
                chunk_id, plain_size, wrapped_dek, generation, len(pack.body), len(body), again
            )
            pack.body += body
            pack.slots.append(slot)
            pack.minimum = max(pack.minimum, minimum)
            self._pending[chunk_id] = slot.future
            if len(pack.body) >= self.pack_size or (
                self._flushing == 0 and len(pack.body) >= self.pack_size // EARLY_FRACTION
            ):
                self._start_locked(pack)
            return slot.future

    def flush(self) -> None:
        """Write every open pack now (nothing more is coming soon)."""
        with self._cond:
            for pack in list(self._open.values()):
                self._start_locked(pack)

    def close(self) -> None:
        """Stop: chunks in open packs fail (their files are stored again next time); packs
        already being written finish on their own."""
        with self._cond:
            self._closed = True
            dropped = list(self._open.values())
            self._open.clear()
            for pack in dropped:
                for slot in pack.slots:
                    self._pending.pop(slot.chunk_id, None)
            self._cond.notify_all()
        for pack in dropped:
            _fail(pack, "stopped before it was stored")
        self._pool.shutdown(wait=False)

    # --- writing ---------------------------------------------------------------------------

    def _flush_stale(self, pack: _Pack) -> None:
        with self._cond:
            if self._open.get((pack.target, pack.scheme)) is pack:
                self._start_locked(pack)

    def _start_locked(self, pack: _Pack) -> None:
        if self._open.get((pack.target, pack.scheme)) is pack:
            del self._open[(pack.target, pack.scheme)]
        self._flushing += 1
        try:
            self._pool.submit(self._flush, pack)
        except RuntimeError:  # the pool is shut down (close): nothing will write it
            self._flushing -= 1
            self._forget_locked(pack)
            _fail(pack, "stopped before it was stored")

    def _forget_locked(self, pack: _Pack) -> None:
        self.forgets += 1
        for slot in pack.slots:
            if self._pending.get(slot.chunk_id) is slot.future:
                del self._pending[slot.chunk_id]

    def _flush(self, pack: _Pack) -> None:
        outcomes: list[StoredChunk] = []
        try:
            outcomes = self._store(pack)
        except Exception as exc:  # a bug: fail these chunks' files, keep writing packs
            log.exception("writing pack %s failed", pack.id[:12])
            outcomes = [
                _failed(s.chunk_id, s.plain_size, f"internal error: {type(exc).__name__}: {exc}")
                for s in pack.slots
            ]
        finally:
            # Written (or not): the body goes now, not after the completions below. They
            # take a while for a pack of thousands of small files, while the next pack is
            # already being written: a 20,000-file push held a third body meanwhile.
            pack.body = bytearray()
            with self._cond:
                # After the catalog has the chunks (in _store): a chunk stored again meanwhile
                # finds them there, never in neither place.
                self._forget_locked(pack)
                self._flushing -= 1
                self._cond.notify_all()
        for slot, outcome in zip(pack.slots, outcomes, strict=True):
            slot.future.set_result(outcome)
        if self.on_written is not None:
            self.on_written()

    def _store(self, pack: _Pack) -> list[StoredChunk]:
        if self._closed:
            return [_failed(s.chunk_id, s.plain_size, "stopped before it was stored")
                    for s in pack.slots]  # fmt: skip
        body = pack.body  # nobody appends to it any more: sent as it is, not copied
        sha256 = hashlib.sha256(body).hexdigest()
        key = pack_key(self.vault_id, pack.id)
        sealed = any(s.generation == SEALED_GENERATION for s in pack.slots)
        result = self._write(
            key, pack.id, body, pack_metadata(VERSION, sha256, sealed), pack.target, pack.scheme
        )
        written, errors = result.peers, result.errors
        if written:
            rows = [
                ChunkRow(s.chunk_id, s.plain_size, s.length, s.wrapped_dek, s.generation, "",
                         pack=pack.id, pack_offset=s.offset)
                for s in pack.slots
            ]  # fmt: skip
            scheme = None if pack.scheme is None else str(pack.scheme)
            self.catalog.record_pack(
                PackRow(pack.id, len(body), sha256, scheme), rows, written, result.shares
            )
            for slot, row in zip(pack.slots, rows, strict=True):
                if slot.again:  # record_pack keeps a known chunk's row: move it here
                    self.catalog.record_chunk(row, written, result.shares, replace=True)
        ok = len(written) >= pack.minimum
        reason = (
            stored_reason(len(written), pack.target)
            if ok
            else f"stored on {len(written)} peer(s), need {pack.minimum}: " + "; ".join(errors)
        )
        return [
            StoredChunk(
                s.chunk_id, s.plain_size, s.wrapped_dek, tuple(written), ok, reason,
                s.length * len(written), pack.target, pack.id, s.offset, s.length,
            )
            for s in pack.slots
        ]  # fmt: skip


def _failed(chunk_id: str, plain_size: int, reason: str) -> StoredChunk:
    return StoredChunk(chunk_id, plain_size, b"", (), False, reason)


def _fail(pack: _Pack, reason: str) -> None:
    for slot in pack.slots:
        if not slot.future.done():
            slot.future.set_result(_failed(slot.chunk_id, slot.plain_size, reason))
