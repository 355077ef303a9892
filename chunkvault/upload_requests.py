"""The seed's upload request and its answer, as the upload service takes and gives them.

The core owns these types; the HTTP layer (``chunkvault.api``) translates its wire models
to and from them, so dependencies point one way: api -> core, never back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SendResult = Literal["OK", "NOTOK"]


@dataclass(frozen=True)
class UploadChunk:
    id: str
    size_in_kb: int


@dataclass(frozen=True)
class UploadRequest:
    """The seed's ``POST /upload`` body, validated."""

    request_id: str
    chunks: tuple[UploadChunk, ...]

    def canonical(self) -> str:
        """Canonical form for idempotency: same request_id + same canonical body -> same
        answer; same request_id + another body -> conflict."""
        parts = ",".join(f"{c.id}:{c.size_in_kb}" for c in self.chunks)
        return f"{self.request_id}|{parts}"


@dataclass(frozen=True)
class ChunkOutcome:
    id: str
    send: SendResult
    # Why NOTOK, or "stored" (also for a chunk that was already stored: clients must not
    # learn what the vault holds, see docs/api.md).
    reason: str = ""
    peers: tuple[str, ...] = ()  # where the replicas are


@dataclass(frozen=True)
class UploadResponse:
    request_id: str
    chunks: tuple[ChunkOutcome, ...]
    replayed: bool = False  # True when answered from the idempotency record


class RequestConflict(Exception):
    """Same request_id, different body."""


class UnknownRequest(Exception):
    """No upload request with that id."""
