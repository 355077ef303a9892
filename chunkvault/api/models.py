"""Wire models of the HTTP API. Precise on purpose: the OpenAPI schema generated from them is
what clients and the schemathesis tests generate requests from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from chunkvault.api import backend as be

ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
MAX_CHUNKS_PER_REQUEST = 1000
# JSON's safe-integer ceiling: larger sizes cannot be a real chunk and may overflow int64
# columns downstream, so they are rejected here as malformed rather than sent on.
MAX_SIZE_IN_KB = 2**53 - 1

ChunkId = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=128)]
RequestId = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=128)]


class _Strict(BaseModel):
    # Strict: no "12" -> 12 or true -> 1 coercion; extra keys are a client bug, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class UploadChunkIn(_Strict):
    id: ChunkId
    size_in_KB: StrictInt = Field(ge=0, le=MAX_SIZE_IN_KB)


class UploadIn(_Strict):
    """The seed's ``POST /upload`` body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "chunks": [
                        {"id": "c1", "size_in_KB": 120},
                        {"id": "c2", "size_in_KB": 200},
                        {"id": "c3", "size_in_KB": 610},
                    ],
                    "request_id": "1234",
                }
            ]
        }
    )

    chunks: list[UploadChunkIn] = Field(min_length=1, max_length=MAX_CHUNKS_PER_REQUEST)
    request_id: RequestId

    @field_validator("chunks")
    @classmethod
    def _unique_ids(cls, chunks: list[UploadChunkIn]) -> list[UploadChunkIn]:
        seen: set[str] = set()
        for index, chunk in enumerate(chunks):
            if chunk.id in seen:
                raise PydanticCustomError(
                    "duplicate_id",
                    "duplicate id '{id}' at chunks[{index}]",
                    {"id": chunk.id, "index": index},
                )
            seen.add(chunk.id)
        return chunks

    def to_backend(self) -> be.UploadRequest:
        return be.UploadRequest(
            request_id=self.request_id,
            chunks=tuple(be.UploadChunk(id=c.id, size_in_kb=c.size_in_KB) for c in self.chunks),
        )


class ChunkSendOut(BaseModel):
    id: str
    send: Literal["OK", "NOTOK"]


class UploadOut(BaseModel):
    """Exactly the seed's response: ``chunks`` (request order) then ``request_id``."""

    chunks: list[ChunkSendOut]
    request_id: str

    @classmethod
    def from_backend(cls, answer: be.UploadResponse) -> UploadOut:
        return cls(
            chunks=[ChunkSendOut(id=c.id, send=c.send) for c in answer.chunks],
            request_id=answer.request_id,
        )


class ChunkDetailOut(BaseModel):
    id: str
    send: Literal["OK", "NOTOK"]
    reason: str
    peers: list[str]


class UploadDetailOut(BaseModel):
    request_id: str
    chunks: list[ChunkDetailOut]

    @classmethod
    def from_backend(cls, answer: be.UploadResponse) -> UploadDetailOut:
        return cls(
            request_id=answer.request_id,
            chunks=[
                ChunkDetailOut(id=c.id, send=c.send, reason=c.reason, peers=list(c.peers))
                for c in answer.chunks
            ],
        )


class StagedOut(BaseModel):
    id: str
    size: int


class HealthOut(BaseModel):
    status: Literal["ok"]


class StatusOut(BaseModel):
    peers: list[dict[str, Any]]
    queue_depth: int
    in_flight: int
    under_replicated: int
    extra: dict[str, Any]

    @classmethod
    def from_backend(cls, status: be.Status) -> StatusOut:
        return cls(
            peers=plain_json(status.peers),
            queue_depth=status.queue_depth,
            in_flight=status.in_flight,
            under_replicated=status.under_replicated,
            extra=plain_json(status.extra),
        )


def plain_json(value: Any) -> Any:
    """``value`` made JSON-safe: the backend's free-form status dicts may hold datetimes,
    exceptions or NaN, none of which may turn a status read into a 500."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: one human-readable string naming the offending field."""

    error: str


_MAX_ERROR_CHARS = 1000  # messages echo field names and paths: keep a hostile one small


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 3] + "..."
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# Documented on every authenticated route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token"},
}

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "json_invalid": "is not valid JSON",
}
_MAX_REPORTED = 5  # a 1000-chunk body of bad ids must not produce a megabyte of error text


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """FastAPI/pydantic errors as one line: ``chunks[1].size_in_KB: must be an integer``."""
    parts = [f"{_field_name(e.get('loc', ()))}: {_message(e)}" for e in errors[:_MAX_REPORTED]]
    if len(errors) > _MAX_REPORTED:
        parts.append(f"and {len(errors) - _MAX_REPORTED} more errors")
    return "; ".join(parts) or "invalid request"


def _field_name(loc: Sequence[Any]) -> str:
    source, *path = loc or ("body",)
    name = "" if source == "body" else str(source)
    for part in path:
        if isinstance(part, int):
            if source == "body" and not name:
                break  # json_invalid: loc is ("body", <character offset>)
            name += f"[{part}]"
        else:
            part = str(part) if len(str(part)) <= 64 else f"{str(part)[:61]}..."
            name += f".{part}" if name else part
    return name or "body"


def _message(error: Any) -> str:
    kind = error.get("type", "")
    if kind in _MESSAGES:
        message = _MESSAGES[kind]
        detail = (error.get("ctx") or {}).get("error")
        return f"{message} ({detail})" if kind == "json_invalid" and detail else message
    text = str(error.get("msg", "invalid value"))
    return text[:1].lower() + text[1:]
