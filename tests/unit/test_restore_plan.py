"""Restore planning (pure): which chunks to fetch for a file, and where each one goes."""

from __future__ import annotations

import pytest

from chunkvault.errors import ChunkvaultError
from chunkvault.manifest import ChunkRef, Manifest
from chunkvault.restore_plan import Fetch, plan_fetches


def manifest(sizes_and_ids: list[tuple[str, int]], size: int | None = None) -> Manifest:
    refs = tuple(ChunkRef(cid * 64, n, b"dek-" + cid.encode()) for cid, n in sizes_and_ids)
    total = sum(n for _, n in sizes_and_ids) if size is None else size
    return Manifest("dir/file.bin", total, 0, 0o644, "0" * 64, refs)


def test_each_chunk_goes_where_the_previous_one_ended() -> None:
    plan = plan_fetches(manifest([("a", 10), ("b", 5), ("c", 7)]))
    assert plan == [
        Fetch("a" * 64, 10, b"dek-a", (0,)),
        Fetch("b" * 64, 5, b"dek-b", (10,)),
        Fetch("c" * 64, 7, b"dek-c", (15,)),
    ]


def test_a_repeated_chunk_is_fetched_once_and_written_at_every_offset() -> None:
    plan = plan_fetches(manifest([("z", 4), ("z", 4), ("a", 3), ("z", 4)]))
    assert plan == [Fetch("z" * 64, 4, b"dek-z", (0, 4, 11)), Fetch("a" * 64, 3, b"dek-a", (8,))]


def test_an_empty_file_needs_no_fetch() -> None:
    assert plan_fetches(manifest([], size=0)) == []


def test_chunks_that_do_not_add_up_to_the_size_are_refused_with_what_to_do() -> None:
    with pytest.raises(ChunkvaultError, match="add up to 15 bytes, its manifest says 16") as err:
        plan_fetches(manifest([("a", 10), ("b", 5)], size=16))
    assert "ls --versions" in str(err.value)


def test_one_chunk_with_two_sizes_is_refused() -> None:
    with pytest.raises(ChunkvaultError, match="with two sizes"):
        plan_fetches(manifest([("a", 10), ("a", 11)]))
