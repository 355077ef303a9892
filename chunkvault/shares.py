"""Erasure-coded objects on the peers: an object's shares written to distinct peers, and
the object (or a byte range of it) read back from any ``k`` of them.

Writing (:func:`write_shares`): share ``i`` goes to the ``i``-th peer the weighted
rendezvous ranking of the object's id chooses (zone-aware, as whole copies are placed); a
share whose write fails goes to the next-ranked peer that holds none, so each peer holds
at most one share of an object, and losing a peer loses at most one.

Reading (:class:`ShareReader`): the data shares first (the code is systematic: a healthy
vault joins them and decodes nothing), each from the peer the catalog records for it (or,
unrecorded, the peer placement gives it); a missing, unreadable or malformed share is
replaced by a parity share. What was rebuilt counts only once its SHA-256 is the one the
shares' headers (or the caller) name, so a forged or stale share costs a retry with other
shares, never a wrong byte. A byte range of the object (a packed chunk, or many) is read
as ranges of the data shares that hold it; only if one of those is unreadable is the
whole object rebuilt.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from chunkvault import erasure
from chunkvault.backends.base import MalformedReply, NotFound, PeerError
from chunkvault.backends.listing import show_key
from chunkvault.backends.warn_once import WarnOnce
from chunkvault.erasure import HEADER_SIZE, MAX_DECODES, Scheme, ShareError, ShareHeader
from chunkvault.layout import META_SHA256, share_key, share_metadata
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose
from chunkvault.replica_choice import ReplicaChooser
from chunkvault.stored import Written

log = logging.getLogger(__name__)

__all__ = ["Coded", "ObjectUnreadable", "ShareReader", "write_shares"]


def write_shares(
    pool: Executor,
    peers: Sequence[PlacedPeer],
    key: str,
    placement_id: str,
    body: bytes | bytearray | memoryview,
    metadata: Mapping[str, str],
    scheme: Scheme,
    on_write: Callable[[str, int], None] | None = None,
    on_write_error: Callable[[str], None] | None = None,
) -> Written:
    """Encode ``body`` and write its shares (``key``'s share keys) to distinct peers, as the
    module docstring says; peers down or draining are passed over. The caller judges
    whether enough were written."""
    known = metadata.get(META_SHA256)  # the body's, as the caller computed it
    encoded = erasure.encode(body, scheme, bytes.fromhex(known) if known else None)
    excluded = {p.name for p in peers if p.peer.down_for > 0 or p.draining}
    placed: dict[str, int] = {}
    errors: list[str] = []
    todo = list(range(scheme.width))
    while todo:
        chosen = choose(placement_id, peers, scheme.width, exclude=excluded | set(placed))
        if not chosen:
            if not placed and not errors:
                errors.append("every peer is down")
            break
        round_ = list(zip(todo, chosen, strict=False))
        futures = {
            (index, p.name): pool.submit(
                p.peer.put, share_key(key, scheme, index), encoded[index],
                _metadata(metadata, encoded[index], placement_id),
            )
            for index, p in round_
        }  # fmt: skip
        wait(futures.values())
        todo = todo[len(round_) :]
        for (index, name), future in futures.items():
            try:
                future.result()
            except PeerError as exc:
                if on_write_error is not None:
                    on_write_error(name)
                errors.append(f"{name}: {exc.message}")
                excluded.add(name)
                todo.append(index)
                log.warning(
                    "%s: share %d on %s failed: %s", show_key(key), index, name, exc.message
                )
                continue
            placed[name] = index
            if on_write is not None:
                on_write(name, len(encoded[index]))
        todo.sort()
    return Written(list(placed), errors, placed)


def _metadata(base: Mapping[str, str], share: bytes | bytearray, object_id: str) -> dict[str, str]:
    header = erasure.parse_header(share)
    return share_metadata(base, header, hashlib.sha256(share).hexdigest(), object_id)


@dataclass(frozen=True)
class Coded:
    """One erasure-coded object as a reader knows it: its key (the shares' keys add the
    scheme and index), what placement ranks it on, its scheme, the share index each peer
    is recorded to hold, its size (the most bytes it may have; exact for ranges) and its
    SHA-256 (hex; None: the one its shares name)."""

    key: str
    placement_id: str
    scheme: Scheme
    recorded: Mapping[str, int]
    size: int
    sha256: str | None = None


class ObjectUnreadable(Exception):
    """Fewer than ``k`` shares of the object could be read and agree (``problems`` says
    what each peer did)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) or "no share found on any peer")
        self.problems = problems


@dataclass
class _Fetched:
    """The shares of one object read so far, and what went wrong with the others."""

    bodies: dict[int, bytes] = field(default_factory=dict)
    headers: dict[int, ShareHeader] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)
    newest: int | None = None  # the share read last
    decoded_with: int = 0  # how many shares were read at the last decode
    problems: list[str] = field(default_factory=list)


