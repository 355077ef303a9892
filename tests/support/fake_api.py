"""An in-memory ApiBackend for testing the HTTP layer without storage."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import replace

from chunkvault.api.backend import (
    ChunkOutcome,
    ChunkTooLarge,
    RequestConflict,
    Status,
    UnknownChunk,
    UnknownRequest,
    UploadRequest,
    UploadResponse,
)

KiB = 1024


class FakeBackend:
    """Just enough of the real contract: OK iff staged and size_in_KB == ceil(bytes/1024),
    idempotent per request_id + canonical body, conflict otherwise."""

    def __init__(self, max_chunk_bytes: int = 1024 * KiB) -> None:
        self.max_chunk_bytes = max_chunk_bytes
        self.staged: dict[str, bytes] = {}
        self.stored: dict[str, bytes] = {}
        self.answers: dict[str, tuple[str, UploadResponse]] = {}
        self.writes = 0
        self.requests: list[UploadRequest] = []
        self.ran_on_event_loop: bool | None = None
        self.status_value = Status()
        self.raise_on_read: Exception | None = None
        self.raise_on_stage: Exception | None = None
        self.started = self.closed = 0
        self.size_hints: list[int | None] = []

    def start(self) -> None:
        self.started += 1

    def close(self) -> None:
        self.closed += 1

    def stage_chunk(self, chunk_id: str, body: Iterable[bytes], size_hint: int | None) -> int:
        try:
            asyncio.get_running_loop()
            self.ran_on_event_loop = True
        except RuntimeError:
            self.ran_on_event_loop = False
        self.size_hints.append(size_hint)
        if self.raise_on_stage is not None:
            raise self.raise_on_stage
        data = b"".join(body)  # a fake may hold it: these bodies are small
        if len(data) > self.max_chunk_bytes:
            raise ChunkTooLarge(chunk_id)
        self.staged[chunk_id] = data
        return len(data)

    def upload(self, request: UploadRequest) -> UploadResponse:
        self.requests.append(request)
        if request.request_id in self.answers:
            canonical, answer = self.answers[request.request_id]
            if canonical != request.canonical():
                raise RequestConflict(request.request_id)
            return replace(answer, replayed=True)
        outcomes = []
        for chunk in request.chunks:
            body = self.staged.get(chunk.id)
            if body is None:
                outcomes.append(ChunkOutcome(chunk.id, "NOTOK", "not staged"))
            elif math.ceil(len(body) / KiB) != chunk.size_in_kb:
                outcomes.append(ChunkOutcome(chunk.id, "NOTOK", "size_in_KB mismatch"))
            else:
                self.stored[chunk.id] = body
                self.writes += 1
                outcomes.append(ChunkOutcome(chunk.id, "OK", "stored", ("p1", "p2")))
        answer = UploadResponse(request.request_id, tuple(outcomes))
        self.answers[request.request_id] = (request.canonical(), answer)
        return answer

    def request_detail(self, request_id: str) -> UploadResponse:
        if request_id not in self.answers:
            raise UnknownRequest(request_id)
        return self.answers[request_id][1]

    def read_chunk(self, chunk_id: str) -> bytes:
        if self.raise_on_read is not None:
            raise self.raise_on_read
        if chunk_id not in self.stored:
            raise UnknownChunk(chunk_id)
        return self.stored[chunk_id]

    def status(self) -> Status:
        return self.status_value
