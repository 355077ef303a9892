"""The agent's background repair: what it stored on fewer peers than meant (a peer was
down or refused the write) gets its missing copies once peers take writes again, at most
``repair.bytes_per_second``, every ``repair.interval_seconds``.

It learns what to heal from the catalog: every write that reached fewer peers than it was
meant for is noted there (:mod:`chunkvault.shortfall`) with its target (a flow's
``replicas`` when one sets it), and where each copy went is recorded as always. Each copy
is read from a recorded holder and opened before it is copied (a chunk's AES-GCM tag and
id, a pack's SHA-256 as recorded when it was written, a batch's seal; on a write-only
host, which opens nothing, a chunk's SHA-256 as recorded and a batch's writer MAC), then
written to the best-ranked peers that are up, not being drained and hold none, as writes
choose. What has no readable copy is tried again later, less and less often (`chunkvault
repair` reads every copy on every peer).

Copies on a peer that is down now are not copied elsewhere: they still exist, and copying
them meanwhile would leave an extra copy when it comes back (`check` and `repair` judge
those).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chunkvault import shortfall
from chunkvault.backends.base import Peer, PeerError
from chunkvault.catalog import Catalog
from chunkvault.copies import put_chunk, put_pack, put_share
from chunkvault.crypto.envelope import EnvelopeError, open_chunk, sealed_size_limit
from chunkvault.erasure import Scheme, encode
from chunkvault.errors import ChunkvaultError
from chunkvault.journal import parse_batch_name
from chunkvault.layout import (
    LayoutError,
    chunk_id_from_key,
    chunk_key,
    pack_id_from_key,
    pack_key,
)
from chunkvault.manifest import ChunkRef, ManifestError
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose
from chunkvault.shares import Coded, ObjectUnreadable
from chunkvault.vault import Vault

log = logging.getLogger(__name__)
#: Objects looked at per pass (the next pass takes the rest).
PASS_LIMIT = 1000
#: After a try that found no readable copy, the wait before the next (doubling).
MIN_BACKOFF = 5.0
MAX_BACKOFF = 3600.0


@dataclass
class HealPass:
    healed: int = 0  # objects brought back to their target
    copies: int = 0  # copies written


class Healer:
    def __init__(
        self,
        vault: Vault,
        bytes_per_second: int,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """``wait(seconds)``: sleeps, True if asked to stop meanwhile (the agent's stop
        event's ``wait``)."""
        self.vault = vault
        self.replicas = vault.config.replication.replicas
        self.rate = bytes_per_second
        self._wait = wait or (lambda seconds: threading.Event().wait(seconds))
        self._by_name = {p.name: p for p in vault.peers}
        self._sent = 0
        self._since = time.monotonic()
        # Objects with no readable copy on the last try: key -> (when to try again, the
        # wait after that), doubling up to MAX_BACKOFF (a holder may only be busy).
        self._backoff: dict[str, tuple[float, float]] = {}

    def heal(self) -> HealPass:
        """One pass over what is noted short (up to PASS_LIMIT objects)."""
        done = HealPass()
        for short in shortfall.noted(self.vault.catalog)[:PASS_LIMIT]:
            found = self._what(short)
            if found is None:
                if short.settled(time.time()):  # its file failed, or gc took it
                    shortfall.clear(self.vault.catalog, short.key)
                continue
            kind, name, holders = found
            scheme = self._scheme(kind, name)
            if scheme is not None:
                done.copies += self._heal_shares(short, kind, name, scheme)
                continue
            if len(holders) >= short.target:
                shortfall.clear(self.vault.catalog, short.key)  # healed meanwhile (repair)
                continue
            retry = self._backoff.get(short.key)
            if retry is not None and time.monotonic() < retry[0]:
                continue
            targets = self._targets(name, holders, short.target)
            if not targets:
                continue  # not enough peers up: the next pass
            try:
                body, write = self._read(kind, name, holders)
            except _NoGoodCopy as exc:
                wait = retry[1] if retry is not None else MIN_BACKOFF
                log.warning("background repair: %s: %s (trying again in %.0f s; `chunkvault "
                            "repair` reads every copy)", short.key, exc, wait)  # fmt: skip
                self._backoff[short.key] = (time.monotonic() + wait, min(2 * wait, MAX_BACKOFF))
                continue
            self._backoff.pop(short.key, None)
            written = self._write(name, write, targets)
            done.copies += len(written)
            if len(holders) + len(written) >= short.target:
                shortfall.clear(self.vault.catalog, short.key)
                done.healed += 1
            elif kind == "batch":  # its holders are known only from this record
                shortfall.note(self.vault.catalog, short.key, short.target, holders + written)
            if self._throttle(len(written) * len(body)):
                break  # stopping
        if done.copies:
            log.info("background repair: %d object(s) back at their copies (%d copies written)",
                     done.healed, done.copies)  # fmt: skip
        return done

    # --- erasure-coded objects ---------------------------------------------------------------

    def _scheme(self, kind: str, name: str) -> Scheme | None:
        if kind == "chunk":
            row = self.vault.catalog.chunk(name)
            form = row.scheme if row is not None else None
        elif kind == "pack":
            pack = self.vault.catalog.pack(name)
            form = pack.scheme if pack is not None else None
        else:
            return None
        return None if form is None else Scheme.parse(form)

    def _heal_shares(self, short: shortfall.Shortfall, kind: str, name: str, scheme: Scheme) -> int:
        """Its missing shares, rebuilt from the recorded ones (verified against the SHA-256
        recorded when it was written) and written to the peers placement gives them, or
        the best-ranked others that hold none. Returns the shares written."""
        catalog = self.vault.catalog
        configured = {p.name for p in self.vault.peers}
        if kind == "chunk":
            recorded, row = catalog.chunk_shares(name), catalog.chunk(name)
            key = chunk_key(self.vault.config.vault.id, name)
            size, sha = (row.stored_size, row.sha256) if row else (0, "")
        else:
            recorded, pack = catalog.pack_shares(name), catalog.pack(name)
            key = pack_key(self.vault.config.vault.id, name)
            size, sha = (pack.stored_size, pack.sha256) if pack else (0, "")
        recorded = {p: i for p, i in recorded.items() if p in configured}
        missing = sorted(set(range(scheme.width)) - set(recorded.values()))
        if not missing:
            shortfall.clear(catalog, short.key)
            return 0
        retry = self._backoff.get(short.key)
        if retry is not None and time.monotonic() < retry[0]:
            return 0
        usable = [p for p in self.vault.peers if p.peer.down_for <= 0 and not p.draining]
        free = [p for p in choose(name, usable, len(usable)) if p.name not in recorded]
        homes = choose(name, self.vault.peers, scheme.width)
        if not free:
            return 0  # not enough peers up: the next pass
        try:
            body = self.vault.reader.shares.read_object(
                Coded(key, name, scheme, recorded, size, sha or None)
            )
        except ObjectUnreadable as exc:
            wait = retry[1] if retry is not None else MIN_BACKOFF
            log.warning("background repair: %s: fewer than %d good shares (%s; trying again in "
                        "%.0f s)", short.key, scheme.data, exc, wait)  # fmt: skip
            self._backoff[short.key] = (time.monotonic() + wait, min(2 * wait, MAX_BACKOFF))
            return 0
        self._backoff.pop(short.key, None)
        encoded = encode(body, scheme)
        refs = _refs(catalog, kind, name)
        written = 0
        for index in missing:
            if not free:
                break
            home = homes[index] if index < len(homes) else None
            target = home if home in free else free[0]
            free.remove(target)
            try:
                put_share(self.vault.config.vault.id, catalog, target.peer, kind, refs, name,
                          body, scheme, index, encoded[index])  # fmt: skip
                written += 1
            except PeerError as exc:
                log.info("background repair: share %d of %s on %s failed: %s", index,
                         name[:16], target.name, exc.message)  # fmt: skip
        if written == len(missing):
            shortfall.clear(catalog, short.key)
        self._throttle(written * len(encoded[0]))
        return written

    # --- what is due -----------------------------------------------------------------------

    def _what(self, short: shortfall.Shortfall) -> tuple[str, str, list[str]] | None:
        """(kind, id or name, peers holding it now) of a noted object; None while it is
        not in the catalog (not yet recorded, its file failed, or gc took it)."""
        vault_id = self.vault.config.vault.id
        catalog = self.vault.catalog
        configured = {p.name for p in self.vault.peers}
        for kind, parse in (("chunk", chunk_id_from_key), ("pack", pack_id_from_key)):
            try:
                object_id = parse(vault_id, short.key)
            except LayoutError:
                continue
            if kind == "chunk":
                row = catalog.chunk(object_id)
                if row is None or row.pack is not None:
                    return None
                held = catalog.replicas(object_id)
            else:
                if catalog.pack(object_id) is None:
                    return None
                held = catalog.pack_replicas(object_id)
            return kind, object_id, [p for p in held if p in configured]
        if parse_batch_name(vault_id, short.key) is None or not catalog.has_batch(short.key):
            return None
        return "batch", short.key, [p for p in short.peers if p in configured]

    def _targets(self, name: str, holders: list[str], target: int) -> list[PlacedPeer]:
        """The best-ranked peers up, not being drained and holding none, for the copies
        missing."""
        usable = [p for p in self.vault.peers if p.peer.down_for <= 0 and not p.draining]
        ranked = choose(name, usable, len(usable), exclude=holders)
        return ranked[: max(0, target - len(holders))]

    def _write(
        self, name: str, write: Callable[[PlacedPeer], None], targets: list[PlacedPeer]
    ) -> list[str]:
        written = []
        for placed in targets:
            try:
                write(placed)
                written.append(placed.name)
            except PeerError as exc:
                log.info("background repair: %s on %s failed: %s", name[:16], placed.name,
                         exc.message)  # fmt: skip
        return written

    def _read(
        self, kind: str, name: str, holders: list[str]
    ) -> tuple[bytes, Callable[[PlacedPeer], None]]:
        """A good copy from a holder (peers up first), and how to write it to a peer."""
        problems = []
        for holder in sorted(holders, key=lambda h: self._by_name[h].peer.down_for > 0):
            try:
                return self._read_from(kind, name, self._by_name[holder].peer)
            except (PeerError, EnvelopeError, ManifestError, ChunkvaultError) as exc:
                problems.append(f"{holder}: {getattr(exc, 'message', None) or exc}")
        raise _NoGoodCopy("no readable copy (" + "; ".join(problems) + ")")

    def _read_from(
        self, kind: str, name: str, peer: Peer
    ) -> tuple[bytes, Callable[[PlacedPeer], None]]:
        vault_id = self.vault.config.vault.id
        catalog = self.vault.catalog
        if kind == "chunk":
            row = catalog.chunk(name)
            if row is None:
                raise _NoGoodCopy("gone from the catalog")
            limit = sealed_size_limit(row.plain_size)
            body = peer.get(chunk_key(vault_id, name), max_size=limit)
            if self.vault.write_only:  # opens nothing: the SHA-256 it recorded at the write
                if not row.sha256 or hashlib.sha256(body).hexdigest() != row.sha256:
                    raise EnvelopeError("SHA-256 differs from the one recorded when it was "
                                        "written")  # fmt: skip
            else:
                open_chunk(self.vault.keys, name, body, row.wrapped_dek, max_size=row.plain_size)
            ref = ChunkRef(name, row.plain_size, row.wrapped_dek)
            return body, lambda p: put_chunk(vault_id, catalog, p.peer, ref, body)
        if kind == "pack":
            pack = catalog.pack(name)
            if pack is None or not pack.sha256:
                raise _NoGoodCopy("its SHA-256 is not known here")
            body = peer.get(pack_key(vault_id, name), max_size=pack.stored_size)
            if hashlib.sha256(body).hexdigest() != pack.sha256:
                raise EnvelopeError("SHA-256 differs from the one recorded when it was written")
            rows = catalog.chunks_in_pack(name)
            return body, lambda p: put_pack(vault_id, catalog, p.peer, name, body, rows)
        body = self.vault.journal.read_copy(name, peer)
        return body, lambda p: p.peer.put(name, body)

    def _throttle(self, sent: int) -> bool:
        """Sleep so that copies go out at most at the configured rate; True if stopping."""
        self._sent += sent
        ahead = self._sent / self.rate - (time.monotonic() - self._since)
        if ahead > 0:
            return self._wait(ahead)
        if ahead < -1:  # idle for a while: no burst of saved-up allowance
            self._sent, self._since = 0, time.monotonic()
        return False


class _NoGoodCopy(ChunkvaultError):
    pass


def _refs(catalog: Catalog, kind: str, name: str) -> list[ChunkRef]:
    """The chunk of a chunk object, or the chunks the catalog places in a pack, as refs."""
    if kind == "chunk":
        row = catalog.chunk(name)
        return [ChunkRef(name, row.plain_size, row.wrapped_dek)] if row is not None else []
    return [
        ChunkRef(r.id, r.plain_size, r.wrapped_dek, pack=name, offset=r.pack_offset,
                 length=r.stored_size)
        for r in catalog.chunks_in_pack(name)
    ]  # fmt: skip
