"""Property-based run of the API against its own OpenAPI schema (in-process ASGI): whatever
schemathesis generates, valid or not, the app never answers 5xx."""

from __future__ import annotations

import math
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from chunkvault.api.app import create_app
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

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeBackend:
    """Small in-memory backend with the real contract's error paths (conflict, unknown ids,
    too large) so generated inputs reach every mapping."""

    max_chunk_bytes = 64 * 1024

    def __init__(self) -> None:
        self.staged: dict[str, bytes] = {}
        self.answers: dict[str, tuple[str, UploadResponse]] = {}

    def stage_chunk(self, chunk_id: str, body: bytes) -> None:
        if len(body) > self.max_chunk_bytes:
            raise ChunkTooLarge(chunk_id)
        self.staged[chunk_id] = body

    def upload(self, request: UploadRequest) -> UploadResponse:
        if request.request_id in self.answers:
            canonical, answer = self.answers[request.request_id]
            if canonical != request.canonical():
                raise RequestConflict(request.request_id)
            return answer
        outcomes = tuple(
            ChunkOutcome(c.id, "OK", "stored", ("p1",))
            if c.id in self.staged and math.ceil(len(self.staged[c.id]) / 1024) == c.size_in_kb
            else ChunkOutcome(c.id, "NOTOK", "not staged or size mismatch")
            for c in request.chunks
        )
        answer = UploadResponse(request.request_id, outcomes)
        self.answers[request.request_id] = (request.canonical(), answer)
        return answer

    def request_detail(self, request_id: str) -> UploadResponse:
        if request_id not in self.answers:
            raise UnknownRequest(request_id)
        return self.answers[request_id][1]

    def read_chunk(self, chunk_id: str) -> bytes:
        if chunk_id not in self.staged:
            raise UnknownChunk(chunk_id)
        return self.staged[chunk_id]

    def status(self) -> Status:
        return Status(peers=[{"name": "p1", "up": True}], queue_depth=1)


app = create_app(FakeBackend(), TOKEN)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)


@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error(case: Any) -> None:
    response = case.call(headers=AUTH)
    case.validate_response(response, checks=[not_a_server_error])
