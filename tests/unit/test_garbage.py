"""What gc deletes and repacks (chunkvault.garbage), from refs and listings alone."""

from __future__ import annotations

from chunkvault.garbage import Listed, plan
from chunkvault.manifest import ChunkRef
from chunkvault.packs import HEADER

OLD, NEW, CUTOFF = 100.0, 300.0, 200.0
PACK = "aa" * 32


def cid(n: int) -> str:
    return f"{n:064x}"


def packed(n: int, offset: int, length: int, pack: str = PACK) -> ChunkRef:
    return ChunkRef(cid(n), length, b"", pack, offset, length)


def listed(size: int, when: float = OLD, peers: tuple[str, ...] = ("p0", "p1")) -> Listed:
    return Listed(size, dict.fromkeys(peers, when))


def test_unreferenced_objects_go_when_dropped_condemned_ours_or_old_and_stay_when_young() -> None:
    chunks = {cid(n): listed(1000, NEW) for n in range(1, 6)}
    chunks[cid(6)] = listed(1000, OLD)
    result = plan(
        live=[ChunkRef(cid(1), 1000, b"")],
        dropped=[ChunkRef(cid(2), 1000, b"")],
        chunks=chunks, packs={}, threshold=0.3, cutoff=CUTOFF,
        condemned=[("chunk", cid(3))], ours=[("chunk", cid(4))],
    )  # fmt: skip
    assert sorted(k[1] for k in result.delete) == [cid(2), cid(3), cid(4), cid(6)]
    assert result.young == (1, 2000)  # cid(5): another machine's upload, maybe
    assert result.freed_bytes(2) == 4 * 2000


def test_a_copy_of_unknown_age_is_young() -> None:
    result = plan([], [], {cid(1): Listed(10, {"p0": OLD, "p1": None})}, {}, 0.3, CUTOFF)
    assert result.delete == {} and result.young == (1, 20)


def test_a_pack_is_repacked_at_the_threshold_and_left_below_it() -> None:
    size = len(HEADER) + 1000
    live = [packed(1, len(HEADER), 300), packed(2, len(HEADER) + 300, 390)]
    # garbage: 310 of the 1005 bytes (the header counts as used): 30.8 %
    at = plan(live, [], {}, {PACK: listed(size)}, 0.3, CUTOFF)
    assert [r.pack for r in at.repack] == [PACK] and at.repack[0].live_bytes == 690
    assert at.freed_bytes(2) == 2 * size - 2 * (len(HEADER) + 690)
    below = plan(live, [], {}, {PACK: listed(size)}, 0.31, CUTOFF)
    assert below.repack == [] and below.below_threshold == (1, 2 * 310)


def test_a_pack_nothing_references_is_deleted_whole_and_a_full_one_is_left() -> None:
    other = "bb" * 32
    result = plan(
        [packed(1, len(HEADER), 500, other)], [packed(2, len(HEADER), 500)], {},
        {PACK: listed(len(HEADER) + 500), other: listed(len(HEADER) + 500)}, 0.3, CUTOFF,
    )  # fmt: skip
    assert list(result.delete) == [("pack", PACK)] and result.repack == []


def test_a_young_pack_with_garbage_is_not_repacked_unless_gc_knows_whose_garbage_it_is() -> None:
    live = [packed(1, len(HEADER), 100)]
    packs = {PACK: listed(len(HEADER) + 1000, NEW)}
    assert plan(live, [], {}, packs, 0.3, CUTOFF).repack == []
    dropped = [packed(2, len(HEADER) + 100, 900)]
    assert len(plan(live, dropped, {}, packs, 0.3, CUTOFF).repack) == 1


def test_a_chunk_referenced_twice_in_a_pack_is_carried_once() -> None:
    live = [packed(1, len(HEADER), 100), packed(1, len(HEADER), 100)]
    result = plan(live, [], {}, {PACK: listed(len(HEADER) + 1000)}, 0.3, CUTOFF)
    assert [r.id for r in result.repack[0].live] == [cid(1)]


def test_what_a_write_only_host_stored_is_spared_and_counted() -> None:
    from chunkvault.layout import pack_metadata, sealed_object

    refs = [packed(1, len(HEADER), 100, pack="bb" * 32)]
    result = plan(
        [], refs, {cid(7): listed(500), cid(8): listed(300)},
        {"bb" * 32: listed(len(HEADER) + 100)}, 0.3, CUTOFF,
    )  # fmt: skip
    assert set(result.delete) == {("chunk", cid(7)), ("chunk", cid(8)), ("pack", "bb" * 32)}
    writers = {("chunk", cid(7)), ("pack", "bb" * 32)}
    result.spare(lambda key, _: key in writers)
    assert set(result.delete) == {("chunk", cid(8))}
    assert result.writers == (2, 2 * 500 + 2 * (len(HEADER) + 100))
    # How an object says it is a writer's: a chunk's generation 0, a pack's flag.
    assert sealed_object({"cv-v": "1", "cv-gen": "0"})
    assert not sealed_object({"cv-v": "1", "cv-gen": "3"})
    assert sealed_object(pack_metadata(1, "ab" * 32, sealed=True))
    assert not sealed_object(pack_metadata(1, "ab" * 32))
