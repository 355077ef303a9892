"""An open vault: unlocked keys, peers, catalog, and the services built on them.

Commands that touch data (push, ls, restore, run) open one of these. On a machine whose
catalog is new (fresh install, deleted state dir) it is first rebuilt from the manifests
and chunk listings on the peers, so the peers alone are enough.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from chunkvault.backends.base import PeerError
from chunkvault.catalog import Catalog, ChunkRow, VersionRow
from chunkvault.config import Config
from chunkvault.crypto.envelope import wrapped_generation
from chunkvault.crypto.material import MasterKeys
from chunkvault.flows import FlowRules
from chunkvault.layout import LayoutError, chunk_id_from_key, chunks_prefix
from chunkvault.manifest import Manifest, ManifestError, ManifestStore
from chunkvault.peerset import PlacedPeer
from chunkvault.reading import ChunkReader
from chunkvault.staging import Staging
from chunkvault.upload import UploadService

log = logging.getLogger(__name__)
SYNCED = "synced_from_peers"


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
        self.catalog = Catalog(state / "catalog.db")
        self.staging = Staging(state / "staging")
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

    # --- rebuilding the catalog from the peers ---------------------------------------------

    def ensure_synced(self) -> None:
        if self.catalog.get_meta(SYNCED) is None:
            added = self.sync_from_peers()
            log.info("catalog rebuilt from peers: %d version(s)", added)

    def sync_from_peers(self) -> int:
        """Add every manifest and chunk replica the peers hold that the catalog lacks.
        Returns the number of versions added. Marks the catalog synced only when every
        peer could be listed and every manifest read."""
        complete = True
        deks: dict[str, tuple[int, bytes]] = {}
        added = 0
        names = list(self.manifests.names())
        for name, _holders in names:
            if self.catalog.has_manifest(name):
                continue
            try:
                manifest = self.manifests.read(name)
            except ManifestError as exc:
                log.warning("manifest %s unreadable: %s", name, exc)
                complete = False
                continue
            for ref in manifest.chunks:
                deks.setdefault(ref.id, (ref.size, ref.wrapped_dek))
            self.catalog.add_version(version_row(manifest, name))
            added += 1
        complete &= self._sync_replicas(deks)
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