class ShareReader:
    """Reads erasure-coded objects; thread-safe. ``on_bad(object key, peer, state)`` is
    told of each share found missing ("missing") or wrong ("damaged")."""

    def __init__(
        self,
        peers: Sequence[PlacedPeer],
        chooser: ReplicaChooser,
        warnings: WarnOnce,
        on_bad: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.peers = list(peers)
        self._by_name = {p.name: p for p in self.peers}
        self.chooser = chooser
        self._warnings = warnings
        self.on_bad = on_bad
        # The last object rebuilt (a pack whose data share is gone is read span by span).
        self._cache_lock = threading.Lock()
        # Reads of one object's shares at once (threads idle out on their own).
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="share")
        self._cache: tuple[str, bytearray] | None = None

    # --- where each share is -----------------------------------------------------------

    def holders(
        self, placement_id: str, scheme: Scheme, recorded: Mapping[str, int]
    ) -> dict[int, list[PlacedPeer]]:
        """For each share index, the peers to try, best first: the recorded holder, then
        (none recorded) the peer placement gives it."""
        out: dict[int, list[PlacedPeer]] = {i: [] for i in range(scheme.width)}
        for name, index in recorded.items():
            placed = self._by_name.get(name)
            if placed is not None and index < scheme.width:
                out[index].append(placed)
        taken = {p.name for ps in out.values() for p in ps}
        for index, placed in enumerate(choose(placement_id, self.peers, scheme.width)):
            if not out[index] and placed.name not in taken:
                out[index].append(placed)
        return out

    def _plan(self, where: dict[int, list[PlacedPeer]], k: int, skip: set[int]) -> list[int]:
        """Share indices to read, best first: data shares whose peer is up and did not
        just fail, then parity shares likewise, then the rest."""

        def rank(index: int) -> tuple[bool, bool, float, int]:
            peers = where[index]
            usable = any(p.peer.is_up and not self.chooser.stats(p.name).failed for p in peers)
            return (not usable, index >= k, self._wait(peers[0]) if index >= k else 0.0, index)

        return sorted((i for i in where if where[i] and i not in skip), key=rank)

    def _wait(self, placed: PlacedPeer) -> float:
        """The expected wait for a read from ``placed``, as replica_choice weighs it: reads
        in flight there, times its usual time per read. Parity shares are taken in this
        order (the data shares are all needed anyway)."""
        reads = self.chooser.stats(placed.name)
        seconds = reads.seconds if reads.seconds is not None else placed.peer.last_latency
        return (reads.in_flight + 1) * (seconds or 0.0)

    # --- whole objects -------------------------------------------------------------------

    def read_object(self, obj: Coded) -> bytearray:
        """The object, rebuilt from its shares and verified: its SHA-256 is ``obj.sha256``
        when known, else the one its shares name. :class:`ObjectUnreadable` if no ``k``
        shares agree. The last object rebuilt is kept: the spans of a pack whose data
        share is gone are served from one rebuild."""
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == obj.key:
                return self._cache[1]
        out = bytearray(obj.size)
        size = self._rebuild(obj, memoryview(out))
        del out[size:]
        with self._cache_lock:
            self._cache = (obj.key, out)
        return out

    def read_object_into(self, obj: Coded, view: memoryview) -> int:
        """:meth:`read_object` into ``view`` (at least ``obj.size`` bytes), kept nowhere
        else: a chunk object read by restore into its slab. Returns its size."""
        return self._rebuild(obj, view)

    def _rebuild(self, obj: Coded, out: memoryview) -> int:
        """The object rebuilt into ``out`` and verified; its size."""
        scheme = obj.scheme
        where = self.holders(obj.placement_id, scheme, obj.recorded)
        fetched = _Fetched()
        cap = HEADER_SIZE + erasure.segment_size(obj.size, scheme.data)
        while True:
            size = self._decode(fetched, scheme, obj.sha256, out)
            if size is not None:
                return size
            left = self._plan(where, scheme.data, fetched.tried)
            if not left:
                if len(fetched.bodies) >= scheme.data:
                    fetched.problems.append(
                        f"shares {sorted(fetched.bodies)} do not rebuild the object they name"
                    )
                raise ObjectUnreadable(fetched.problems)
            # A group of k that did not verify holds a bad share: one more share at a time.
            need = max(1, scheme.data - len(fetched.bodies))
            batch = left[:need]
            fetched.tried.update(batch)
            # The shares of one round are on different peers: read at once.
            results = self._pool.map(
                lambda i: self._fetch(obj.key, scheme, i, where[i], cap), batch
            )
            for index, (got, problems) in zip(batch, results, strict=True):
                fetched.problems += problems
                if got is not None:
                    fetched.bodies[index], fetched.headers[index] = got
                    fetched.newest = index

    def _fetch(
        self, key: str, scheme: Scheme, index: int, candidates: list[PlacedPeer], cap: int
    ) -> tuple[tuple[bytes, ShareHeader] | None, list[str]]:
        """Share ``index`` from the first candidate that serves a well-formed one: (its
        body and header, or None; what went wrong with the others)."""
        problems: list[str] = []
        skey = share_key(key, scheme, index)
        for placed in candidates:
            name = placed.name
            started = time.monotonic()
            try:
                with self.chooser.reading(name):
                    body = placed.peer.get(skey, max_size=cap)
                header = erasure.parse_header(body)
                if (header.scheme, header.index) != (scheme, index):
                    raise ShareError(f"its header says share {header.index} of {header.scheme}")
            except NotFound:
                self._bad(skey, name, "missing")
                problems.append(f"{name}: share {index} missing")
                continue
            except (PeerError, ShareError) as exc:
                message = exc.message if isinstance(exc, PeerError) else str(exc)
                if isinstance(exc, (MalformedReply, ShareError)):
                    self._warnings.warn(name, "malformed shares", "peer %s: %s", name, message)
                    self._bad(skey, name, "damaged")
                self.chooser.failed(name)
                problems.append(f"{name}: share {index}: {message}")
                continue
            self.chooser.succeeded(name, time.monotonic() - started)
            return (body, header), problems
        return None, problems

    def _decode(
        self, fetched: _Fetched, scheme: Scheme, sha256: str | None, out: memoryview
    ) -> int | None:
        """The object into ``out`` from ``k`` of the shares fetched that name the same
        object (the one ``sha256`` names, if given), verified: its size; None if no such
        ``k`` rebuild it (or it would not fit ``out``)."""
        if len(fetched.bodies) == fetched.decoded_with:
            return None  # nothing new since the last try
        fetched.decoded_with = len(fetched.bodies)
        groups: dict[tuple[int, bytes], list[int]] = {}
        for index, header in fetched.headers.items():
            if sha256 is None or header.object_sha256.hex() == sha256:
                groups.setdefault((header.object_size, header.object_sha256), []).append(index)
        for indices in sorted(groups.values(), key=len, reverse=True):
            if len(indices) < scheme.data:
                continue
            header = fetched.headers[indices[0]]
            # Data shares first (sorted); only subsets with the newest share are new.
            subsets = itertools.combinations(sorted(indices), scheme.data)
            tries = [s for s in subsets if len(indices) == scheme.data or fetched.newest in s]
            if header.object_size > len(out):
                continue  # more than the object can be: not its shares
            for subset in tries[:MAX_DECODES]:
                size = erasure.decode_into({i: fetched.bodies[i] for i in subset}, header, out)
                if erasure.verified(out[:size], header):
                    return size
        return None

    # --- byte ranges ---------------------------------------------------------------------

    def read_range_into(self, obj: Coded, view: memoryview, offset: int, length: int) -> None:
        """Bytes ``[offset, offset + length)`` of the object into ``view[:length]``, from
        its data shares (``obj.size`` must be its size, or its padded size). Not verified
        here: the caller opens what it read (each chunk's AES-GCM tag), and on failure
        calls :meth:`rebuild_range_into`. :class:`ObjectUnreadable` if a data share
        cannot be read (call :meth:`rebuild_range_into`)."""
        scheme = obj.scheme
        where = self.holders(obj.placement_id, scheme, obj.recorded)
        pos = 0
        for index, start, end in erasure.span(offset, length, obj.size, scheme.data):
            skey = share_key(obj.key, scheme, index)
            for placed in where[index]:
                try:
                    with self.chooser.reading(placed.name):
                        placed.peer.get_range_into(skey, view[pos:], start, end - start)
                    break
                except NotFound:
                    self._bad(skey, placed.name, "missing")
                except PeerError as exc:
                    self.chooser.failed(placed.name)
                    log.debug("share %d on %s: %s", index, placed.name, exc.message)
            else:
                raise ObjectUnreadable([f"data share {index} unreadable"])
            pos += end - start

    def rebuild_range_into(self, obj: Coded, view: memoryview, offset: int, length: int) -> None:
        """As :meth:`read_range_into`, from the whole object rebuilt and verified."""
        body = self.read_object(obj)
        if offset + length > len(body):
            raise ObjectUnreadable([f"bytes {offset}+{length} are past its end ({len(body)})"])
        view[:length] = body[offset : offset + length]

    def _bad(self, skey: str, peer: str, state: str) -> None:
        if self.on_bad is not None:
            self.on_bad(skey, peer, state)
