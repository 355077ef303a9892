"""An open vault: unlocked keys, peers, catalog, and the services built on them.

Commands that touch data (push, ls, restore, run) open one of these. On a machine whose
catalog is new (fresh install, deleted state dir) it is first rebuilt from the manifests
and chunk listings on the peers, so the peers alone are enough.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chunkvault.backends.base import NotFound, PeerError
from chunkvault.catalog import Catalog, ChunkRow, VersionRow
from chunkvault.config import Config
from chunkvault.crypto.envelope import wrapped_generation
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.flows import FlowRules
from chunkvault.layout import LayoutError, chunk_id_from_key, chunks_prefix
from chunkvault.manifest import Manifest, ManifestError, ManifestStore, new_manifest_name
from chunkvault.peerset import PlacedPeer
from chunkvault.reading import ChunkReader
from chunkvault.staging import Staging
from chunkvault.upload import UploadService
from chunkvault.writerlock import LOCK_NAME

log = logging.getLogger(__name__)
CATALOG_NAME = "catalog.db"
SYNCED = "synced_from_peers"
GENERATION_FLOOR = "max_key_generation"
# Catalog meta key prefix of a manifest being written (see Vault.commit).
PENDING = "pending_manifest:"


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


def version_row(manifest: Manifest, name: str, inode: int | None = None) -> VersionRow:
    """The catalog's row for a manifest stored under ``name``."""
    return VersionRow(
        path=manifest.path,
        manifest=name,
        size=manifest.size,
        mtime_ns=manifest.mtime_ns,
        mode=manifest.mode,
        sha256=manifest.sha256,
        deleted=manifest.deleted,
        created_ns=manifest.created_ns,
        chunk_count=len(manifest.chunks),
        inode=inode,
    )


