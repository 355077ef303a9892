"""The FastAPI app. Routes only translate: validate -> call :class:`ApiBackend` (in a worker
thread: its calls block on disk and network) -> shape the response. Every error body is
``{"error": "..."}``. The wire format is documented in docs/api.md."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.message import Message as _MimeHeader
from typing import Annotated, Any

import anyio
import anyio.from_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkvault.api import backend as be
from chunkvault.api.metrics import ApiMetrics, MetricsMiddleware
from chunkvault.api.models import (
    ERROR_RESPONSES,
    ID_PATTERN,
    ErrorOut,
    HealthOut,
    StagedOut,
    StatusOut,
    UploadDetailOut,
    UploadIn,
    UploadOut,
    describe_validation_errors,
    error_response,
)

__all__ = ["UPLOAD_BODY_LIMIT", "create_app"]

log = logging.getLogger(__name__)

UPLOAD_BODY_LIMIT = 1024 * 1024  # every body but PUT /chunks/{id}; 1000 chunks need ~170 KiB
# A PUT body that sends nothing for this long is dropped: a stalled client must not hold
# its share of api.staging_quota (and a connection) for ever.
BODY_IDLE_SECONDS = 60.0

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api.token>`")
ChunkIdPath = Annotated[str, Path(alias="id", pattern=ID_PATTERN, min_length=1, max_length=128)]
RequestIdPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=128)]

# Backend exception -> (status, what went wrong; the exception's text is appended).
_BACKEND_ERRORS: dict[type[Exception], tuple[int, str]] = {
    be.RequestConflict: (409, "request_id already used with another body"),
    be.ChunkTooLarge: (413, "chunk too large"),
    # 507, not 413: the request is fine, the server's staging space is (for now) used up;
    # a client may retry once staged chunks are uploaded or expire (see docs/api.md).
    be.StagingFull: (507, "staging quota exceeded"),
    be.ReadRefused: (
        403,
        "this host holds a write-only credential: it stores chunks but cannot read them back",
    ),
    be.UnknownChunk: (404, "unknown chunk"),
    be.UnknownRequest: (404, "unknown request_id"),
    be.BackendUnavailable: (503, "backend unavailable, retry later"),
}


def _err(*codes: int) -> dict[int | str, dict[str, Any]]:
    # Listing 422 also replaces FastAPI's default validation-error schema with ours.
    return {code: {"model": ErrorOut} for code in codes}


def create_app(
    backend: be.ApiBackend,
    token: str | None,
    *,
    allow_no_token: bool = False,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the API. ``app.state`` holds ``backend``, ``registry`` (the one ``GET /metrics``
    exposes; the daemon may register its own metrics on it) and ``metrics`` (ApiMetrics).

    A ``None`` or empty token would leave every route open to whatever can reach the socket,
    so it is refused unless ``allow_no_token`` says that is intended."""
    if not token and not allow_no_token:
        raise ValueError("refusing to serve the API without a token (set api.token)")
    app = FastAPI(
        title="chunkvault",
        summary="Stage chunks, upload them encrypted and replicated, read them back.",
        version="1",
        openapi_url=None,  # served by our own route, behind the token like everything else
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.backend = backend
    app.state.token = token.encode() if token else None
    app.state.registry = registry if registry is not None else CollectorRegistry()
    app.state.metrics = ApiMetrics(app.state.registry)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for exc_type in _BACKEND_ERRORS:
        app.add_exception_handler(exc_type, _backend_error)
    app.add_exception_handler(Exception, _internal_error)

    app.add_middleware(BodyLimitMiddleware, limit_for=lambda scope: _body_limit(backend, scope))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts all

    app.include_router(_open)
    app.include_router(_authed, dependencies=[Depends(_require_token)], responses=ERROR_RESPONSES)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    backend: be.ApiBackend = app.state.backend
    await run_in_threadpool(backend.start)
    try:
        yield
    finally:
        await run_in_threadpool(backend.close)


async def _require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected: bytes | None = request.app.state.token
    if expected is None:
        return
    # Bytes, not str: compare_digest raises TypeError on non-ASCII str (a 500). Starlette
    # decodes headers as latin-1, so encoding back gives the exact bytes that were sent.
    given = credentials.credentials.encode("latin-1") if credentials else b""
    if not given or not hmac.compare_digest(given, expected):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


async def _require_json(request: Request) -> None:
    header = _MimeHeader()
    header["content-type"] = request.headers.get("content-type", "")
    if header.get_content_type() != "application/json":
        raise HTTPException(415, "Content-Type must be application/json")


# --- routes -----------------------------------------------------------------------------

_open = APIRouter()
_authed = APIRouter()
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@_open.get("/health", response_model=HealthOut, summary="Liveness; no token needed")
async def health() -> HealthOut:
    return HealthOut(status="ok")


@_authed.put(
    "/chunks/{id}",
    status_code=201,
    response_model=StagedOut,
    summary="Stage a chunk's raw bytes until a POST /upload names it",
    responses=_err(408, 413, 422, 507),
    openapi_extra={"requestBody": {"required": True, "content": _OCTETS}},
)
async def put_chunk(request: Request, chunk_id: ChunkIdPath) -> Response | StagedOut:
    backend: be.ApiBackend = request.app.state.backend
    # Streamed to the backend piece by piece (BodyLimitMiddleware stops it at
    # backend.max_chunk_bytes): the body is never in memory whole.
    pieces = _BodyPieces(request)
    try:
        size = await run_in_threadpool(
            backend.stage_chunk, chunk_id, pieces, _content_length(request.scope)
        )
    except ClientDisconnect:  # nobody is left to read the answer; the metrics count it
        return error_response(400, "client disconnected before the body was complete")
    except _BodyStalled:
        return error_response(408, f"no body bytes for {BODY_IDLE_SECONDS:g} s")
    finally:
        await pieces.aclose()
    request.app.state.metrics.staged_bytes.inc(size)
    return StagedOut(id=chunk_id, size=size)


class _BodyStalled(Exception):
    pass


class _BodyPieces:
    """A request body as a plain iterator for a worker thread: each piece is pulled from the
    event loop when the backend asks for it, so one piece at a time is in memory and a slow
    disk slows the client down (the server stops reading) instead of filling a buffer."""

    def __init__(self, request: Request) -> None:
        self._stream = request.stream()

    def __iter__(self) -> _BodyPieces:
        return self

    def __next__(self) -> bytes:
        piece = anyio.from_thread.run(self._next)
        if piece is None:
            raise StopIteration
        return piece

    async def _next(self) -> bytes | None:
        try:
            while True:
                with anyio.fail_after(BODY_IDLE_SECONDS):
                    piece = await self._stream.__anext__()
                if piece:  # Starlette ends the stream with an empty piece
                    return piece
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise _BodyStalled from None

    async def aclose(self) -> None:
        await self._stream.aclose()


@_authed.get(
    "/chunks/{id}",
    response_class=Response,
    summary="The decrypted bytes of an uploaded chunk",
    responses={200: {"content": _OCTETS}, **_err(403, 404, 422, 503)},
)
async def get_chunk(request: Request, chunk_id: ChunkIdPath) -> Response:
    data = await run_in_threadpool(request.app.state.backend.read_chunk, chunk_id)
    return Response(content=data, media_type="application/octet-stream")


@_authed.post(
    "/upload",
    response_model=UploadOut,
    summary="Store staged chunks; one OK/NOTOK per chunk, in request order",
    dependencies=[Depends(_require_json)],
    responses=_err(409, 413, 415, 422),
)
async def post_upload(request: Request, body: UploadIn) -> UploadOut:
    answer = await run_in_threadpool(request.app.state.backend.upload, body.to_backend())
    if not answer.replayed:  # a replay wrote nothing: do not count its outcomes twice
        for chunk in answer.chunks:
            request.app.state.metrics.upload_chunks.labels(send=chunk.send).inc()
    return UploadOut.from_backend(answer)


@_authed.get(
    "/upload/{request_id}",
    response_model=UploadDetailOut,
    summary="The recorded answer of an upload, with reasons and peers",
    responses=_err(404, 422),
)
async def get_upload(request: Request, request_id: RequestIdPath) -> UploadDetailOut:
    answer = await run_in_threadpool(request.app.state.backend.request_detail, request_id)
    return UploadDetailOut.from_backend(answer)


@_authed.get("/status", response_model=StatusOut, summary="Peers, queue and replication state")
async def status(request: Request) -> StatusOut:
    return StatusOut.from_backend(await run_in_threadpool(request.app.state.backend.status))


@_authed.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus text exposition",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@_authed.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


# --- body size limit --------------------------------------------------------------------


def _body_limit(backend: be.ApiBackend, scope: Scope) -> int:
    if scope["method"] == "PUT" and scope["path"].startswith("/chunks/"):
        return int(backend.max_chunk_bytes)
    return UPLOAD_BODY_LIMIT


class BodyLimitMiddleware:
    """Enforces the body limit *while the body is read*: a declared Content-Length over the
    limit fails on the first read, before any byte is buffered, and bytes are counted as
    they arrive so a chunked or lying body is dropped one message past the limit. Raised
    from ``receive``, the 413 surfaces inside the route, so on PUT auth is checked first."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise HTTPException(413, f"body over the {limit}-byte limit")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"body over the {limit}-byte limit")
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None  # servers reject these anyway; counting still bounds the body
            return length if length >= 0 else None
    return None


# --- error handlers: every error body is {"error": "..."} -------------------------------


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, describe_validation_errors(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else repr(exc.detail)
    if detail in ("Not Found", "Method Not Allowed"):  # Starlette's routing defaults
        detail = f"{detail.lower()}: {request.method} {request.url.path}"
    return error_response(exc.status_code, detail, headers=exc.headers)


async def _backend_error(request: Request, exc: Exception) -> Response:
    for exc_type, (code, default) in _BACKEND_ERRORS.items():
        if isinstance(exc, exc_type):
            # Backends raise with bare details (an id, a size): lead with what went wrong.
            return error_response(code, f"{default}: {exc}" if str(exc) else default)
    return await _internal_error(request, exc)  # only registered types are routed here


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Last resort: the traceback goes to the log, never to the client.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error")
