"""An open vault: unlocked keys, peers, catalog, and the services built on them.

Commands that touch data (push, ls, restore, run) open one of these. On a machine whose
catalog is new (fresh install, deleted state dir) it is first rebuilt from the manifests
and chunk listings on the peers, so the peers alone are enough.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from chunkvault import forms
from chunkvault.backends.base import NotFound, PeerError
from chunkvault.catalog import Catalog, ChunkRow, PackRow, VersionRow
from chunkvault.catalog.store import WRITER_ID
from chunkvault.commits import PENDING, Committed, Committer, version_row
from chunkvault.config import Config
from chunkvault.crypto.envelope import wrapped_generation
from chunkvault.crypto.material import MasterKeys, WriterKeys
from chunkvault.draining import draining, marked
from chunkvault.errors import ChunkvaultError
from chunkvault.flows import FlowRules
from chunkvault.journal import JournalStore, parse_batch_name
from chunkvault.layout import (
    chunks_prefix,
    packs_prefix,
)
from chunkvault.light_future import LightFuture
from chunkvault.manifest import ChunkRef, Manifest, ManifestError, ManifestStore, RefusedBlob
from chunkvault.names import API_UPLOADS
from chunkvault.peerset import PlacedPeer
from chunkvault.reading import ChunkReader
from chunkvault.staging import Staging
from chunkvault.stored import StoredChunk
from chunkvault.upload import UploadService
from chunkvault.writerlock import LOCK_NAME

log = logging.getLogger(__name__)
T = TypeVar("T")
CATALOG_NAME = "catalog.db"
SYNCED = "synced_from_peers"
GENERATION_FLOOR = "max_key_generation"
#: Catalog meta of a write-only host's state dir: the id domain it names its chunks in
#: (writer_credential.writer_keys; its writer is catalog.store.WRITER_ID).
WRITER_DOMAIN = "writer_domain"
#: Parsed manifest batches kept for reading versions (restore reads many from one batch).
BATCH_CACHE = 8


class StaleKeyring(ChunkvaultError):
    exit_code = 4


def _enforce_generation(catalog: Catalog, keys: MasterKeys, what: str) -> None:
    """Never go below the highest key generation this machine has used: a keyring whose
    current generation is older is a rollback (a stale peer copy, an old backup), and new
    data wrapped with it would be readable by passphrases removed since."""
    floor = int(catalog.get_meta(GENERATION_FLOOR) or 0)
    if keys.current < floor:
        raise StaleKeyring(
            f"{what} is older than this vault's data: its master key generation is "
            f"{keys.current}, but generation {floor} is in use since a `key rotate-master`",
            "a peer or a backup served an old keyring; `chunkvault key verify` shows the "
            "copies, `chunkvault key import` restores a current backup",
        )
    if keys.current > floor:
        catalog.set_meta(GENERATION_FLOOR, str(keys.current))


def check_generation(state_dir: Path, keys: MasterKeys, what: str, record: bool = False) -> None:
    """:func:`_enforce_generation` for commands that do not open a vault (key import,
    rotate-master). ``record``: create the catalog to remember the generation in."""
    path = state_dir / CATALOG_NAME
    if not path.exists() and not record:
        return
    catalog = Catalog(path)
    try:
        _enforce_generation(catalog, keys, what)
    finally:
        catalog.close()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Vault:
    def __init__(self, config: Config, peers: Sequence[PlacedPeer], keys: MasterKeys) -> None:
        self.config = config
        self.peers = list(peers)
        self.keys = keys
        state = config.vault.state_dir
        self.catalog = Catalog(state / CATALOG_NAME)
        if not self.write_only and self.catalog.get_meta(WRITER_ID) is not None:
            self.catalog.close()
            raise ChunkvaultError(
                f"state_dir {state} is a write-only host's (its catalog was made with a "
                "writer credential)",
                "open the vault with the passphrase from a state_dir of its own",
            )
        self._state_files = {
            name: identity
            for name in (CATALOG_NAME, LOCK_NAME)
            if (identity := _identity(state / name)) is not None
        }  # the writer lock exists here when we hold it (writers open the vault under it)
        try:
            _enforce_generation(self.catalog, keys, "the keyring")
        except StaleKeyring:
            self.catalog.close()
            raise
        # Before any service is built on them: a peer being drained gets no new copy.
        self.peers = marked(self.peers, draining(self.catalog))
        # Manifests the last sync could not read (name -> why): their files are missing
        # from the catalog, so `ls` and `restore` must fail naming them.
        self.unreadable: dict[str, str] = {}
        # Those of them that are refused, not damaged: batches of writers the keyring does
        # not trust (revoked before the date they give). `gc` deletes them.
        self.refused: set[str] = set()
        self.unlisted: list[str] = []
        self.staging = Staging.from_config(state / "staging", config.api)
        self.manifests = ManifestStore(
            config.vault.id,
            keys,
            self.peers,
            config.replication.metadata_copies,
            config.replication.min_replicas,
        )
        self.journal = JournalStore(
            config.vault.id,
            keys,
            self.peers,
            config.replication.metadata_copies,
            config.replication.min_replicas,
        )
        self.commits = Committer(
            config.vault.id, keys, self.journal, self.catalog, config.chunking.pack_flush_seconds
        )
        # A written pack completes its files: commit them now, one batch per pack, while
        # the next pack fills (not all in one batch after the last pack).
        self.service = UploadService(
            config, self.peers, keys, self.catalog, self.staging, after_pack=self.commits.flush
        )
        if self.write_only:
            self.service.on_uploaded = self._commit_uploads
        self._batches: OrderedDict[str, Future[dict[str, Manifest]]] = OrderedDict()
        self._batches_lock = threading.Lock()
        largest_chunk = max(config.chunking.max_size, config.api.max_chunk_bytes)
        self.reader = ChunkReader(config.vault.id, self.peers, keys, self.catalog, largest_chunk)
        self.rules = FlowRules(config)

    @property
    def write_only(self) -> bool:
        """Opened with a writer credential: stores, reads nothing back (issue 14)."""
        return isinstance(self.keys, WriterKeys)

    def close(self) -> None:
        # Not waiting for a batch still being written: a hung peer must not hold up a
        # stop, and its versions are recovered or stored again at the next open.
        self.commits.close(wait=False)
        self.service.close()
        self.catalog.close()

    def state_lost(self) -> str | None:
        """Why the catalog (or the writer lock) this vault has open is no longer the file at
        its path in the state dir: deleted or replaced, e.g. by ``rm -rf`` of the state dir.
        None while all is well (or when it cannot be told). One ``stat`` per file: cheap
        enough to ask every second."""
        state = self.config.vault.state_dir
        for name, known in self._state_files.items():
            try:
                st = os.stat(state / name)
            except (FileNotFoundError, NotADirectoryError):
                return f"{name} was deleted"
            except OSError:
                continue  # e.g. its permissions changed: still the files we have open
            if (st.st_dev, st.st_ino) != known:
                return f"{name} was replaced by another file"
        return None

    def sync_problems(self) -> ChunkvaultError | None:
        """What the last sync from the peers could not read, as the error `ls` and
        `restore` end with (after doing what they could), or None. Peers that could not
        be listed are only warned about: their objects usually have replicas elsewhere."""
        for name in self.unlisted:
            log.warning("peer %s could not be listed: versions stored only there may be missing",
                        name)  # fmt: skip
        if not self.unreadable:
            return None
        shown = [f"{name} ({why})" for name, why in sorted(self.unreadable.items())[:5]]
        more = len(self.unreadable) - len(shown)
        return ChunkvaultError(
            f"{len(self.unreadable)} stored file version(s) could not be read, so their files "
            f"are left out: {'; '.join(shown)}" + (f"; and {more} more" if more > 0 else ""),
            "check `chunkvault peers list` and `chunkvault key verify`; versions listed only "
            "by one peer that no other peer holds may be that peer's forgeries",
        )

    # --- rebuilding the catalog from the peers ---------------------------------------------

    def ensure_synced(self) -> None:
        if self.catalog.get_meta(SYNCED) is None:
            added = self.sync_from_peers()
            log.info("catalog rebuilt from peers: %d version(s)", added)
        elif self.keys.writers:
            added = self.sync_written()
            if added:
                log.info("%d version(s) stored by write-only hosts added", added)

    def sync_written(self) -> int:
        """Add the manifest batches on the peers that this catalog lacks: what write-only
        hosts stored since (they tell nobody). One listing of batches per peer; only when
        one is new are the chunks and packs listed, to learn where its objects are."""
        unlisted: list[str] = []
        new = [(n, h) for n, h in self.journal.names(unlisted) if not self.catalog.has_batch(n)]
        self.unlisted = sorted(set(unlisted) | set(self.unlisted))
        if not new:
            return 0
        refs: dict[str, ChunkRef] = {}
        added = 0
        for name, holders in new:
            added += self._sync_one(name, holders, refs, self.journal.read, lambda es, n: [
                (e.manifest, version_row(e.manifest, e.name, batch=n)) for e in es
            ])  # fmt: skip
        self._sync_replicas(refs)
        self._sync_packs(refs)
        return added

    # --- committing versions exactly once -------------------------------------------------

    def commit(self, manifest: Manifest, inode: int | None = None) -> str:
        """Commit one version now (its own batch; see :mod:`chunkvault.commits`); returns
        its name. Raises ManifestError if under min_replicas."""
        return self.commits.commit(manifest, inode).name

    def commit_later(self, manifest: Manifest, inode: int | None = None) -> LightFuture[Committed]:
        """Queue a version for the next batch (see :class:`chunkvault.commits.Committer`)."""
        return self.commits.append(manifest, inode)

    def _clear_pending(self, name: str) -> None:
        self.commits.clear_pending(name)

    def pending(self) -> list[str]:
        """Manifest and batch names whose commit was cut short (by a kill or a failed
        delete)."""
        return sorted(key[len(PENDING) :] for key in self.catalog.meta_with_prefix(PENDING))

    def recover_pending(self) -> int:
        """Finish or drop every commit a kill cut short; returns the versions added. A
        batch (or manifest) found on a peer is complete (it is written only after all its
        chunks are durable): it is brought to R copies under the same name and its
        versions added to the catalog. One on no peer was never written: forgotten, so its
        files are stored again. One that cannot be told (a peer is down) stays pending for
        the next open. Only a writer (holding the writer lock) may call it: a pending name
        may be a commit in flight."""
        added = 0
        for name in self.pending():
            if parse_batch_name(self.config.vault.id, name) is not None:
                added += self._recover_batch(name)
            else:
                added += self._recover_manifest(name)
        if added:
            log.info("%d interrupted commit(s) completed", added)
        return added

    def _recover_batch(self, name: str) -> int:
        if self.write_only:
            return self._recover_written_batch(name)
        return self._recover(
            name, self.catalog.has_batch(name), self.journal.read, self.journal.write,
            lambda entries: [version_row(e.manifest, e.name, batch=name) for e in entries],
        )  # fmt: skip

    def _recover_written_batch(self, name: str) -> int:
        """A write-only host's pending batch: it cannot read it back to learn its versions.
        Its files, missing from the catalog, are stored again by the next scan, so it is
        forgotten whether or not a peer holds it: one found stays where it is (the owner
        sees those versions twice, the same content)."""
        self._clear_pending(name)
        return 0

    def _recover_manifest(self, name: str) -> int:
        """A per-file manifest commit (written by versions before manifest batches)."""
        return self._recover(
            name, self.catalog.has_manifest(name), self.manifests.read, self.manifests.write,
            lambda manifest: [version_row(manifest, name)],
        )  # fmt: skip

    def _recover(
        self,
        name: str,
        known: bool,
        read: Callable[[str], T],
        write: Callable[[T, str], object],
        rows: Callable[[T], list[VersionRow]],
    ) -> int:
        """One pending name: in the catalog already, or read from a peer, brought back to
        R copies and added; forgotten if no peer has it; left pending if that is unknown."""
        if known:
            self._clear_pending(name)
            return 0
        try:
            found = read(name)
        except ManifestError as exc:
            if self._absent_everywhere(name):
                self._clear_pending(name)
            else:
                log.warning("an interrupted commit (%s) stays pending: %s", name, exc)
            return 0
        try:
            write(found, name)
        except ManifestError as exc:
            log.warning("an interrupted commit (%s) stays pending: %s", name, exc)
            return 0
        versions = rows(found)
        self.catalog.add_versions(versions)
        self._clear_pending(name)
        return len(versions)

    def _commit_uploads(
        self, request_id: str, stored: list[tuple[str, StoredChunk, str]]
    ) -> dict[str, str]:
        """A write-only host's ``POST /upload``: each chunk stored becomes a file version,
        ``API_UPLOADS/req-<request id>/chunk-<id>``, committed before the answer. The map
        from client ids to chunks is in this host's catalog only, which the owner never
        sees, and this host cannot read a chunk back: as a file, the owner lists and
        restores it. Returns {client id: why} for those not committed."""
        now = time.time_ns()
        waiting = []
        for client_id, chunk, sha256 in stored:
            ref = ChunkRef(chunk.chunk_id, chunk.plain_size, chunk.wrapped_dek, chunk.pack,
                           chunk.offset, chunk.length)  # fmt: skip
            manifest = Manifest(f"{API_UPLOADS}/req-{request_id}/chunk-{client_id}",
                                chunk.plain_size, now, 0o100644, sha256, (ref,))  # fmt: skip
            waiting.append((client_id, self.commits.append(manifest)))
        self.commits.flush()
        failed = {}
        for client_id, future in waiting:
            try:
                future.result()
            except ManifestError as exc:
                failed[client_id] = f"stored, but not committed: {exc.message}"
        return failed

    # --- reading versions ------------------------------------------------------------------

    def read_version(self, version: VersionRow) -> Manifest:
        """The manifest of a catalog version: from its batch (a few recent batches are kept
        parsed: restore reads many versions of one batch) or its own manifest object.
        Raises ManifestError."""
        if version.batch is None:
            return self.manifests.read(version.manifest)
        manifest = self._batch(version.batch).get(version.manifest)
        if manifest is None:
            raise ManifestError(
                f"version {version.manifest} is not in its batch {version.batch}",
                "the batch was rewritten since the catalog was: `chunkvault ls` after "
                "deleting the state dir's catalog.db rebuilds it from the peers",
            )
        return manifest

    def cached_version(self, version: VersionRow) -> Manifest | None:
        """:meth:`read_version` if that needs no I/O (its batch is parsed already), else
        None: restore then reads it in a thread, not in the one scheduling files."""
        if version.batch is None:
            return None
        with self._batches_lock:
            reading = self._batches.get(version.batch)
        if reading is None or not reading.done() or reading.exception() is not None:
            return None
        return reading.result().get(version.manifest)

    def _batch(self, name: str) -> dict[str, Manifest]:
        with self._batches_lock:
            reading = self._batches.get(name)
            mine = reading is None
            if reading is None:
                reading = self._batches[name] = Future()
                while len(self._batches) > BATCH_CACHE:
                    self._batches.popitem(last=False)
            else:
                self._batches.move_to_end(name)
        if not mine:
            return reading.result()  # read by another thread (or cached)
        try:
            entries = {e.name: e.manifest for e in self.journal.read(name)}
        except BaseException as exc:
            with self._batches_lock:
                if self._batches.get(name) is reading:
                    del self._batches[name]  # not cached: the next reader tries again
            reading.set_exception(exc)
            raise
        reading.set_result(entries)
        return entries

    def forget_batch(self, name: str) -> None:
        with self._batches_lock:
            self._batches.pop(name, None)

    # --- purging a path --------------------------------------------------------------------

    def purge(self, path: str) -> int:
        """Remove every version of ``path`` from the peers and the catalog: its manifest
        objects are deleted, and each batch holding one of its versions is rewritten
        without them on every peer that holds it (deleted once empty). The catalog goes
        last, so a purge cut short is simply done again. Returns the versions removed."""
        versions = self.catalog.versions(path)
        by_batch: dict[str, set[str]] = {}
        for version in versions:
            if version.batch is None:
                self.manifests.delete(version.manifest)
            else:
                by_batch.setdefault(version.batch, set()).add(version.manifest)
        for batch, gone in by_batch.items():
            entries = self.journal.read(batch)
            kept = [e for e in entries if e.name not in gone]
            if kept:
                self.journal.rewrite(batch, kept, self.holders(batch))
            else:
                self.journal.delete(batch)
            self.forget_batch(batch)
        self.catalog.remove_versions(path)
        return len(versions)

    def holders(self, name: str) -> list[str]:
        held = []
        for placed in self.peers:
            try:
                placed.peer.stat(name)
            except NotFound:
                continue
            except PeerError as exc:
                raise ManifestError(f"cannot tell whether {placed.name} holds {name}: "
                                    f"{exc.message}") from None  # fmt: skip
            held.append(placed.name)
        return held

    def _absent_everywhere(self, name: str) -> bool:
        for placed in self.peers:
            try:
                placed.peer.stat(name)
            except NotFound:
                continue
            except PeerError:
                return False
            return False
        return True

    def sync_from_peers(self) -> int:
        """Add every version (manifest batches, and per-file manifests of older versions)
        and every chunk and pack replica the peers hold that the catalog lacks. Returns the
        number of versions added. Marks the catalog synced only when every peer could be
        listed and every manifest and batch read."""
        refs: dict[str, ChunkRef] = {}
        added = 0
        self.unreadable = {}
        self.refused = set()
        unlisted: list[str] = []
        names = list(self.manifests.names(unlisted))
        batches = list(self.journal.names(unlisted))
        for name, holders in batches:
            if not self.catalog.has_batch(name):
                added += self._sync_one(name, holders, refs, self.journal.read, lambda es, n: [
                    (e.manifest, version_row(e.manifest, e.name, batch=n)) for e in es
                ])  # fmt: skip
        for name, holders in names:
            if not self.catalog.has_manifest(name):
                added += self._sync_one(name, holders, refs, self.manifests.read, lambda m, n: [
                    (m, version_row(m, n))
                ])  # fmt: skip
        # A refused batch is the keyring's lasting decision: it does not keep the catalog
        # from being complete (it is read again, and reported, until gc deletes it).
        complete = not unlisted and not set(self.unreadable) - self.refused
        complete &= self._sync_replicas(refs)
        complete &= self._sync_packs(refs)
        self.unlisted = sorted(set(unlisted) | set(self.unlisted))
        if self.unreadable:
            log.warning("%d stored version(s) could not be read (see `chunkvault ls`)",
                        len(self.unreadable))  # fmt: skip
        if complete:
            self.catalog.set_meta(SYNCED, "1")
        return added

    def _sync_one(
        self,
        name: str,
        holders: list[str],
        refs: dict[str, ChunkRef],
        read: Callable[[str, Sequence[str]], T],
        versions: Callable[[T, str], list[tuple[Manifest, VersionRow]]],
    ) -> int:
        """Add the versions of one listed batch or manifest; remember its chunks in
        ``refs``. An unreadable one is noted in ``self.unreadable``. Returns the versions."""
        try:
            found = versions(read(name, holders), name)
        except ManifestError as exc:
            log.debug("%s unreadable: %s", name, exc)
            if isinstance(exc, RefusedBlob):
                self.refused.add(name)
                self.unreadable[name] = f"refused: {exc}"
            else:
                self.unreadable[name] = f"listed by {', '.join(holders)}: {exc}"
            return 0
        for manifest, _ in found:
            for ref in manifest.chunks:
                refs.setdefault(ref.id, ref)
        self.catalog.add_versions([row for _, row in found])
        return len(found)

    def _listings(
        self, prefix: str, what: str
    ) -> list[tuple[PlacedPeer, list[tuple[str, int]] | None]]:
        def listing(placed: PlacedPeer) -> list[tuple[str, int]] | None:
            try:
                return [(i.key, i.size) for i in placed.peer.list(prefix)]
            except PeerError as exc:
                log.warning("cannot list %s on %s: %s", what, placed.name, exc.message)
                self.unlisted.append(placed.name)
                return None

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            return list(zip(self.peers, pool.map(listing, self.peers), strict=True))

    def _sync_replicas(self, refs: dict[str, ChunkRef]) -> bool:
        listings = self._listings(chunks_prefix(self.config.vault.id), "chunks")
        pieces = forms.group(self.config.vault.id, _entries(listings), "chunk")
        for chunk_id, by_form in pieces.items():
            known = self.catalog.chunk(chunk_id)
            ref = refs.get(chunk_id)
            if known is None and (ref is None or ref.pack is not None):
                continue  # not referenced as an object by any version we know: gc's
            held = forms.pick(chunk_id, by_form, _own(known))
            if known is None:
                assert ref is not None
                wrapped = ref.wrapped_dek
                known = ChunkRow(
                    chunk_id, ref.size, held.object_size, wrapped, wrapped_generation(wrapped),
                    "", scheme=held.form,
                )  # fmt: skip
            elif known.scheme != held.form:  # learnt from a listing before: as peers say now
                known = replace(known, stored_size=held.object_size, scheme=held.form)
            for piece in held.pieces:
                shares = None if piece.key.share is None else {piece.peer: piece.key.share}
                self.catalog.record_chunk(known, [piece.peer], shares)
            if held.others:
                self.catalog.forget_replicas(chunk_id, held.others)
        return all(objects is not None for _, objects in listings)

    def _sync_packs(self, refs: dict[str, ChunkRef]) -> bool:
        """Packs on each peer, with the chunks the known versions place in them."""
        by_pack: dict[str, list[ChunkRow]] = {}
        for ref in refs.values():
            if ref.pack is not None:
                by_pack.setdefault(ref.pack, []).append(
                    ChunkRow(ref.id, ref.size, ref.length, ref.wrapped_dek,
                             wrapped_generation(ref.wrapped_dek), "", pack=ref.pack,
                             pack_offset=ref.offset)
                )  # fmt: skip
        if not by_pack and self.catalog.pack_count() == 0:
            return True  # nothing packed known: no listing needed (older vaults)
        listings = self._listings(packs_prefix(self.config.vault.id), "packs")
        pieces = forms.group(self.config.vault.id, _entries(listings), "pack")
        for pack_id, by_form in pieces.items():
            rows = by_pack.get(pack_id)
            known = self.catalog.pack(pack_id)
            if rows is None and known is None:
                continue  # no version we know uses it: gc's business
            held = forms.pick(pack_id, by_form, _own(known))
            if known is None or known.scheme != held.form:  # (as for chunk objects)
                known = PackRow(pack_id, held.object_size, "", held.form)
            for piece in held.pieces:
                shares = None if piece.key.share is None else {piece.peer: piece.key.share}
                self.catalog.record_pack(known, rows or [], [piece.peer], shares)
            if held.others:
                self.catalog.forget_pack_replicas(pack_id, held.others)
        return all(objects is not None for _, objects in listings)


def _entries(
    listings: list[tuple[PlacedPeer, list[tuple[str, int]] | None]],
) -> Iterator[tuple[str, str, int]]:
    """(peer, key, size) of every listed object."""
    for placed, objects in listings:
        for key, size in objects or []:
            yield placed.name, key, size


def _own(row: ChunkRow | PackRow | None) -> forms.Form | forms.Unset:
    """The form this machine wrote an object in (its row holds the SHA-256 of that
    write); unset for a row learnt from a listing."""
    return row.scheme if row is not None and row.sha256 else forms.UNSET
