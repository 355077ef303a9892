"""What to fetch to rebuild one file, and where each piece goes: pure, no I/O.

A manifest lists the file's chunks in order; chunk ``i`` starts where chunk ``i-1`` ended.
Each distinct chunk of a file is fetched once and written at every offset where it occurs
(a file of zeros is one chunk repeated), so a fetch is a chunk plus its offsets. Fetches
keep the file's order, so a big file is read front to back and its chunks are spread over
many connections at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkvault import names
from chunkvault.errors import ChunkvaultError
from chunkvault.manifest import ChunkRef, Manifest


@dataclass(frozen=True)
class Fetch:
    """One chunk to read once and write at ``offsets`` (bytes from the file's start)."""

    chunk_id: str
    size: int
    wrapped_dek: bytes
    offsets: tuple[int, ...]
    # A packed chunk: its pack, and where its sealed body sits in it (chunkvault.packs).
    pack: str | None = None
    pack_offset: int = 0
    length: int = 0


def plan_fetches(manifest: Manifest) -> list[Fetch]:
    """The fetches that rebuild ``manifest``'s file, in file order (first occurrence).

    Raises :class:`ChunkvaultError` if the chunks do not add up to the file's size, or one
    chunk id is listed with two sizes: such a manifest cannot be restored faithfully."""
    offsets: dict[str, list[int]] = {}
    first: dict[str, ChunkRef] = {}
    position = 0
    for ref in manifest.chunks:
        known = first.setdefault(ref.id, ref)
        if known.size != ref.size:
            raise ChunkvaultError(
                f"{names.show(manifest.path)}: its manifest lists chunk {ref.id[:12]} with two "
                f"sizes ({known.size} and {ref.size})",
                "restore another version of it (`chunkvault ls --versions`)",
            )
        offsets.setdefault(ref.id, []).append(position)
        position += ref.size
    if position != manifest.size:
        raise ChunkvaultError(
            f"{names.show(manifest.path)}: its chunks add up to {position} bytes, its manifest "
            f"says {manifest.size}",
            "restore another version of it (`chunkvault ls --versions`)",
        )
    return [
        Fetch(chunk_id, ref.size, ref.wrapped_dek, tuple(offsets[chunk_id]), ref.pack,
              ref.offset, ref.length)
        for chunk_id, ref in first.items()
    ]  # fmt: skip
