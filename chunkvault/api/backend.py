"""What the HTTP layer needs from the rest of chunkvault. The daemon passes the real
implementation (upload service + catalog + staging); API tests may pass a fake one.

The request/answer types and the exceptions the core raises are the core's own (imported
here, never the other way round); the exceptions below exist only at this boundary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from chunkvault.staging import StagingFull
from chunkvault.status import Status
from chunkvault.upload_requests import (
    ChunkOutcome,
    RequestConflict,
    SendResult,
    UnknownRequest,
    UploadChunk,
    UploadRequest,
    UploadResponse,
)

__all__ = [
    "ApiBackend",
    "BackendUnavailable",
    "ChunkOutcome",
    "ChunkTooLarge",
    "ReadRefused",
    "RequestConflict",
    "SendResult",
    "StagingFull",
    "Status",
    "UnknownChunk",
    "UnknownRequest",
    "UploadChunk",
    "UploadRequest",
    "UploadResponse",
]


class ChunkTooLarge(Exception):
    """A staged body over ``api.max_chunk_bytes`` (HTTP 413)."""


class UnknownChunk(Exception):
    """No chunk with that client id (HTTP 404)."""


class ReadRefused(Exception):
    """This host stores but never reads back: it holds a write-only credential (403)."""


class BackendUnavailable(Exception):
    """The backend cannot serve now, e.g. every replica of a chunk is unreachable (503)."""


class ApiBackend(Protocol):
    max_chunk_bytes: int

    def start(self) -> None:
        """The app starts serving (background work such as staging sweeps may begin)."""

    def close(self) -> None:
        """The app stopped serving."""

    def stage_chunk(self, chunk_id: str, body: Iterable[bytes], size_hint: int | None) -> int:
        """Stage client chunk ``chunk_id`` from ``body``'s pieces as they arrive, never
        holding it whole; returns the bytes staged. ``size_hint`` is the declared length,
        if any. Re-staging replaces the bytes. Anything raised, by ``body`` (client gone,
        over a limit) or here, stages nothing. Raises ChunkTooLarge, StagingFull."""

    def upload(self, request: UploadRequest) -> UploadResponse:
        """Store every named staged chunk (OK/NOTOK each, in request order). Idempotent per
        request_id; raises RequestConflict for a reused id with another body."""

    def request_detail(self, request_id: str) -> UploadResponse:
        """The recorded answer with per-chunk reason and peers. Raises UnknownRequest."""

    def read_chunk(self, chunk_id: str) -> bytes:
        """The decrypted bytes of an uploaded client chunk. Raises UnknownChunk,
        BackendUnavailable, ReadRefused."""

    def status(self) -> Status:
        """Peers up/down, queue depth, in-flight work, under-replicated count."""
