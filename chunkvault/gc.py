"""`chunkvault gc`: delete what no kept version references (docs/usage.md, "Free space").

Mark, then sweep; the writer lock is held throughout, so no push, agent or API upload on
this machine runs beside it (a version committed meanwhile could deduplicate against a
chunk being deleted). :meth:`Collector.plan` only reads:

1. every version the peers hold is added to the catalog first (another machine's, or one
   this catalog lost), and gc refuses to go on unless every peer was listed and every
   manifest batch read: a version it did not see could need anything;
2. :mod:`chunkvault.retention` picks the versions to drop; every kept version's manifest
   is read: what they reference is live;
3. :mod:`chunkvault.garbage` compares that with the peers' listings.

:meth:`Collector.sweep` then changes things in an order where a kill at any point loses
nothing and a rerun finishes the job:

1. repack: the live chunks of each pack being repacked are read and verified, written as
   a new pack on R peers, and the catalog moved to it (the old pack still holds them);
2. the dropped versions leave the catalog; each manifest batch holding one of them, or a
   chunk that moved, is rewritten on its holders (deleted once empty); per-file manifests
   of dropped versions are deleted;
3. what is about to be deleted is written to the catalog as condemned, and its chunks leave
   the catalog (nothing later deduplicates against them);
4. the objects are deleted from every peer listing them; the condemned list is cleared.

A kill before 2 leaves an orphan new pack (deleted by a later gc after the grace period);
one in 2 leaves batches a rerun rewrites (their stale entries are dropped: the catalog
no longer has them); one in 4 leaves condemned objects the next gc deletes first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from chunkvault import garbage, retention
from chunkvault.backends.base import NotFound, ObjectInfo, PeerError
from chunkvault.catalog import ChunkRow, PackRow, VersionRow
from chunkvault.check import PACK_LIMIT
from chunkvault.crypto.envelope import EnvelopeError, open_chunk, wrapped_generation
from chunkvault.crypto.vault_seal import is_sealed_dek
from chunkvault.erasure import HEADER_SIZE, Scheme
from chunkvault.errors import ChunkvaultError
from chunkvault.garbage import Listed, Repack
from chunkvault.journal import BatchEntry
from chunkvault.layout import (
    DataKey,
    LayoutError,
    chunk_key,
    chunks_prefix,
    pack_key,
    pack_metadata,
    packs_prefix,
    parse_data_key,
    sealed_object,
    share_key,
)
from chunkvault.manifest import ChunkRef, Manifest, ManifestError
from chunkvault.packs import HEADER, new_pack_id
from chunkvault.packs import VERSION as PACK_VERSION
from chunkvault.peerset import PlacedPeer
from chunkvault.shares import Coded, ObjectUnreadable
from chunkvault.vault import Vault

log = logging.getLogger(__name__)
CONDEMNED = "gc_condemned"
HOUR = 3600.0


class GcError(ChunkvaultError):
    pass


@dataclass
class GcPlan:
    drop: list[VersionRow]
    # Batches to rewrite: name -> the entry names the catalog no longer keeps (empty:
    # only a chunk in a pack being repacked moves).
    batches: dict[str, set[str]]
    # Of those, the packs being repacked that each one places chunks in: a pack is
    # deleted only once every batch that places a chunk in it was rewritten.
    batch_packs: dict[str, set[str]]
    manifests: list[str]  # per-file manifest objects of dropped versions
    objects: garbage.Plan
    versions_kept: int
    stored_bytes: int  # every copy of every chunk object and pack, before
    replicas: int
    # Batches of writers the keyring does not trust (revoked before the date they give):
    # no version of theirs is read, so they are deleted.
    refused: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return self.objects.freed_bytes(self.replicas)


@dataclass
class GcReport:
    versions_dropped: int = 0
    batches_rewritten: int = 0
    objects_deleted: int = 0
    packs_repacked: int = 0
    refused_deleted: int = 0
    bytes_freed: int = 0
    problems: list[str] = field(default_factory=list)


class Collector:
    def __init__(self, vault: Vault, now: float | None = None) -> None:
        self.vault = vault
        self.config = vault.config
        self.now = time.time() if now is None else now
        policy = self.config.retention
        self.policy = retention.Policy(policy.deleted_days, policy.versions)
        self._by_name = {p.name: p for p in vault.peers}

    # --- mark ------------------------------------------------------------------------------

    def plan(self, sync: bool = True) -> GcPlan:
        """What a sweep would do (reads only, but ``sync`` adds the peers' versions to the
        catalog). GcError if a peer cannot be listed or a manifest read."""
        if sync:
            self.vault.sync_from_peers()
            trouble = [f"peer {n} cannot be listed" for n in self.vault.unlisted]
            trouble += [f"{n} cannot be read ({why})" for n, why in self.vault.unreadable.items()
                        if n not in self.vault.refused]  # fmt: skip
            if trouble:
                raise GcError(
                    "gc deletes only what no version needs, and cannot tell: "
                    + "; ".join(trouble[:5]),
                    "bring the peer back (or drain and remove it), then run gc again",
                )
        versions = self.vault.catalog.all_versions()
        drop = retention.expired(versions, self.policy, int(self.now * 1e9))
        dropped_names = {v.manifest for v in drop}
        live: list[ChunkRef] = []
        dead: list[ChunkRef] = []
        batches: dict[str, set[str]] = {}
        packs_of: dict[str, set[str]] = {}  # batch -> packs its kept entries use
        by_batch: dict[str, set[str]] = {}
        manifests: list[str] = []
        for version in versions:
            if version.batch is not None:
                by_batch.setdefault(version.batch, set()).add(version.manifest)
                continue
            try:
                manifest = self.vault.manifests.read(version.manifest)
            except ManifestError as exc:
                raise self._unreadable(version.manifest, exc) from None
            if version.manifest in dropped_names:
                manifests.append(version.manifest)
                dead.extend(manifest.chunks)
            else:
                live.extend(manifest.chunks)
        for name, known in sorted(by_batch.items()):
            try:
                entries = self.vault.journal.read(name)
            except ManifestError as exc:
                raise self._unreadable(name, exc) from None
            for entry in entries:
                # An entry the catalog does not have was dropped by an earlier gc (or a
                # purge) whose rewrite of this batch was cut short.
                if entry.name in known and entry.name not in dropped_names:
                    live.extend(entry.manifest.chunks)
                    packs_of.setdefault(name, set()).update(
                        c.pack for c in entry.manifest.chunks if c.pack is not None
                    )
                else:
                    dead.extend(entry.manifest.chunks)
                    batches.setdefault(name, set()).add(entry.name)
        live.extend(self._api_chunks())
        chunks, packs = self._listings()
        condemned = self._condemned()
        objects = garbage.plan(
            live, dead, chunks, packs, self.config.retention.repack_threshold,
            self.now - self.config.retention.grace_hours * HOUR, condemned, self._ours(),
        )  # fmt: skip
        sealed = {("chunk", r.id) if r.pack is None else ("pack", r.pack)
                  for r in (*live, *dead) if is_sealed_dek(r.wrapped_dek)}  # fmt: skip
        objects.spare(lambda key, listed: key in sealed or self._stored_by_writer(key, listed))
        repacked = {r.pack for r in objects.repack}
        batch_packs = {}
        for name, used in packs_of.items():
            if used & repacked:
                batch_packs[name] = used & repacked
                batches.setdefault(name, set())
        stored = sum(x.copies_bytes() for x in (*chunks.values(), *packs.values()))
        return GcPlan(drop, batches, batch_packs, manifests, objects, len(versions) - len(drop),
                      stored, self.config.replication.replicas,
                      sorted(self.vault.refused))  # fmt: skip

    def _api_chunks(self) -> list[ChunkRef]:
        """The chunks of ``POST /upload``: no file version names them, the API's map in
        the catalog does (``GET /chunks/{id}`` reads them back): live, like a version's."""
        catalog = self.vault.catalog
        refs = []
        for (chunk_id,) in catalog.query("SELECT DISTINCT chunk_id FROM api_chunks"):
            row = catalog.chunk(chunk_id)
            if row is None:
                continue
            if row.pack is None:
                refs.append(ChunkRef(row.id, row.plain_size, row.wrapped_dek))
            else:
                refs.append(ChunkRef(row.id, row.plain_size, row.wrapped_dek, row.pack,
                                     row.pack_offset, row.stored_size))  # fmt: skip
        return refs

    @staticmethod
    def _unreadable(name: str, exc: ManifestError) -> GcError:
        return GcError(
            f"gc cannot read {name}: {exc}",
            "`chunkvault check` names what is damaged; `chunkvault repair` heals it",
        )

    def _listings(self) -> tuple[dict[str, Listed], dict[str, Listed]]:
        vault_id = self.config.vault.id

        def listing(placed: PlacedPeer) -> tuple[list[tuple[DataKey, ObjectInfo]], ...]:
            found: tuple[list[tuple[DataKey, ObjectInfo]], ...] = ([], [])
            for i, prefix in enumerate((chunks_prefix(vault_id), packs_prefix(vault_id))):
                for info in placed.peer.list(prefix):
                    try:
                        key = parse_data_key(vault_id, info.key)
                    except LayoutError:
                        continue  # not ours
                    if key.kind == ("chunk", "pack")[i]:
                        found[i].append((key, info))
            return found

        chunks: dict[str, Listed] = {}
        packs: dict[str, Listed] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(self.vault.peers))) as pool:
            futures = [(p, pool.submit(listing, p)) for p in self.vault.peers]
            for placed, future in futures:
                try:
                    found = future.result()
                except PeerError as exc:
                    raise GcError(f"gc cannot list peer {placed.name}: {exc.message}",
                                  "bring it back, then run gc again") from None  # fmt: skip
                for into, items in zip((chunks, packs), found, strict=True):
                    for key, info in items:
                        listed = into.setdefault(key.id, Listed())
                        listed.size = max(listed.size, info.size)
                        listed.holders[placed.name] = info.modified
                        listed.keys.setdefault(placed.name, []).append(info.key)
                        if key.scheme is not None and key.share is not None:
                            listed.scheme = str(key.scheme)
                            listed.shares[placed.name] = key.share
        return chunks, packs

    def _stored_by_writer(self, key: tuple[str, str], listed: Listed) -> bool:
        """Whether the object's metadata says a write-only host stored it (asked of its
        holders in turn; True if none answers: when in doubt, nothing is deleted). Never
        asked in a vault that never issued a writer credential: no request per object."""
        if not self.vault.keys.writers:
            return False
        for holder in listed.holders:
            placed = self._by_name.get(holder)
            if placed is None or not listed.keys.get(holder):
                continue
            try:
                return sealed_object(placed.peer.stat(listed.keys[holder][0]).metadata)
            except NotFound:
                continue
            except PeerError:
                return True
        return False  # on no peer any more: nothing to spare

    def _ours(self) -> list[tuple[str, str]]:
        """The chunk objects and packs this machine's catalog records (written here)."""
        query = self.vault.catalog.query
        return [("chunk", r[0]) for r in query("SELECT id FROM chunks WHERE pack IS NULL")] + [
            ("pack", r[0]) for r in query("SELECT id FROM packs")
        ]

    def _condemned(self) -> list[tuple[str, str]]:
        text = self.vault.catalog.get_meta(CONDEMNED)
        if not text:
            return []
        try:
            return [(str(kind), str(name)) for kind, name in json.loads(text)]
        except (ValueError, TypeError):
            return []  # (our own record; if it is broken, grace still protects uploads)

    # --- sweep -----------------------------------------------------------------------------

    def sweep(self, plan: GcPlan, progress: Callable[[int], None] | None = None) -> GcReport:
        """Carry ``plan`` out (see the module docstring); ``progress`` counts steps: one
        per pack repacked, batch rewritten and object deleted."""
        report = GcReport()
        moved: dict[tuple[str, str], ChunkRef] = {}  # (old pack, chunk id) -> new place
        repacked: list[str] = []
        for repack in plan.objects.repack:
            try:
                moved.update(self._repack(repack))
                repacked.append(repack.pack)
                report.packs_repacked += 1
            except (ChunkvaultError, PeerError) as exc:
                report.problems.append(f"pack {repack.pack[:16]} not repacked: {exc}")
            if progress:
                progress(1)
        self.vault.catalog.remove_versions_named([v.manifest for v in plan.drop])
        report.versions_dropped = len(plan.drop)
        for name, gone in sorted(plan.batches.items()):
            try:
                self._rewrite_batch(name, gone, moved)
                report.batches_rewritten += 1
            except ManifestError as exc:
                # Its entries still place chunks in the old packs: those stay.
                report.problems.append(str(exc))
                repacked = [p for p in repacked if p not in plan.batch_packs.get(name, ())]
            if progress:
                progress(1)
        for name in plan.manifests:
            try:
                self.vault.manifests.delete(name)
            except ManifestError as exc:
                report.problems.append(str(exc))
        for name in plan.refused:
            try:
                self.vault.journal.delete(name)
                report.refused_deleted += 1
            except ManifestError as exc:
                report.problems.append(str(exc))
        doomed = dict(plan.objects.delete)
        for repack in plan.objects.repack:
            if repack.pack in repacked:
                doomed[("pack", repack.pack)] = repack.listed
        self._condemn(doomed)
        freed = 0
        for (kind, name), listed in sorted(doomed.items()):
            failed = self._delete(kind, name, listed)
            if failed:
                report.problems.append(
                    f"{kind} {name[:16]}: cannot delete from {', '.join(failed)} (the next gc will)"
                )
            else:
                report.objects_deleted += 1
            freed += listed.size * (len(listed.holders) - len(failed))
            if progress:
                progress(1)
        if not report.problems:
            self.vault.catalog.set_meta(CONDEMNED, "")
        report.bytes_freed = freed - sum(
            r.new_size * r.copies(plan.replicas) for r in plan.objects.repack if r.pack in repacked
        )
        return report

    @staticmethod
    def steps(plan: GcPlan) -> int:
        """What :meth:`sweep` counts: packs repacked (and then deleted), batches, objects."""
        return 2 * len(plan.objects.repack) + len(plan.batches) + len(plan.objects.delete)

    def _repack(self, repack: Repack) -> dict[tuple[str, str], ChunkRef]:
        """Copy the live chunks of one pack into a new pack (verified on the way), record
        it; the old pack is untouched. Returns where each chunk moved."""
        body = self._read_pack(repack)
        new_id = new_pack_id()
        out = bytearray(HEADER)
        places: dict[tuple[str, str], ChunkRef] = {}
        for ref in repack.live:
            offset = len(out)
            out += body[ref.offset : ref.offset + ref.length]
            places[(repack.pack, ref.id)] = replace(ref, pack=new_id, offset=offset)
        sha256 = hashlib.sha256(out).hexdigest()
        # The new pack is stored as the old one was: shares (in the scheme set now) or
        # as many copies.
        scheme = self.vault.service.scheme if repack.listed.scheme is not None else None
        losses = self.config.replication.min_replicas - 1
        if scheme is not None:
            target, minimum = scheme.width, scheme.required(losses)
        else:
            target = repack.copies(self.config.replication.replicas)
            minimum = min(losses + 1, target)
        new_key = pack_key(self.config.vault.id, new_id)
        result = self.vault.service.write_replicas(
            new_key, new_id, out, pack_metadata(PACK_VERSION, sha256), target, scheme
        )
        written, errors = result.peers, result.errors
        if len(written) < minimum:
            keys = {p: [share_key(new_key, scheme, i)] for p, i in (result.shares or {}).items()}
            self._delete("pack", new_id, Listed(len(out), dict.fromkeys(written), keys))
            raise GcError(f"the new pack could not be stored: {'; '.join(errors)}")
        rows = [
            ChunkRow(r.id, r.size, r.length, r.wrapped_dek, wrapped_generation(r.wrapped_dek), "",
                     pack=new_id, pack_offset=r.offset)
            for r in places.values()
        ]  # fmt: skip
        form = None if scheme is None else str(scheme)
        self.vault.catalog.relocate_chunks(
            rows, written, PackRow(new_id, len(out), sha256, form), result.shares
        )
        return places

    def _read_pack(self, repack: Repack) -> bytes:
        """The old pack from a holder whose copy of every live chunk opens."""
        problems = []
        end = max(r.offset + r.length for r in repack.live)
        if repack.listed.scheme is not None:
            return self._rebuild_pack(repack)
        for peer_name in sorted(repack.listed.holders):
            peer = self._by_name[peer_name].peer
            try:
                body = peer.get(pack_key(self.config.vault.id, repack.pack),
                                max_size=min(PACK_LIMIT, max(end, repack.listed.size)))  # fmt: skip
                for ref in repack.live:
                    open_chunk(self.vault.keys, ref.id, body[ref.offset : ref.offset + ref.length],
                               ref.wrapped_dek, max_size=ref.size)  # fmt: skip
                return body
            except (PeerError, EnvelopeError) as exc:
                problems.append(f"{peer_name}: {getattr(exc, 'message', None) or exc}")
        raise GcError(f"no good copy to repack from ({'; '.join(problems)})")

    def _rebuild_pack(self, repack: Repack) -> bytes:
        """An erasure-coded pack rebuilt from its shares; every live chunk in it opens."""
        listed = repack.listed
        assert listed.scheme is not None
        scheme = Scheme.parse(listed.scheme)
        key = pack_key(self.config.vault.id, repack.pack)
        size = max(0, listed.size - HEADER_SIZE) * scheme.data  # (its padded size)
        try:
            body = self.vault.reader.shares.read_object(
                Coded(key, repack.pack, scheme, listed.shares, min(PACK_LIMIT, size))
            )
            for ref in repack.live:
                open_chunk(self.vault.keys, ref.id, body[ref.offset : ref.offset + ref.length],
                           ref.wrapped_dek, max_size=ref.size)  # fmt: skip
        except (ObjectUnreadable, EnvelopeError) as exc:
            raise GcError(f"its shares do not rebuild it: {exc}") from None
        return body

    def _rewrite_batch(
        self, name: str, gone: set[str], moved: dict[tuple[str, str], ChunkRef]
    ) -> None:
        entries = self.vault.journal.read(name)
        kept = []
        for entry in entries:
            if entry.name in gone:
                continue
            chunks = tuple(
                moved.get((c.pack, c.id), c) if c.pack is not None else c
                for c in entry.manifest.chunks
            )
            manifest: Manifest = replace(entry.manifest, chunks=chunks)
            kept.append(BatchEntry(entry.name, manifest))
        holders = self.vault.holders(name)
        if kept:
            self.vault.journal.rewrite(name, kept, holders)
        else:
            self.vault.journal.delete(name)
        self.vault.forget_batch(name)

    def _condemn(self, doomed: dict[tuple[str, str], Listed]) -> None:
        """Recorded before anything is deleted; their chunks leave the catalog."""
        self.vault.catalog.set_meta(CONDEMNED, json.dumps(sorted(doomed)))
        self.vault.catalog.forget_objects(
            [n for k, n in doomed if k == "chunk"], [n for k, n in doomed if k == "pack"]
        )

    def _delete(self, kind: str, name: str, listed: Listed) -> list[str]:
        """Delete every copy and share ``listed`` names; the peers that failed."""
        vault_id = self.config.vault.id
        whole = chunk_key(vault_id, name) if kind == "chunk" else pack_key(vault_id, name)
        failed = []
        for peer_name in sorted(listed.holders):
            placed = self._by_name.get(peer_name)
            if placed is None:
                failed.append(peer_name)
                continue
            for key in listed.keys.get(peer_name, [whole]):
                try:
                    placed.peer.delete(key)
                except PeerError as exc:
                    log.warning("gc: cannot delete %s from %s: %s", key, peer_name, exc.message)
                    failed.append(peer_name)
                    break
        return failed
