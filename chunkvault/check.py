"""`chunkvault check`: is everything the catalog's versions need on the peers, R times, and
(``--read-data``) does every copy still authenticate? Read-only: it takes no lock and
writes nothing, to the peers or the catalog. :mod:`chunkvault.integrity` draws the
conclusions.

Structure (always):

- every peer is listed (chunk objects, packs, manifest batches and manifests);
- every version in the catalog is read from its batch or manifest object: one that no
  holder serves readable is a problem naming its files;
- each object those versions need (their batch or manifest, their chunk objects and packs)
  is compared with the listings and with the replicas the catalog records
  (:func:`integrity.placement_problems`);
- the keyring on every peer: present, of this vault, and the revision this machine holds.

Data (``--read-data``, or ``--read-data-subset N%`` for a sample that changes from run to
run): every copy of every chunk object, pack, batch and manifest is downloaded from each
peer that holds it and opened: a chunk object's AES-GCM tag and content id, a pack's
SHA-256 (where the catalog knows it) and every packed chunk's tag and id, a batch's or
manifest's seal. Downloads run ``transfer.concurrency`` at a time within
``transfer.max_inflight_bytes``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from chunkvault import forms
from chunkvault.backends.base import NotFound, Peer, PeerError
from chunkvault.budget import ByteBudget
from chunkvault.catalog import VersionRow
from chunkvault.config import PACK_MAX
from chunkvault.crypto.envelope import EnvelopeError, open_chunk, sealed_size_limit
from chunkvault.erasure import HEADER_SIZE, Scheme, judge, segment_size
from chunkvault.errors import ChunkvaultError
from chunkvault.integrity import Holdings, Problem, placement_problems, sampled
from chunkvault.keystore import KeyStore
from chunkvault.layout import (
    META_SHA256,
    LayoutError,
    chunk_key,
    chunks_prefix,
    pack_key,
    packs_prefix,
    parse_data_key,
    share_key,
)
from chunkvault.manifest import ChunkRef, ManifestError
from chunkvault.peerset import PlacedPeer
from chunkvault.vault import Vault

log = logging.getLogger(__name__)


class Unrebuildable(ChunkvaultError):
    """No ``k`` shares of an erasure-coded object rebuild it: ``bad`` holds the shares
    known to be wrong (holder -> why), ``size`` the bytes read."""

    def __init__(self, message: str, bad: dict[str, str], size: int) -> None:
        super().__init__(message)
        self.bad = bad
        self.size = size


#: Largest pack a peer may serve: the largest pack_size the config accepts, plus the one
#: chunk body that may go past it.
PACK_LIMIT = PACK_MAX + sealed_size_limit(PACK_MAX)


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    versions: int = 0
    objects: dict[str, int] = field(default_factory=dict)  # kind -> how many
    peers: int = 0
    copies_read: int = 0
    bytes_read: int = 0


@dataclass
class _Listing:
    chunks: dict[str, int] = field(default_factory=dict)  # chunk id -> size
    packs: dict[str, int] = field(default_factory=dict)
    # (kind, id) -> (scheme, index, size) of the share of it this peer holds
    shares: dict[tuple[str, str], tuple[Scheme, int, int]] = field(default_factory=dict)


class Checker:
    """One check of one vault (see the module docstring). ``read_fraction``: 0 checks the
    structure only, 1 reads every copy, in between a sample of the objects."""

    def __init__(self, vault: Vault, read_fraction: float = 0.0) -> None:
        self.vault = vault
        self._file_refs: list[tuple[str, ChunkRef]] = []  # (path, chunk) of every version
        # What the structure check found: every object the versions need, the chunks each
        # chunk object or pack serves; for the data check, the copies to read and their
        # bytes as listed (for a progress bar); what the data check found damaged.
        self.holdings: dict[tuple[str, str], Holdings] = {}
        self.listed: set[str] = set()  # the peers whose listings were read
        self.refs: dict[tuple[str, str], dict[str, ChunkRef]] = {}
        # (object, peer) for a whole copy; (object, None) for every share of one.
        self._copies: list[tuple[Holdings, Peer | None]] = []
        self.data_bytes = 0
        self.damaged: dict[tuple[str, str], set[str]] = {}  # object -> peers
        self.read_fraction = read_fraction
        self.replicas = vault.config.replication.replicas
        self.metadata_copies = vault.config.replication.metadata_copies
        self._seed = os.urandom(16)
        self._budget = ByteBudget(vault.config.transfer.max_inflight_bytes)

    def run(self) -> CheckReport:
        """The structure check, then (``read_fraction`` > 0) the data check."""
        report = self.structure()
        if self.read_fraction > 0:
            self.read_data(report)
        return report

    def structure(self) -> CheckReport:
        report = CheckReport(peers=len(self.vault.peers))
        # The versions first, then the listings: a version is committed only once what it
        # needs is durable, so everything these need was listed, even with the agent
        # storing more meanwhile (the other way round, new versions would look lost).
        versions = self.vault.catalog.all_versions()
        listings, unlisted = self._list_peers(report)
        names_unlisted: list[str] = []
        batches = dict(self.vault.journal.names(names_unlisted))
        manifests = dict(self.vault.manifests.names(names_unlisted))
        for name in sorted(set(names_unlisted) - unlisted):
            report.problems.append(Problem("peer", f"peer {name}", "cannot list its manifests"))
            unlisted.add(name)
        self.listed = listed = {p.name for p in self.vault.peers} - unlisted
        every_listed = not unlisted

        self.holdings = holdings = self._read_versions(report, versions, batches, manifests)
        self.refs = self._place_chunks(holdings, listings)
        self._record_catalog(holdings)
        for held in holdings.values():
            report.objects[held.kind] = report.objects.get(held.kind, 0) + 1
            target = self.metadata_copies if held.kind.startswith("manifest") else self.replicas
            report.problems += placement_problems(held, target, listed, every_listed)
        report.problems += self._keyring_problems()
        self._choose_copies(listings)
        return report

    # --- structure -------------------------------------------------------------------------

    def _list_peers(self, report: CheckReport) -> tuple[dict[str, _Listing], set[str]]:
        vault_id = self.vault.config.vault.id

        def listing(placed: PlacedPeer) -> _Listing | str:
            found = _Listing()
            try:
                for prefix in (chunks_prefix(vault_id), packs_prefix(vault_id)):
                    for info in placed.peer.list(prefix):
                        try:
                            key = parse_data_key(vault_id, info.key)
                        except LayoutError:
                            continue  # not ours: nothing to check
                        if key.scheme is not None and key.share is not None:
                            found.shares.setdefault(
                                (key.kind, key.id), (key.scheme, key.share, info.size)
                            )
                        else:
                            where = found.chunks if key.kind == "chunk" else found.packs
                            where[key.id] = info.size
            except PeerError as exc:
                return exc.message
            return found

        listings: dict[str, _Listing] = {}
        unlisted: set[str] = set()
        with ThreadPoolExecutor(max_workers=max(1, len(self.vault.peers))) as pool:
            for placed, found in zip(
                self.vault.peers, pool.map(listing, self.vault.peers), strict=True
            ):
                if isinstance(found, str):
                    report.problems.append(
                        Problem("peer", f"peer {placed.name}", f"cannot be listed: {found}")
                    )
                    unlisted.add(placed.name)
                else:
                    listings[placed.name] = found
        return listings, unlisted

    def _read_versions(
        self,
        report: CheckReport,
        versions: list[VersionRow],
        batches: dict[str, list[str]],
        manifests: dict[str, list[str]],
    ) -> dict[tuple[str, str], Holdings]:
        """Every catalog version read from its batch or manifest (its chunks go to
        :attr:`_file_refs`); the holdings of those batches and manifests."""
        holdings: dict[tuple[str, str], Holdings] = {}
        unreadable: dict[tuple[str, str], str] = {}
        for version in versions:
            report.versions += 1
            if version.batch is not None:
                key = ("manifest batch", version.batch)
                found_on = batches.get(version.batch, [])
            else:
                key = ("manifest", version.manifest)
                found_on = manifests.get(version.manifest, [])
            held = holdings.get(key)
            if held is None:
                held = holdings[key] = Holdings(key[0], key[1], found_on=set(found_on))
            held.files.add(version.path)
            if key in unreadable or not found_on:
                continue
            try:
                manifest = self.vault.read_version(version)
            except ManifestError as exc:
                unreadable[key] = str(exc)
                continue
            for ref in manifest.chunks:
                self._file_refs.append((version.path, ref))
        for key, why in unreadable.items():
            held = holdings[key]
            report.problems.append(
                Problem("unreadable", held.subject, why, tuple(sorted(held.files)))
            )
        return holdings

    def _place_chunks(
        self, holdings: dict[tuple[str, str], Holdings], listings: dict[str, _Listing]
    ) -> dict[tuple[str, str], dict[str, ChunkRef]]:
        """Add the chunk objects and packs the versions need to ``holdings``, with the
        listed peers holding each; returns, per object, the chunk refs it serves."""
        refs: dict[tuple[str, str], dict[str, ChunkRef]] = {}
        for path, ref in self._file_refs:
            if ref.pack is None:
                key, name = ("chunk", ref.id), ref.id
            else:
                key, name = ("pack", ref.pack), ref.pack
            held = holdings.get(key)
            if held is None:
                held = holdings[key] = Holdings(key[0], name)
                self._place(held, listings)
            held.files.add(path)
            refs.setdefault(key, {})[ref.id] = ref
        return refs

    def _place(self, held: Holdings, listings: dict[str, _Listing]) -> None:
        """Where the listings put one object, in the form that is read
        (:mod:`chunkvault.forms`: this machine's, else the one most peers list): the peers
        holding a copy, or each share's peer and index."""
        key = (held.kind, held.name)
        pieces: dict[forms.Form, list[str]] = {}
        schemes: dict[str, Scheme] = {}
        for peer, found in listings.items():
            if held.name in (found.chunks if held.kind == "chunk" else found.packs):
                pieces.setdefault(None, []).append(peer)
            share = found.shares.get(key)
            if share is not None:
                schemes[str(share[0])] = share[0]
                pieces.setdefault(str(share[0]), []).append(peer)
        if not pieces:
            return
        catalog = self.vault.catalog
        row = catalog.chunk(held.name) if held.kind == "chunk" else catalog.pack(held.name)
        own = row.scheme if row is not None and row.sha256 else forms.UNSET
        form = own if own in pieces else forms.dominant_form(pieces)
        held.found_on.update(pieces[form])
        if form is not None:
            held.scheme = schemes[form]
            held.shares = {peer: listings[peer].shares[key][1] for peer in pieces[form]}

    def _record_catalog(self, holdings: dict[tuple[str, str], Holdings]) -> None:
        """The replicas the catalog records, for the objects the versions need."""
        ok = " WHERE state = 'ok'"
        for chunk_id, peer in self.vault.catalog.query("SELECT chunk_id, peer FROM replicas" + ok):
            held = holdings.get(("chunk", chunk_id))
            if held is not None:
                held.recorded_on.add(peer)
        for pack_id, peer in self.vault.catalog.query(
            "SELECT pack_id, peer FROM pack_replicas" + ok
        ):
            held = holdings.get(("pack", pack_id))
            if held is not None:
                held.recorded_on.add(peer)

    def _keyring_problems(self) -> list[Problem]:
        store = KeyStore(
            self.vault.config.vault.state_dir,
            self.vault.config.vault.id,
            [p.peer for p in self.vault.peers],
        )
        local = store.load_local()
        problems = []
        for copy in store.peer_copies():
            subject = f"keyring on peer {copy.peer}"
            if copy.missing:
                problems.append(Problem("keyring", subject, "missing"))
            elif copy.ring is None:
                problems.append(Problem("keyring", subject, copy.error or "unreadable"))
            elif local is not None and copy.ring.revision < local.revision:
                problems.append(Problem("keyring", subject, f"revision {copy.ring.revision}, "
                                        f"this machine's is {local.revision}"))  # fmt: skip
        return problems

    # --- data ------------------------------------------------------------------------------

    def _choose_copies(self, listings: dict[str, _Listing]) -> None:
        if self.read_fraction <= 0:
            return
        by_name = {p.name: p.peer for p in self.vault.peers}
        for key, held in sorted(self.holdings.items()):
            if not sampled(f"{key[0]}/{key[1]}", self.read_fraction, self._seed):
                continue
            if held.scheme is not None:  # its shares read together: each judged by the rest
                self._copies.append((held, None))
                for peer in held.shares:
                    listing = listings.get(peer)
                    share = listing.shares.get(key) if listing is not None else None
                    self.data_bytes += share[2] if share is not None else 0
                continue
            for peer in sorted(held.found_on):
                self._copies.append((held, by_name[peer]))
                listing = listings.get(peer)
                if listing is not None and key[0] in ("chunk", "pack"):
                    where = listing.chunks if key[0] == "chunk" else listing.packs
                    self.data_bytes += min(where.get(key[1], 0), PACK_LIMIT)

    def read_data(self, report: CheckReport, progress: Callable[[int], None] | None = None) -> None:
        """Read and open the copies :meth:`structure` chose, ``transfer.concurrency`` at a
        time (``progress`` is told the bytes of each); a copy that does not open is a
        problem, and is kept in :attr:`damaged`."""
        workers = max(1, self.vault.config.transfer.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
            for (held, peer), (verdicts, size, whole) in zip(
                self._copies, pool.map(lambda c: self._read_copies(*c), self._copies),
                strict=True,
            ):  # fmt: skip
                report.copies_read += len(held.shares) if peer is None else 1
                report.bytes_read += size
                if whole is not None:
                    report.problems.append(Problem("unrebuildable", held.subject, whole,
                                                   tuple(sorted(held.files))))  # fmt: skip
                for name, why in sorted(verdicts.items()):
                    self.damaged.setdefault((held.kind, held.name), set()).add(name)
                    what = "copy" if peer is not None else f"share {held.shares.get(name)}"
                    report.problems.append(Problem("damaged", held.subject,
                                                   f"{what} on {name}: {why}",
                                                   tuple(sorted(held.files))))  # fmt: skip
                if progress:
                    progress(size)

    def _read_copies(
        self, held: Holdings, peer: Peer | None
    ) -> tuple[dict[str, str], int, str | None]:
        """The damaged copies among those read (peer -> why), the bytes read, and what is
        wrong with the object as a whole (None: nothing): the copy on ``peer``, or (None)
        every share of an erasure-coded object."""
        if peer is not None:
            why, size = self._read_copy(held, peer)
            return ({} if why is None else {peer.name: why}), size, None
        try:
            with self.rebuilt(held) as (_, bad, size):
                return bad, size, None
        except Unrebuildable as exc:
            return exc.bad, exc.size, exc.message

    def _read_copy(self, held: Holdings, peer: Peer) -> tuple[str | None, int]:
        """Why the copy on ``peer`` is bad (None if it is good), and the bytes read."""
        try:
            with self.verified(held, peer) as body:
                return None, len(body)
        except NotFound:
            return "listed but not served", 0
        except (PeerError, ChunkvaultError, EnvelopeError) as exc:
            return getattr(exc, "message", None) or str(exc), 0

    @contextmanager
    def rebuilt(self, held: Holdings) -> Iterator[tuple[bytearray, dict[str, str], int]]:
        """An erasure-coded object rebuilt from the shares the listed peers hold and
        verified as :meth:`verified` verifies a copy (within the byte budget while the
        block runs): (the object, the holders whose share is not what it encodes to with
        why, the bytes read). :class:`Unrebuildable` if no ``k`` shares rebuild it."""
        assert held.scheme is not None
        scheme = held.scheme
        refs = self.refs.get((held.kind, held.name), {})
        vault_id = self.vault.config.vault.id
        if held.kind == "chunk":
            ref = next(iter(refs.values()))
            limit = sealed_size_limit(ref.size)
            key = chunk_key(vault_id, held.name)
        else:
            limit = PACK_LIMIT
            key = pack_key(vault_id, held.name)
        cap = HEADER_SIZE + segment_size(limit, scheme.data)
        by_name = {p.name: p.peer for p in self.vault.peers}
        with self._budget.holding(cap * (2 * scheme.width + 1)):
            bodies: dict[str, bytes] = {}
            bad: dict[str, str] = {}
            for name, index in sorted(held.shares.items()):
                try:
                    bodies[name] = by_name[name].get(share_key(key, scheme, index), max_size=cap)
                except NotFound:
                    bad[name] = "listed but not served"
                except PeerError as exc:
                    bad[name] = exc.message
            size = sum(map(len, bodies.values()))
            body, judged = judge(bodies, held.shares, scheme,
                                 lambda b: self._opens(held, refs, b))  # fmt: skip
            bad.update(judged)
            if body is None:
                # Each share judged alone, then: against the SHA-256 in its own metadata.
                for name, share in bodies.items():
                    if name not in bad and not self._intact(by_name[name], key, scheme,
                                                            held.shares[name], share):  # fmt: skip
                        bad[name] = "its SHA-256 is not the one its metadata gives"
                raise Unrebuildable(
                    f"no {scheme.data} of its {len(held.shares)} shares found rebuild it "
                    f"({len(held.shares) - len(bad)} look intact alone)",
                    bad, size,
                )  # fmt: skip
            yield body, bad, size

    @staticmethod
    def _intact(peer: Peer, key: str, scheme: Scheme, index: int, share: bytes) -> bool:
        """Whether a share matches the SHA-256 its own metadata gives (all a share alone
        can be checked against; True when the peer cannot say)."""
        try:
            recorded = peer.stat(share_key(key, scheme, index)).metadata.get(META_SHA256)
        except PeerError:
            return True
        return recorded is None or hashlib.sha256(share).hexdigest() == recorded

    def _opens(self, held: Holdings, refs: dict[str, ChunkRef], body: bytearray) -> bool:
        """Whether a rebuilt object opens: a chunk's tag and id; a pack's recorded SHA-256
        (if known) and every chunk the manifests place in it."""
        try:
            if held.kind == "chunk":
                ref = next(iter(refs.values()))
                open_chunk(self.vault.keys, ref.id, body, ref.wrapped_dek, max_size=ref.size)
                return True
            known = self.vault.catalog.pack(held.name)
            if known and known.sha256 and hashlib.sha256(body).hexdigest() != known.sha256:
                return False
            for ref in refs.values():
                open_chunk(self.vault.keys, ref.id, body[ref.offset : ref.offset + ref.length],
                           ref.wrapped_dek, max_size=ref.size)  # fmt: skip
            return True
        except EnvelopeError:
            return False

    @contextmanager
    def verified(self, held: Holdings, peer: Peer) -> Iterator[bytes | memoryview]:
        """The copy of ``held`` on ``peer``, read (within the byte budget, given back when
        the block ends) and opened. Raises PeerError (NotFound for a copy that is gone),
        or ChunkvaultError / EnvelopeError for one that does not open."""
        if held.kind in ("manifest batch", "manifest"):
            store = self.vault.journal if held.kind == "manifest batch" else self.vault.manifests
            yield store.read_copy(held.name, peer)
            return
        refs = self.refs.get((held.kind, held.name), {})
        if held.kind == "chunk":
            ref = next(iter(refs.values()))
            limit = sealed_size_limit(ref.size)
            with self._budget.holding(limit):
                body = peer.get(chunk_key(self.vault.config.vault.id, ref.id), max_size=limit)
                open_chunk(self.vault.keys, ref.id, body, ref.wrapped_dek, max_size=ref.size)
                yield body
            return
        with self._pack_body(held, peer, refs) as body:
            yield body

    @contextmanager
    def _pack_body(
        self, held: Holdings, peer: Peer, refs: dict[str, ChunkRef]
    ) -> Iterator[bytes | memoryview]:
        """A pack written here is read whole and checked against the SHA-256 recorded then;
        any other (rebuilt catalog: its size came from a peer's listing, its SHA-256 is not
        known) up to the end of its last chunk, as the manifests place them. Then every
        chunk in it is opened."""
        end = max((r.offset + r.length for r in refs.values()), default=0)
        known = self.vault.catalog.pack(held.name)
        recorded = known.sha256 if known is not None else ""
        limit = known.stored_size if known is not None and recorded else end
        if limit > PACK_LIMIT or end > limit:
            raise ChunkvaultError(f"larger than any pack can be ({max(limit, end)} bytes)")
        key = pack_key(self.vault.config.vault.id, held.name)
        with self._budget.holding(limit):
            if recorded:
                body: bytes | memoryview = peer.get(key, max_size=limit)
            else:
                body = memoryview(bytearray(end))
                peer.get_range_into(key, body, 0, end)
            bad = []
            if recorded and hashlib.sha256(body).hexdigest() != recorded:
                bad.append("SHA-256 differs from the one recorded when it was written")
            for ref in refs.values():
                try:
                    open_chunk(self.vault.keys, ref.id,
                               bytes(body[ref.offset : ref.offset + ref.length]),
                               ref.wrapped_dek, max_size=ref.size)  # fmt: skip
                except EnvelopeError as exc:
                    bad.append(str(exc))
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise ChunkvaultError(f"{bad[0]}{more}")
            yield body
