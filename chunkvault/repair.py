"""`chunkvault repair`: every object the stored versions need back to R good copies, and
the keyring back on every peer.

It starts as ``check --read-data`` does (:class:`chunkvault.check.Checker`): every copy of
every chunk object, pack, manifest batch and manifest is read and opened. Then, for each
object with a damaged copy or fewer than R good ones, a good copy is read again (and
opened again: nothing unverified is ever copied) and written

- over each damaged copy, where it is (that peer was chosen for it);
- to the best-ranked peers (weighted rendezvous on the object's id or name, the best peer
  of each zone first, as writes choose; peers in their cool-off left out) that hold no
  good copy, until R peers do.

A chunk object's metadata is rebuilt from what was verified (its wrapped DEK from the
manifest, its nonce and SHA-256 from the body), never copied from a peer; a pack's is its
format version and SHA-256. The catalog records each new replica, and forgets the ones it
recorded on peers that no longer hold them. Nothing is deleted: a copy beyond R stays
(moving copies to where the ranking wants them is a peer drain's or a rebalance's job).
Repair is idempotent, so one cut short is simply run again. An object with no good copy
anywhere cannot be repaired and is reported with the files it affects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chunkvault.backends.base import Peer, PeerError
from chunkvault.catalog import ChunkRow
from chunkvault.check import Checker, CheckReport
from chunkvault.copies import put_chunk, put_pack, put_share
from chunkvault.crypto.envelope import EnvelopeError, wrapped_generation
from chunkvault.erasure import encode
from chunkvault.errors import ChunkvaultError
from chunkvault.integrity import Holdings, Problem
from chunkvault.keystore import KeyStore
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose
from chunkvault.vault import Vault

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    check: CheckReport
    copies_written: int = 0
    bytes_written: int = 0
    objects_repaired: int = 0
    keyrings_written: list[str] = field(default_factory=list)
    # What is still wrong: no good copy to copy from, or writes that failed.
    left: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    held: Holdings
    source: list[str]  # peers with a good copy, to read from (in this order)
    targets: list[str]  # peers to write a good copy to: damaged copies, then new ones
    damaged: frozenset[str]  # those of the targets that hold a damaged copy
    spare: list[str]  # the next-ranked peers, for a new copy whose write failed
    # An erasure-coded object: (peer, share index) to write, damaged shares first.
    shares: tuple[tuple[str, int], ...] = ()


class Repairer:
    def __init__(self, vault: Vault, keystore: KeyStore) -> None:
        self.vault = vault
        self.keystore = keystore
        self.replicas = vault.config.replication.replicas
        self.metadata_copies = vault.config.replication.metadata_copies
        self.checker = Checker(vault, read_fraction=1.0)
        self._peers = {p.name: p for p in vault.peers}

    def run(self) -> RepairReport:
        """:meth:`check`, :meth:`plan`, :meth:`repair` (the CLI runs them one by one, each
        with its progress bar)."""
        report, plans = self.plan(self.check())
        self.repair(report, plans)
        return report

    def check(self, progress: Callable[[int], None] | None = None) -> CheckReport:
        """The structure, then every copy read and opened (``progress``: bytes read; the
        total is ``self.checker.data_bytes`` once :meth:`Checker.structure` has run)."""
        check = self.checker.structure()
        self.checker.read_data(check, progress)
        return check

    def plan(self, check: CheckReport) -> tuple[RepairReport, list[_Plan]]:
        report = RepairReport(check)
        return report, self._plans(report)

    def repair(
        self,
        report: RepairReport,
        plans: list[_Plan],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Carry out the plans, ``transfer.concurrency`` objects at a time (``progress``:
        objects done), then the keyring."""
        workers = max(1, self.vault.config.transfer.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="repair") as pool:
            for written, size, problem in pool.map(self._repair, plans):
                report.copies_written += len(written)
                report.bytes_written += size * len(written)
                if written:
                    report.objects_repaired += 1
                if problem is not None:
                    report.left.append(problem)
                if progress:
                    progress(1)
        report.keyrings_written, failed = self.place_keyrings()
        for peer in failed:
            report.left.append(Problem("not repaired", f"keyring on peer {peer}", "write failed"))

    def _plans(self, report: RepairReport) -> list[_Plan]:
        plans = []
        for key, held in sorted(self.checker.holdings.items()):
            gone = sorted((held.recorded_on - held.found_on) & self.checker.listed)
            if gone and key[0] == "chunk":
                self.vault.catalog.forget_replicas(held.name, gone)
            elif gone and key[0] == "pack":
                self.vault.catalog.forget_pack_replicas(held.name, gone)
            damaged = self.checker.damaged.get(key, set())
            if held.scheme is not None:
                plan = self._share_plan(report, held, damaged)
                if plan is not None:
                    plans.append(plan)
                continue
            good = held.found_on - damaged
            if not good:
                report.left.append(Problem("unrepairable", held.subject,
                                           "no good copy on any peer that could be read",
                                           tuple(sorted(held.files))))  # fmt: skip
                continue
            # Zone-aware, as writes choose: the best peer of each zone first, then the rest.
            healthy = [p for p in self.vault.peers if p.peer.down_for <= 0 and not p.draining]
            ranked = choose(held.name, healthy, len(healthy))
            target = self.metadata_copies if held.kind.startswith("manifest") else self.replicas
            missing = max(0, target - len(good) - len(damaged))
            more = [p.name for p in ranked if p.name not in good and p.name not in damaged]
            targets = sorted(damaged) + more[:missing]
            if targets:
                plans.append(_Plan(held, _ranked_first(good, ranked), targets,
                                   frozenset(damaged), more[missing:]))  # fmt: skip
        return plans

    def _share_plan(self, report: RepairReport, held: Holdings, damaged: set[str]) -> _Plan | None:
        """Which shares of an erasure-coded object to write where: each damaged share over
        itself, each missing index on the peer placement gives it if that peer is healthy
        and holds no good share, else on the best-ranked one that holds none."""
        assert held.scheme is not None
        scheme = held.scheme
        good = {peer: i for peer, i in held.shares.items() if peer not in damaged}
        if len(set(good.values())) < scheme.data:
            report.left.append(Problem("unrepairable", held.subject,
                                       f"fewer than {scheme.data} good shares on the peers",
                                       tuple(sorted(held.files))))  # fmt: skip
            return None
        healthy = [p for p in self.vault.peers if p.peer.down_for <= 0 and not p.draining]
        ranked = choose(held.name, healthy, len(healthy))
        placed = choose(held.name, self.vault.peers, scheme.width)
        missing = sorted(set(range(scheme.width)) - set(good.values()))
        writes: list[tuple[str, int]] = []
        for peer in sorted(damaged):
            index = held.shares.get(peer)
            if index in missing:
                writes.append((peer, index))
                missing.remove(index)
        busy = set(good) | {p for p, _ in writes}
        healthy_names = {p.name for p in healthy}
        free = [p.name for p in ranked if p.name not in busy]
        for index in missing:
            home = placed[index].name if index < len(placed) else None
            name = home if home in healthy_names and home in free else (free[0] if free else None)
            if name is None:
                break
            free.remove(name)
            writes.append((name, index))
        if not writes:
            return None
        return _Plan(held, sorted(good, key=lambda p: good[p]), [p for p, _ in writes],
                     frozenset(damaged), free, tuple(writes))  # fmt: skip

    def _repair(self, plan: _Plan) -> tuple[list[str], int, Problem | None]:
        """Copy a verified good copy to the plan's targets: (peers written, bytes of the
        copy, what is still wrong)."""
        held = plan.held
        if plan.shares:
            return self._repair_shares(plan)
        files = tuple(sorted(held.files))
        errors: list[str] = []
        for source in plan.source:
            try:
                with self.checker.verified(held, self._peers[source].peer) as body:
                    written = self._write(plan, body, errors)
                    size = len(body)
            except (PeerError, ChunkvaultError, EnvelopeError) as exc:
                # Damaged since the check, or gone: the next good copy.
                errors.append(f"reading {source}: {getattr(exc, 'message', None) or exc}")
                continue
            problem = None
            if len(written) < len(plan.targets):
                problem = Problem("not repaired", held.subject, "; ".join(errors), files)
            return written, size, problem
        return [], 0, Problem("not repaired", held.subject, "; ".join(errors), files)

    def _repair_shares(self, plan: _Plan) -> tuple[list[str], int, Problem | None]:
        """Rebuild an erasure-coded object from its good shares (verified), encode it, and
        write the plan's shares; a new share whose write fails goes to the next spare."""
        held = plan.held
        assert held.scheme is not None
        files = tuple(sorted(held.files))
        refs = list(self.checker.refs.get((held.kind, held.name), {}).values())
        vault_id = self.vault.config.vault.id
        errors: list[str] = []
        written: list[str] = []
        try:
            with self.checker.rebuilt(held) as (body, _, _):
                encoded = encode(body, held.scheme)
                queue, spare = list(plan.shares), list(plan.spare)
                while queue:
                    name, index = queue.pop(0)
                    try:
                        put_share(vault_id, self.vault.catalog, self._peers[name].peer,
                                  held.kind, refs, held.name, body, held.scheme, index,
                                  encoded[index])  # fmt: skip
                    except PeerError as exc:
                        errors.append(f"writing share {index} to {name}: {exc.message}")
                        if name not in plan.damaged and spare:
                            queue.append((spare.pop(0), index))
                        continue
                    written.append(name)
                size = len(encoded[0])
        except (PeerError, ChunkvaultError) as exc:
            errors.append(getattr(exc, "message", None) or str(exc))
            return [], 0, Problem("not repaired", held.subject, "; ".join(errors), files)
        problem = None
        if len(written) < len(plan.shares):
            problem = Problem("not repaired", held.subject, "; ".join(errors), files)
        return written, size, problem

    def _write(self, plan: _Plan, body: bytes | memoryview, errors: list[str]) -> list[str]:
        """Write ``body`` to the plan's targets; a new copy whose write fails goes to the
        next-ranked peer instead (a damaged copy stays where it is until repaired)."""
        queue, spare = list(plan.targets), list(plan.spare)
        written = []
        while queue:
            name = queue.pop(0)
            try:
                self.put_copy(plan.held, body, name)
            except PeerError as exc:
                errors.append(f"writing {name}: {exc.message}")
                if name not in plan.damaged and spare:
                    queue.append(spare.pop(0))
                continue
            written.append(name)
        return written

    def put_copy(self, held: Holdings, body: bytes | memoryview, name: str) -> None:
        """One copy of ``held`` on peer ``name``, then recorded in the catalog."""
        vault_id = self.vault.config.vault.id
        catalog = self.vault.catalog
        peer: Peer = self._peers[name].peer
        if held.kind == "chunk":
            ref = next(iter(self.checker.refs[("chunk", held.name)].values()))
            put_chunk(vault_id, catalog, peer, ref, body)
        elif held.kind == "pack":
            # Its chunks get the new replica too (those the manifests place in it).
            rows = [
                ChunkRow(r.id, r.size, r.length, r.wrapped_dek, wrapped_generation(r.wrapped_dek),
                         "", pack=held.name, pack_offset=r.offset)
                for r in self.checker.refs.get(("pack", held.name), {}).values()
            ]  # fmt: skip
            put_pack(vault_id, catalog, peer, held.name, body, rows)
        else:  # a manifest batch or manifest: the sealed object as it is
            peer.put(held.name, body)

    def place_keyrings(self) -> tuple[list[str], list[str]]:
        """This machine's keyring onto every peer that misses it or holds an older copy
        (never over a newer revision, nor another vault's: ``key`` commands decide): the
        peers written, and those whose write failed."""
        local = self.keystore.load_local()
        if local is None:
            return [], []
        stale = []
        for copy in self.keystore.peer_copies():
            if copy.missing or (copy.ring is not None and copy.ring.revision < local.revision):
                stale.append(copy.peer)
        if not stale:
            return [], []
        failed = self.keystore.save(local, only=stale)
        return [p for p in stale if p not in failed], list(failed)


def _ranked_first(good: set[str], ranked: list[PlacedPeer]) -> list[str]:
    order = [p.name for p in ranked if p.name in good]
    return order + sorted(good - set(order))
