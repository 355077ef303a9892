"""What storing one chunk came to: the type the upload service, the pack writer and the
pipeline hand each other (a module of its own so that none of them imports another for it)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StoredChunk:
    chunk_id: str
    plain_size: int
    wrapped_dek: bytes
    peers: tuple[str, ...]
    ok: bool
    reason: str  # "stored", "deduplicated", or why it failed
    sent_bytes: int = 0
    target: int = 0  # replicas aimed at
    # A packed chunk (chunkvault.packs): its pack, and where its body sits in it.
    pack: str | None = None
    offset: int = 0
    length: int = 0


@dataclass(frozen=True)
class Written:
    """Where one object went: the peers written, the errors of those that failed, and for
    an erasure-coded object the index of the share each peer got."""

    peers: list[str]
    errors: list[str]
    shares: dict[str, int] | None = None


def settled(value: T) -> Future[T]:
    """``value`` as a future that is already done."""
    future: Future[T] = Future()
    future.set_result(value)
    return future


def stored_reason(written: int, target: int) -> str:
    return (
        "stored"
        if written >= target
        else f"stored on {written} of {target} peers (under-replicated)"
    )
