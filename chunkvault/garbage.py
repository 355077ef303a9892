"""What `gc` deletes and what it repacks, from what the kept versions reference and what
the peers hold. Pure: :mod:`chunkvault.gc` reads the manifests, lists the peers and acts.

An object (chunk object or pack) no kept version references is garbage. It is deleted when
a version gc drops referenced it, an earlier gc condemned it, this machine's catalog
records it (gc holds the writer lock: nothing of this machine's is in flight), or every
copy of it is older than the grace period; any other may be another machine's upload
whose commit is still coming, and stays (``retention.grace_hours``).

A pack some kept version still references is repacked, once the bytes no kept version
references reach ``retention.repack_threshold`` of its size and the same rule allows
touching it: its live chunks are copied into a new pack, the manifests are rewritten to
point there, and the old pack is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from chunkvault.manifest import ChunkRef
from chunkvault.packs import HEADER


@dataclass
class Listed:
    """One object as the peers list it: its size and, per peer, when it was written."""

    size: int = 0
    holders: dict[str, float | None] = field(default_factory=dict)
    # The key of each holder's copy or share (an erasure-coded object's key differs per
    # share), and the share index each holds of one.
    keys: dict[str, list[str]] = field(default_factory=dict)
    shares: dict[str, int] = field(default_factory=dict)
    scheme: str | None = None

    def copies_bytes(self) -> int:
        return self.size * len(self.holders)

    def older_than(self, cutoff: float) -> bool:
        """Every copy written before ``cutoff`` (a copy of unknown age is young)."""
        return all(when is not None and when < cutoff for when in self.holders.values())


@dataclass(frozen=True)
class Repack:
    pack: str
    live: tuple[ChunkRef, ...]  # one ref per live chunk id, in pack order
    listed: Listed

    @property
    def live_bytes(self) -> int:
        return sum(r.length for r in self.live)

    @property
    def new_size(self) -> int:
        return len(HEADER) + self.live_bytes

    def copies(self, replicas: int) -> int:
        """Copies of the new pack: R, or as many as the old one had (a flow's replicas)."""
        return max(replicas, len(self.listed.holders))


@dataclass
class Plan:
    # (kind, id) -> where it is: "chunk" objects and whole "pack"s to delete.
    delete: dict[tuple[str, str], Listed] = field(default_factory=dict)
    repack: list[Repack] = field(default_factory=list)
    # Garbage left alone: too young (uploads that may still commit), or under the
    # threshold; (objects, bytes of all their copies).
    young: tuple[int, int] = (0, 0)
    below_threshold: tuple[int, int] = (0, 0)
    # Garbage a write-only host stored, left alone: it may still deduplicate against it
    # (:meth:`spare`); (objects, bytes of all their copies).
    writers: tuple[int, int] = (0, 0)

    def spare(self, stored_by_writer: Callable[[tuple[str, str], Listed], bool]) -> None:
        """Leave out of the plan every object ``stored_by_writer``: a write-only host
        cannot learn what gc deletes, and may deduplicate a new file against any chunk it
        stored (docs/usage.md, "Protecting a machine you don't fully trust")."""
        spared = [0, 0]

        def keep(key: tuple[str, str], listed: Listed) -> bool:
            if not stored_by_writer(key, listed):
                return False
            spared[0] += 1
            spared[1] += listed.copies_bytes()
            return True

        self.delete = {k: v for k, v in self.delete.items() if not keep(k, v)}
        self.repack = [r for r in self.repack if not keep(("pack", r.pack), r.listed)]
        self.writers = (spared[0], spared[1])

    def freed_bytes(self, replicas: int) -> int:
        """Bytes of every copy deleted, less the new packs' copies (``replicas`` each)."""
        deleted = sum(listed.copies_bytes() for listed in self.delete.values())
        repacked = sum(r.listed.copies_bytes() for r in self.repack)
        written = sum(r.new_size * r.copies(replicas) for r in self.repack)
        return deleted + repacked - written


def plan(
    live: Iterable[ChunkRef],
    dropped: Iterable[ChunkRef],
    chunks: Mapping[str, Listed],
    packs: Mapping[str, Listed],
    threshold: float,
    cutoff: float,
    condemned: Iterable[tuple[str, str]] = (),
    ours: Iterable[tuple[str, str]] = (),
) -> Plan:
    """``live``: the chunk refs of every kept version; ``dropped``: those of the versions
    being dropped; ``chunks`` / ``packs``: what the peers list; ``cutoff``: the grace
    period's start (seconds since the epoch); ``condemned``: what an earlier gc
    condemned (and was cut short before deleting); ``ours``: what this machine's catalog
    records."""
    live_chunks: set[str] = set()
    live_in_pack: dict[str, dict[str, ChunkRef]] = {}
    for ref in live:
        if ref.pack is None:
            live_chunks.add(ref.id)
        else:
            live_in_pack.setdefault(ref.pack, {}).setdefault(ref.id, ref)
    doomed = set(condemned) | set(ours)
    for ref in dropped:
        doomed.add(("chunk", ref.id) if ref.pack is None else ("pack", ref.pack))

    result = Plan()
    young = [0, 0]
    below = [0, 0]

    def touchable(key: tuple[str, str], listed: Listed) -> bool:
        if key in doomed or listed.older_than(cutoff):
            return True
        young[0] += 1
        young[1] += listed.copies_bytes()
        return False

    for chunk_id, listed in sorted(chunks.items()):
        if chunk_id not in live_chunks and touchable(("chunk", chunk_id), listed):
            result.delete[("chunk", chunk_id)] = listed
    for pack_id, listed in sorted(packs.items()):
        refs = live_in_pack.get(pack_id)
        if refs is None:
            if touchable(("pack", pack_id), listed):
                result.delete[("pack", pack_id)] = listed
            continue
        spans = {(r.offset, r.length) for r in refs.values()}
        used = len(HEADER) + sum(length for _, length in spans)
        if used >= listed.size:
            continue  # no garbage (or a copy shorter than the manifests say: check's)
        if 1 - used / listed.size < threshold:
            below[0] += 1
            below[1] += (listed.size - used) * len(listed.holders)
            continue
        if touchable(("pack", pack_id), listed):
            live = tuple(sorted(refs.values(), key=lambda r: r.offset))
            result.repack.append(Repack(pack_id, live, listed))
    result.young = (young[0], young[1])
    result.below_threshold = (below[0], below[1])
    return result
