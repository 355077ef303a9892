"""`chunkvault peers drain NAME` and `peers rebalance`: copies moved to where placement
wants them after a peer is added, re-weighted or drained (:mod:`chunkvault.moves` says
which), write-new-then-delete-old.

It starts as ``check`` does (:class:`chunkvault.check.Checker`: every peer listed, every
version's batch read), and refuses to move anything unless every peer could be listed:
a copy on a peer it cannot see could be the one it deletes. Then, per object, ``transfer.
concurrency`` at a time:

1. the move is recorded in the catalog (``moving:<kind>:<name>``), so a run cut short is
   finished the same way by the next one rather than planned again around a half-made
   move (which would leave an extra copy);
2. a good copy is read and opened (nothing unverified is copied) and written to each
   new peer, and the catalog records it;
3. only then are the old copies deleted (and forgotten by the catalog), and the record
   cleared. A write that fails deletes nothing; the next run tries again. Where fewer
   copies were written than go (a resumed move; fewer peers left than copies), every
   copy that stays is read and opened first: a listing alone may lie.

Progress is kept in the catalog for ``status`` (``rebalance``). A peer being drained gets
no new copy from any writer on this machine (:mod:`chunkvault.draining`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chunkvault.backends.base import PeerError
from chunkvault.copies import put_share
from chunkvault.crypto.envelope import EnvelopeError
from chunkvault.draining import PROGRESS, draining, marked
from chunkvault.erasure import encode
from chunkvault.errors import ChunkvaultError
from chunkvault.integrity import Holdings, Problem
from chunkvault.keystore import KeyStore
from chunkvault.layout import chunk_key, pack_key, share_key
from chunkvault.moves import Move, plan_move, plan_share_move
from chunkvault.repair import Repairer
from chunkvault.vault import Vault

log = logging.getLogger(__name__)
MOVING = "moving:"
#: How often the progress in the catalog is brought up to date (seconds).
PROGRESS_EVERY = 1.0


@dataclass
class RebalanceReport:
    objects: int = 0  # objects checked
    moved: int = 0  # objects whose copies moved
    copies_written: int = 0
    copies_deleted: int = 0
    bytes_written: int = 0
    keyrings_written: list[str] = field(default_factory=list)
    left: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    held: Holdings
    move: Move


class Rebalancer:
    def __init__(self, vault: Vault, keystore: KeyStore) -> None:
        self.vault = vault
        self.repairer = Repairer(vault, keystore)
        self.checker = self.repairer.checker
        self.peers = marked(vault.peers, draining(vault.catalog))
        self._by_name = {p.name: p for p in self.peers}
        self._lock = threading.Lock()
        self._done = 0
        self._saved = 0.0

    def plan(self) -> tuple[RebalanceReport, list[_Job]]:
        """What is where (``check``'s structure), and the moves. ChunkvaultError if a
        peer cannot be listed."""
        self.checker.structure()
        unlisted = sorted({p.name for p in self.peers} - self.checker.listed)
        if unlisted:
            raise ChunkvaultError(
                f"cannot move copies while {', '.join(unlisted)} cannot be listed: a copy "
                "there could be the one that would be deleted",
                "bring it back and run this again; a peer gone for good is removed from "
                "the config, then `chunkvault repair` restores R copies",
            )
        report = RebalanceReport(objects=len(self.checker.holdings))
        pending = self._pending()
        jobs = []
        for key, held in sorted(self.checker.holdings.items()):
            started = pending.pop(key, None)
            if started is not None and all(p in self._by_name for p in started.to):
                jobs.append(_Job(held, started))
                continue
            if not held.found_on:
                continue  # on no peer: nothing to move (`check` reports it)
            if held.scheme is not None:
                move = plan_share_move(held.name, held.shares, self.peers)
            else:
                move = plan_move(held.name, held.found_on, self.peers)
            if move is not None:
                jobs.append(_Job(held, move))
        for kind, name in pending:  # no version needs it any more, or a peer went away
            self.vault.catalog.delete_meta(f"{MOVING}{kind}:{name}")
        return report, jobs

    def run(
        self,
        report: RebalanceReport,
        jobs: list[_Job],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Carry out the moves, ``transfer.concurrency`` objects at a time."""
        self._save_progress(len(jobs), "running", force=True)
        workers = max(1, self.vault.config.transfer.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rebalance") as pool:
            for written, deleted, size, problem in pool.map(self._move, jobs):
                report.copies_written += written
                report.copies_deleted += deleted
                report.bytes_written += size * written
                if problem is None:
                    report.moved += 1
                else:
                    report.left.append(problem)
                with self._lock:
                    self._done += 1
                self._save_progress(len(jobs), "running")
                if progress:
                    progress(1)
        # A new peer needs the keyring too: a fresh machine may find only it.
        report.keyrings_written, failed = self.repairer.place_keyrings()
        for peer in failed:
            report.left.append(Problem("not moved", f"keyring on peer {peer}", "write failed"))
        self._save_progress(len(jobs), "incomplete" if report.left else "done", force=True)

    def _move(self, job: _Job) -> tuple[int, int, int, Problem | None]:
        """(copies written, copies deleted, bytes of one copy, what is still wrong)."""
        held, move = job.held, job.move
        files = tuple(sorted(held.files))
        record = f"{MOVING}{held.kind}:{held.name}"
        self.vault.catalog.set_meta(record, json.dumps({"to": move.to, "off": move.off}))
        if held.scheme is not None:
            return self._move_shares(held, move, record, files)
        missing = [p for p in move.to if p not in held.found_on]
        errors: list[str] = []
        written = size = 0
        if missing:
            written, size = self._copy(held, move, missing, errors)
            if written < len(missing):
                return (
                    written,
                    0,
                    size,
                    Problem("not moved", held.subject, "; ".join(errors), files),
                )
        if written < len(move.off):
            # Fewer verified copies written than deleted (a resumed move, or fewer peers
            # left than copies): the copies that stay were only listed, and a peer may
            # list what it does not hold. Each must open before any copy goes.
            staying = sorted(held.found_on - set(move.off) - set(missing))
            bad = [name for name in staying if not self._opens(held, name, errors)]
            if bad or not (staying or written):
                errors.append(f"kept the copies on {', '.join(move.off)}")
                problem = Problem("not moved", held.subject, "; ".join(errors), files)
                return written, 0, size, problem
        deleted = self._delete_off(held, list(move.off), errors)
        if errors:
            return (
                written,
                deleted,
                size,
                Problem("not moved", held.subject, "; ".join(errors), files),
            )
        self.vault.catalog.delete_meta(record)
        return written, deleted, size, None

    def _move_shares(
        self, held: Holdings, move: Move, record: str, files: tuple[str, ...]
    ) -> tuple[int, int, int, Problem | None]:
        """:meth:`_move` of an erasure-coded object: the object rebuilt from its shares and
        verified, the share each peer of ``move.to`` gets encoded from it and written,
        then the shares on ``move.off`` deleted. A share is never copied from a peer as it
        is: only what rebuilds into a verified object goes out."""
        assert held.scheme is not None
        scheme = held.scheme
        errors: list[str] = []
        # (A resumed move: an ``off`` share may be gone already, its ``to`` written.)
        gives = {to: held.shares[off] for to, off in zip(move.to, move.off, strict=False)
                 if off in held.shares and to not in held.shares}  # fmt: skip
        written = size = 0
        try:
            with self.checker.rebuilt(held) as (body, bad, _):
                if bad:
                    errors.append("damaged shares on " + ", ".join(sorted(bad)))
                encoded = encode(body, scheme)
                size = len(encoded[0])
                for name, index in gives.items():
                    try:
                        put_share(self.vault.config.vault.id, self.vault.catalog,
                                  self._by_name[name].peer, held.kind,
                                  list(self.checker.refs.get((held.kind, held.name), {})
                                       .values()),
                                  held.name, body, scheme, index, encoded[index])  # fmt: skip
                        written += 1
                    except PeerError as exc:
                        errors.append(f"writing share {index} to {name}: {exc.message}")
        except (PeerError, ChunkvaultError) as exc:
            errors.append(getattr(exc, "message", None) or str(exc))
        if errors:
            return written, 0, size, Problem("not moved", held.subject, "; ".join(errors), files)
        deleted = self._delete_off(held, [n for n in move.off if n in held.shares], errors)
        if errors:
            return written, deleted, size, Problem("not moved", held.subject, "; ".join(errors),
                                                   files)  # fmt: skip
        self.vault.catalog.delete_meta(record)
        return written, deleted, size, None

    def _copy(
        self, held: Holdings, move: Move, missing: list[str], errors: list[str]
    ) -> tuple[int, int]:
        """A verified copy onto each of ``missing``: (copies written, bytes of one)."""
        sources = sorted(held.found_on, key=lambda p: (p in move.off, p))  # staying ones first
        for source in sources:
            try:
                with self.checker.verified(held, self._by_name[source].peer) as body:
                    written = 0
                    for name in missing:
                        try:
                            self.repairer.put_copy(held, body, name)
                            written += 1
                        except PeerError as exc:
                            errors.append(f"writing {name}: {exc.message}")
                    return written, len(body)
            except (PeerError, ChunkvaultError, EnvelopeError) as exc:
                errors.append(f"reading {source}: {getattr(exc, 'message', None) or exc}")
        return 0, 0

    def _opens(self, held: Holdings, name: str, errors: list[str]) -> bool:
        """Whether the copy on peer ``name`` reads and opens (else why, in ``errors``)."""
        try:
            with self.checker.verified(held, self._by_name[name].peer):
                return True
        except (PeerError, ChunkvaultError, EnvelopeError) as exc:
            errors.append(f"copy on {name}: {getattr(exc, 'message', None) or exc}")
            return False

    def _delete_off(self, held: Holdings, names: list[str], errors: list[str]) -> int:
        """Delete the copies (or shares) on ``names``; how many went (else why, in
        ``errors``)."""
        deleted = 0
        for name in names:
            try:
                self._delete(held, name)
                deleted += 1
            except PeerError as exc:
                errors.append(f"deleting from {name}: {exc.message}")
        return deleted

    def _delete(self, held: Holdings, name: str) -> None:
        vault_id = self.vault.config.vault.id
        peer = self._by_name[name].peer
        catalog = self.vault.catalog
        if held.kind in ("chunk", "pack"):
            key = (chunk_key if held.kind == "chunk" else pack_key)(vault_id, held.name)
            if held.scheme is not None:
                key = share_key(key, held.scheme, held.shares[name])
            peer.delete(key)
            forget = (
                catalog.forget_replicas if held.kind == "chunk" else catalog.forget_pack_replicas
            )
            forget(held.name, [name])
        else:
            peer.delete(held.name)

    def _pending(self) -> dict[tuple[str, str], Move]:
        """Moves a run cut short began: (kind, name) -> the move."""
        found = {}
        for key, value in self.vault.catalog.meta_with_prefix(MOVING).items():
            kind, _, name = key[len(MOVING) :].partition(":")
            try:
                data = json.loads(value)
                found[(kind, name)] = Move(tuple(data["to"]), tuple(data["off"]))
            except (ValueError, KeyError, TypeError):
                continue  # (our own record: an unreadable one is planned afresh)
        return found

    def _save_progress(self, total: int, state: str, force: bool = False) -> None:
        now = time.time()
        with self._lock:
            if not force and now - self._saved < PROGRESS_EVERY:
                return
            self._saved = now
            done = self._done
        names = sorted(p.name for p in self.peers if p.draining)
        self.vault.catalog.set_meta(PROGRESS, json.dumps(
            {"state": state, "objects": total, "done": done, "draining": names,
             "updated": round(now, 3)}
        ))  # fmt: skip
