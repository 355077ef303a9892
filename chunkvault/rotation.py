"""Master-key rotation: a new KEK generation, and every wrapped data key re-wrapped under
it. No chunk body is re-sent: object metadata is replaced by server-side copy.

Crash-safe and resumable because the state lives in the keyring itself:

1. start: the master material gets generation N+1 (old ones kept) and the keyring is
   re-made over it (only the slot used; other slots cannot be re-wrapped without their
   passphrases, like LUKS2's reencrypt);
2. re-wrap: every chunk object's metadata, every manifest, every manifest batch (each
   copy on its own: a copy re-sealed by an interrupted run is skipped, the others are not)
   and the local catalog; anything already at generation N+1 is skipped, so a rerun
   continues where a crash stopped. Packs are never touched: they hold no key (a packed
   chunk's wrapped DEK lives in the batch entries and the catalog);
3. finish: once nothing references an old generation, the old KEKs are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chunkvault.backends.base import MalformedReply, NotFound, Peer, PeerError
from chunkvault.backends.listing import show_key
from chunkvault.catalog import Catalog
from chunkvault.crypto.envelope import (
    EnvelopeError,
    blob_generation,
    rewrap_dek,
    wrapped_generation,
)
from chunkvault.crypto.material import SEALED_GENERATION, MasterKeys
from chunkvault.crypto.writer_blob import writer_of
from chunkvault.journal import MAX_BATCH_BYTES, BatchEntry, JournalStore
from chunkvault.layout import LayoutError, chunks_prefix, parse_chunk_metadata, parse_data_key
from chunkvault.manifest import ManifestError, ManifestStore

log = logging.getLogger(__name__)


@dataclass
class RewrapReport:
    examined: int = 0
    rewrapped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failures


def rewrap_chunk_objects(
    peers: Sequence[Peer],
    vault_id: str,
    keys: MasterKeys,
    generation: int,
    workers: int = 8,
    progress: Callable[[int], None] | None = None,
) -> RewrapReport:
    """Re-wrap the data key in the metadata of every chunk object on every peer. Objects
    under ``chunks/`` whose key is not a chunk key are not ours: skipped, one warning per
    peer."""
    report = RewrapReport()

    def chunk_keys(peer: Peer) -> list[tuple[str, str]]:
        found, foreign = [], None
        for info in peer.list(chunks_prefix(vault_id)):
            try:
                # A chunk object's shares carry its wrapped DEK as a whole copy does.
                found.append((info.key, parse_data_key(vault_id, info.key).id))
            except LayoutError:
                foreign = foreign or info.key
        if foreign is not None:
            log.warning(
                "peer %s: skipped %s and any other object under %r that is not a chunk",
                peer.name,
                show_key(foreign),
                chunks_prefix(vault_id),
            )
        return found

    def one(peer: Peer, key: str, chunk_id: str) -> bool | str:
        try:
            info = peer.stat(key)
            meta = parse_chunk_metadata(info.metadata)
            if meta.generation in (generation, SEALED_GENERATION):  # sealed: no KEK in it
                return False
            wrapped = rewrap_dek(keys, chunk_id, meta.wrapped_dek, generation)
            peer.replace_metadata(key, meta.with_wrapped_dek(wrapped, info.metadata))
            return True
        except (PeerError, LayoutError, EnvelopeError) as exc:
            return f"{peer.name}:{key}: {exc}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for peer in peers:
            try:
                keys_on_peer = chunk_keys(peer)
            except PeerError as exc:
                report.failures.append(f"{peer.name}: cannot list chunks: {exc.message}")
                continue
            for outcome in pool.map(lambda item, p=peer: one(p, *item), keys_on_peer):
                report.examined += 1
                if isinstance(outcome, str):
                    report.failures.append(outcome)
                    log.warning("re-wrap failed: %s", outcome)
                elif outcome:
                    report.rewrapped += 1
                if progress:
                    progress(1)
    return report


def rewrap_manifests(
    store: ManifestStore, keys: MasterKeys, generation: int, workers: int = 8
) -> RewrapReport:
    """Re-seal every manifest whose own key or any chunk DEK inside is of another
    generation, on every peer that holds a copy (read from the first holder with a good
    one)."""
    report = RewrapReport()
    by_name = {p.name: p for p in store.peers}

    def one(item: tuple[str, list[str]]) -> bool | str:
        name, holders = item
        try:
            body, manifest = store.fetch(name, holders)
            current = blob_generation(body) == generation and all(
                wrapped_generation(c.wrapped_dek) in (generation, SEALED_GENERATION)
                for c in manifest.chunks
            )
            if current:
                return False
            sealed = store.seal(name, manifest.rewrapped(keys, generation))
            for holder in holders:
                by_name[holder].peer.put(name, sealed)
            return True
        except (PeerError, EnvelopeError, ManifestError) as exc:
            return f"manifest {name}: {exc}"

    unlisted: list[str] = []
    listed = list(store.names(unlisted))
    # A peer that cannot be listed may hold copies under the old key: not done yet.
    report.failures += [f"{peer}: cannot list {store.nouns}" for peer in unlisted]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in pool.map(one, listed):
            report.examined += 1
            if isinstance(outcome, str):
                report.failures.append(outcome)
            elif outcome:
                report.rewrapped += 1
    return report


def _batch_current(body: bytes, entries: list[BatchEntry], generation: int) -> bool:
    """No key in it is wrapped by another generation's KEK. A write-only host's batch
    (a writer blob: sealed to the vault key, its data keys too) holds none."""
    sealed = writer_of(body) is not None
    return (sealed or blob_generation(body) == generation) and all(
        wrapped_generation(c.wrapped_dek) in (generation, SEALED_GENERATION)
        for entry in entries
        for c in entry.manifest.chunks
    )


def rewrap_batches(
    store: JournalStore, keys: MasterKeys, generation: int, workers: int = 8
) -> RewrapReport:
    """Re-seal every manifest batch whose own key or any chunk DEK inside is of another
    generation. Every holder's copy is checked on its own (batches are few: one per
    thousands of files), so a run interrupted between two holders leaves no stale copy
    behind for the next run to miss; a copy that does not open is replaced by a good
    one. A packed chunk's location is kept as it is: packs hold no key."""
    report = RewrapReport()
    by_name = {p.name: p.peer for p in store.peers}

    def rewrapped(entries: list[BatchEntry]) -> list[BatchEntry]:
        return [BatchEntry(e.name, e.manifest.rewrapped(keys, generation)) for e in entries]

    def one(item: tuple[str, list[str]]) -> bool | str:
        name, holders = item
        stale: dict[str, list[BatchEntry] | None] = {}  # holder -> its entries (None: bad)
        try:
            for holder in holders:
                try:
                    body = by_name[holder].get(name, max_size=MAX_BATCH_BYTES)
                    entries = store.open(name, body)
                except NotFound:
                    continue  # deleted since the listing
                except (MalformedReply, EnvelopeError, ManifestError) as exc:
                    log.warning("peer %s: bad copy of %s, replaced: %s", holder, name, exc)
                    stale[holder] = None
                    continue
                if not _batch_current(body, entries, generation):
                    stale[holder] = entries
            if not stale:
                return False
            good = None
            for holder, entries in stale.items():
                if entries is None:
                    good = good or rewrapped(store.read(name, holders))
                    store.rewrite(name, good, [holder])
                else:
                    store.rewrite(name, rewrapped(entries), [holder])
            return True
        except (PeerError, EnvelopeError, ManifestError) as exc:
            return f"manifest batch {name}: {exc}"

    unlisted: list[str] = []
    listed = list(store.names(unlisted))
    # A peer that cannot be listed may hold copies under the old key: not done yet.
    report.failures += [f"{peer}: cannot list {store.nouns}" for peer in unlisted]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in pool.map(one, listed):
            report.examined += 1
            if isinstance(outcome, str):
                report.failures.append(outcome)
            elif outcome:
                report.rewrapped += 1
    return report


def rewrap_catalog(catalog: Catalog, keys: MasterKeys, generation: int) -> int:
    """The local cache's copies of wrapped DEKs (no I/O beyond SQLite)."""
    rows = [r for r in catalog.chunks_not_at(generation) if r.generation != SEALED_GENERATION]
    for row in rows:
        catalog.update_wrapped_dek(
            row.id, rewrap_dek(keys, row.id, row.wrapped_dek, generation), generation
        )
    return len(rows)
