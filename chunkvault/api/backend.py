"""What the HTTP layer needs from the rest of chunkvault. The daemon passes the real
implementation (upload service + catalog + staging); API tests may pass a fake one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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
    reason: str = ""  # why NOTOK, or "stored" / "deduplicated"
    peers: tuple[str, ...] = ()  # where the replicas are


@dataclass(frozen=True)
class UploadResponse:
    request_id: str
    chunks: tuple[ChunkOutcome, ...]
    replayed: bool = False  # True when answered from the idempotency record


class RequestConflict(Exception):
    """Same request_id, different body (HTTP 409)."""


class ChunkTooLarge(Exception):
    """A staged body over ``api.max_chunk_bytes`` (HTTP 413)."""


class UnknownChunk(Exception):
    """No chunk with that client id (HTTP 404)."""


class UnknownRequest(Exception):
    """No upload request with that id (HTTP 404)."""


class BackendUnavailable(Exception):
    """The backend cannot serve now, e.g. every replica of a chunk is unreachable (503)."""


@dataclass
class Status:
    peers: list[dict[str, Any]] = field(default_factory=list)  # name, up, last_error, ...
    queue_depth: int = 0
    in_flight: int = 0
    under_replicated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ApiBackend(Protocol):
    max_chunk_bytes: int

    def stage_chunk(self, chunk_id: str, body: bytes) -> None:
        """Keep the bytes of client chunk ``chunk_id`` until an upload request names it.
        Re-staging the same id replaces the bytes. Raises ChunkTooLarge."""

    def upload(self, request: UploadRequest) -> UploadResponse:
        """Store every named staged chunk (OK/NOTOK each, in request order). Idempotent per
        request_id; raises RequestConflict for a reused id with another body."""

    def request_detail(self, request_id: str) -> UploadResponse:
        """The recorded answer with per-chunk reason and peers. Raises UnknownRequest."""

    def read_chunk(self, chunk_id: str) -> bytes:
        """The decrypted bytes of an uploaded client chunk. Raises UnknownChunk,
        BackendUnavailable."""

    def status(self) -> Status:
        """Peers up/down, queue depth, in-flight work, under-replicated count."""