class Vault:
    def __init__(self, config: Config, peers: Sequence[PlacedPeer], keys: MasterKeys) -> None:
        self.config = config
        self.peers = list(peers)
        self.keys = keys
        state = config.vault.state_dir
        self.catalog = Catalog(state / CATALOG_NAME)
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
        # Manifests the last sync could not read (name -> why): their files are missing
        # from the catalog, so `ls` and `restore` must fail naming them.
        self.unreadable: dict[str, str] = {}
        self.unlisted: list[str] = []
        self.staging = Staging.from_config(state / "staging", config.api)
        self.service = UploadService(config, self.peers, keys, self.catalog, self.staging)
        self.manifests = ManifestStore(
            config.vault.id,
            keys,
            self.peers,
            config.replication.replicas,
            config.replication.min_replicas,
        )
        largest_chunk = max(config.chunking.max_size, config.api.max_chunk_bytes)
        self.reader = ChunkReader(config.vault.id, self.peers, keys, self.catalog, largest_chunk)
        self.rules = FlowRules(config)

    def close(self) -> None:
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

    # --- committing a version exactly once -------------------------------------------------

    def commit(self, manifest: Manifest, inode: int | None = None) -> str:
        """Store ``manifest`` on the peers and add it to the catalog, exactly once even if
        the process is killed at any line: its name is recorded as pending first, so a
        manifest that reached a peer but not the catalog is found by
        :meth:`recover_pending` at the next open instead of being written again as a
        second version of the same content. Raises ManifestError if under min_replicas."""
        name = new_manifest_name(self.config.vault.id, self.keys, manifest)
        self.catalog.set_meta(PENDING + name, "1")
        try:
            self.manifests.write(manifest, name)
        except ManifestError:
            # Take back the copies that were written: no stray version of a failed commit.
            try:
                self.manifests.delete(name)
            except ManifestError as exc:
                log.warning("%s stays pending: %s", name, exc)
            else:
                self._clear_pending(name)
            raise
        self.catalog.add_version(version_row(manifest, name, inode))
        self._clear_pending(name)
        return name

    def _clear_pending(self, name: str) -> None:
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (PENDING + name,))

    def pending(self) -> list[str]:
        """Manifest names whose commit was cut short (by a kill or a failed delete)."""
        rows = self.catalog.query(
            "SELECT key FROM meta WHERE substr(key, 1, ?) = ?", (len(PENDING), PENDING)
        )
        return sorted(str(key)[len(PENDING) :] for (key,) in rows)

    def recover_pending(self) -> int:
        """Finish or drop every commit a kill cut short; returns the versions added. A
        manifest found on a peer is complete (it is written only after all its chunks are
        durable): it is brought to R copies under the same name and added to the catalog.
        One on no peer was never written: forgotten, so its file is stored again. One that
        cannot be told (a peer is down) stays pending for the next open. Only a writer
        (holding the writer lock) may call it: a pending name may be a commit in flight."""
        added = 0
        for name in self.pending():
            if self.catalog.has_manifest(name):
                self._clear_pending(name)
                continue
            try:
                manifest = self.manifests.read(name)
            except ManifestError as exc:
                if self._absent_everywhere(name):
                    self._clear_pending(name)
                else:
                    log.warning("an interrupted commit (%s) stays pending: %s", name, exc)
                continue
            try:
                self.manifests.write(manifest, name)
            except ManifestError as exc:
                log.warning("an interrupted commit (%s) stays pending: %s", name, exc)
                continue
            self.catalog.add_version(version_row(manifest, name))
            self._clear_pending(name)
            added += 1
        if added:
            log.info("%d interrupted commit(s) completed", added)
        return added

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
        """Add every manifest and chunk replica the peers hold that the catalog lacks.
        Returns the number of versions added. Marks the catalog synced only when every
        peer could be listed and every manifest read."""
        deks: dict[str, tuple[int, bytes]] = {}
        added = 0
        self.unreadable = {}
        unlisted: list[str] = []
        names = list(self.manifests.names(unlisted))
        complete = not unlisted
        for name, holders in names:
            if self.catalog.has_manifest(name):
                continue
            try:
                manifest = self.manifests.read(name, holders)
            except ManifestError as exc:
                log.debug("manifest %s unreadable: %s", name, exc)
                self.unreadable[name] = f"listed by {', '.join(holders)}: {exc}"
                complete = False
                continue
            for ref in manifest.chunks:
                deks.setdefault(ref.id, (ref.size, ref.wrapped_dek))
            self.catalog.add_version(version_row(manifest, name))
            added += 1
        complete &= self._sync_replicas(deks)
        self.unlisted = sorted(set(unlisted) | set(self.unlisted))
        if self.unreadable:
            log.warning("%d stored version(s) could not be read (see `chunkvault ls`)",
                        len(self.unreadable))  # fmt: skip
        if complete:
            self.catalog.set_meta(SYNCED, "1")
        return added

    def _sync_replicas(self, deks: dict[str, tuple[int, bytes]]) -> bool:
        prefix = chunks_prefix(self.config.vault.id)

        def listing(placed: PlacedPeer) -> list[tuple[str, int]] | None:
            try:
                return [(i.key, i.size) for i in placed.peer.list(prefix)]
            except PeerError as exc:
                log.warning("cannot list chunks on %s: %s", placed.name, exc.message)
                self.unlisted.append(placed.name)
                return None

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            listings = list(pool.map(listing, self.peers))
        for placed, objects in zip(self.peers, listings, strict=True):
            for key, size in objects or []:
                try:
                    chunk_id = chunk_id_from_key(self.config.vault.id, key)
                except LayoutError:
                    continue
                known = self.catalog.chunk(chunk_id)
                if known is None and chunk_id not in deks:
                    continue  # not referenced by any manifest we know: gc's business
                if known is None:
                    plain, wrapped = deks[chunk_id]
                    row = ChunkRow(chunk_id, plain, size, wrapped, wrapped_generation(wrapped), "")
                else:
                    row = known
                self.catalog.record_chunk(row, [placed.name])
        return all(objects is not None for objects in listings)
