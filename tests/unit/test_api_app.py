"""The HTTP layer against an in-memory fake ApiBackend: wire format (the seed's example to the
byte), auth, validation errors naming the field, limits, error mapping, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter
from support.fake_api import FakeBackend

from chunkvault.api import app as app_module
from chunkvault.api.app import UPLOAD_BODY_LIMIT, create_app
from chunkvault.api.backend import BackendUnavailable, StagingFull, Status
from chunkvault.api.metrics import registry_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KiB = 1024
SEED_REQUEST = {
    "chunks": [
        {"id": "c1", "size_in_KB": 120},
        {"id": "c2", "size_in_KB": 200},
        {"id": "c3", "size_in_KB": 610},
    ],
    "request_id": "1234",
}
SEED_RESPONSE = (
    '{"chunks":[{"id":"c1","send":"OK"},{"id":"c2","send":"NOTOK"},{"id":"c3","send":"OK"}],'
    '"request_id":"1234"}'
)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend, TOKEN), raise_server_exceptions=False) as c:
        yield c


def stage_seed_chunks(client: TestClient) -> None:
    for chunk_id, kib in (("c1", 120), ("c2", 200), ("c3", 610)):
        r = client.put(f"/chunks/{chunk_id}", content=b"\x07" * (kib * KiB), headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json() == {"id": chunk_id, "size": kib * KiB}


def seed_with_c2_declared_999() -> dict[str, Any]:
    body = json.loads(json.dumps(SEED_REQUEST))
    body["chunks"][1]["size_in_KB"] = 999
    return body


def assert_error(r: Any, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


# --- the seed's example -----------------------------------------------------------------


def test_seed_example_exact_response(client: TestClient, backend: FakeBackend) -> None:
    stage_seed_chunks(client)
    r = client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)
    assert r.status_code == 200, r.text
    assert json.dumps(json.loads(r.text), separators=(",", ":")) == SEED_RESPONSE
    # What the backend was handed: the typed, validated request, in order.
    (sent,) = backend.requests
    assert sent.request_id == "1234"
    assert [(c.id, c.size_in_kb) for c in sent.chunks] == [("c1", 120), ("c2", 999), ("c3", 610)]


def test_backend_calls_run_off_the_event_loop(client: TestClient, backend: FakeBackend) -> None:
    assert client.put("/chunks/c1", content=b"x", headers=AUTH).status_code == 201
    assert backend.ran_on_event_loop is False


def test_replay_same_answer_no_new_writes(client: TestClient, backend: FakeBackend) -> None:
    stage_seed_chunks(client)
    first = client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)
    writes = backend.writes
    again = client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)
    assert again.status_code == 200 and again.json() == first.json()
    assert backend.writes == writes


def test_same_request_id_other_body_is_409(client: TestClient) -> None:
    stage_seed_chunks(client)
    assert client.post("/upload", json=SEED_REQUEST, headers=AUTH).status_code == 200
    r = client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)
    assert_error(r, 409, "request_id already used with another body: 1234")


def test_upload_detail_and_unknown(client: TestClient) -> None:
    stage_seed_chunks(client)
    client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)
    r = client.get("/upload/1234", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {
        "request_id": "1234",
        "chunks": [
            {"id": "c1", "send": "OK", "reason": "stored", "peers": ["p1", "p2"]},
            {"id": "c2", "send": "NOTOK", "reason": "size_in_KB mismatch", "peers": []},
            {"id": "c3", "send": "OK", "reason": "stored", "peers": ["p1", "p2"]},
        ],
    }
    assert_error(client.get("/upload/nope", headers=AUTH), 404, "unknown request_id: nope")
    assert_error(client.get("/upload/bad!id", headers=AUTH), 422, "request_id")


def test_get_chunk_bytes_and_404(client: TestClient) -> None:
    client.put("/chunks/c1", content=b"\x00\xffdata", headers=AUTH)
    client.post(
        "/upload", json={"chunks": [{"id": "c1", "size_in_KB": 1}], "request_id": "r"}, headers=AUTH
    )
    r = client.get("/chunks/c1", headers=AUTH)
    assert r.status_code == 200 and r.content == b"\x00\xffdata"
    assert r.headers["content-type"] == "application/octet-stream"
    assert_error(client.get("/chunks/never", headers=AUTH), 404, "unknown chunk: never")


def test_backend_unavailable_is_503(client: TestClient, backend: FakeBackend) -> None:
    backend.raise_on_read = BackendUnavailable("every replica of c1 is unreachable")
    assert_error(client.get("/chunks/c1", headers=AUTH), 503, "unreachable")


def test_unexpected_exception_is_500_without_traceback(
    client: TestClient, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.raise_on_read = RuntimeError("secret internals /var/lib/x")
    with caplog.at_level(logging.ERROR, logger="chunkvault.api"):
        r = client.get("/chunks/c1", headers=AUTH)
    assert_error(r, 500, "internal server error")
    assert "secret" not in r.text and "Traceback" not in r.text
    assert any(
        rec.exc_info and "secret internals" in str(rec.exc_info[1]) for rec in caplog.records
    )


# --- auth -------------------------------------------------------------------------------

AUTHED_CALLS = [
    ("PUT", "/chunks/c1", {"content": b"x"}),
    ("GET", "/chunks/c1", {}),
    ("POST", "/upload", {"json": SEED_REQUEST}),
    ("GET", "/upload/1234", {}),
    ("GET", "/status", {}),
    ("GET", "/metrics", {}),
    ("GET", "/openapi.json", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), AUTHED_CALLS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer s3cret-t\xf6ken".encode("latin-1")},  # non-ASCII: no 500
    ],
)
def test_every_route_but_health_needs_the_token(
    client: TestClient, backend: FakeBackend, method: str, path: str, kwargs: Any, headers: Any
) -> None:
    r = client.request(method, path, headers=headers, **kwargs)
    assert_error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert backend.staged == {} and backend.requests == []


def test_health_needs_no_token(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_refuses_to_build_without_token(backend: FakeBackend) -> None:
    for token in (None, ""):
        with pytest.raises(ValueError, match="token"):
            create_app(backend, token)
    open_app = TestClient(create_app(backend, None, allow_no_token=True))
    assert open_app.get("/status").status_code == 200


# --- validation: 4xx with an error naming the field ---------------------------------------


def upload_with(**changes: Any) -> dict[str, Any]:
    return {"chunks": [{"id": "c1", "size_in_KB": 1}], "request_id": "r1", **changes}


def one_chunk(**fields: Any) -> dict[str, Any]:
    return upload_with(chunks=[{"id": "c1", "size_in_KB": 1, **fields}])


MALFORMED = {
    "missing request_id": ({"chunks": [{"id": "c1", "size_in_KB": 1}]}, "request_id: is required"),
    "missing chunks": ({"request_id": "r1"}, "chunks: is required"),
    "missing size": ({"chunks": [{"id": "c1"}], "request_id": "r"}, "chunks[0].size_in_KB"),
    "size string": (one_chunk(size_in_KB="12"), "chunks[0].size_in_KB: must be an integer"),
    "size float": (one_chunk(size_in_KB=12.5), "chunks[0].size_in_KB: must be an integer"),
    "size whole float": (one_chunk(size_in_KB=12.0), "chunks[0].size_in_KB: must be an integer"),
    "size bool": (one_chunk(size_in_KB=True), "chunks[0].size_in_KB: must be an integer"),
    "size null": (one_chunk(size_in_KB=None), "chunks[0].size_in_KB: must be an integer"),
    "size negative": (one_chunk(size_in_KB=-1), "chunks[0].size_in_KB"),
    "size huge": (one_chunk(size_in_KB=2**64), "chunks[0].size_in_KB"),
    "extra key": (upload_with(priority=1), "priority: unknown field"),
    "extra chunk key": (one_chunk(sha="x"), "chunks[0].sha: unknown field"),
    "empty chunks": (upload_with(chunks=[]), "chunks:"),
    "1001 chunks": (
        upload_with(chunks=[{"id": f"c{i}", "size_in_KB": 1} for i in range(1001)]),
        "chunks:",
    ),
    "chunks not a list": (upload_with(chunks={"id": "c1"}), "chunks: must be a list"),
    "id bad chars": (one_chunk(id="c/1"), "chunks[0].id"),
    "id space": (one_chunk(id="c 1"), "chunks[0].id"),
    "id empty": (one_chunk(id=""), "chunks[0].id"),
    "id too long": (one_chunk(id="c" * 129), "chunks[0].id"),
    "id number": (one_chunk(id=1), "chunks[0].id: must be a string"),
    "duplicate ids": (
        upload_with(chunks=[{"id": "a", "size_in_KB": 1}, {"id": "a", "size_in_KB": 2}]),
        "chunks: duplicate id 'a' at chunks[1]",
    ),
    "request_id bad chars": (upload_with(request_id="12 34"), "request_id"),
    "request_id too long": (upload_with(request_id="r" * 129), "request_id"),
    "request_id number": (upload_with(request_id=1234), "request_id: must be a string"),
    "top-level array": ([SEED_REQUEST], "body: must be a JSON object"),
    "top-level string": ("hello", "body: must be a JSON object"),
}


@pytest.mark.parametrize(("body", "fragment"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_upload_names_the_field(
    client: TestClient, backend: FakeBackend, body: Any, fragment: str
) -> None:
    assert_error(client.post("/upload", json=body, headers=AUTH), 422, fragment)
    assert backend.requests == []


def test_large_valid_request_passes(client: TestClient) -> None:
    chunks = [{"id": f"c{i:04d}-{'x' * 100}", "size_in_KB": 10**12} for i in range(1000)]
    r = client.post("/upload", json=upload_with(chunks=chunks), headers=AUTH)
    assert r.status_code == 200 and len(r.json()["chunks"]) == 1000


def test_many_errors_are_summarised(client: TestClient) -> None:
    chunks = [{"id": f"bad id {i}", "size_in_KB": 1} for i in range(1000)]
    r = client.post("/upload", json=upload_with(chunks=chunks), headers=AUTH)
    assert_error(r, 422, "chunks[0].id", "and 995 more errors")
    assert len(r.text) < 2000


@pytest.mark.parametrize(
    ("content", "content_type", "status", "fragment"),
    [
        (b'{"chunks": [', "application/json", 422, "body: is not valid JSON"),
        (b"", "application/json", 422, "body: is required"),
        (b"null", "application/json", 422, "body"),
        (b"\xff\xfe", "application/json", 422, "body"),
        (json.dumps(SEED_REQUEST).encode(), "text/plain", 415, "application/json"),
        (json.dumps(SEED_REQUEST).encode(), "", 415, "application/json"),
        (b"chunks=1", "application/x-www-form-urlencoded", 415, "application/json"),
    ],
)
def test_upload_body_not_json(
    client: TestClient, content: bytes, content_type: str, status: int, fragment: str
) -> None:
    headers = {**AUTH, "Content-Type": content_type} if content_type else AUTH
    assert_error(client.post("/upload", content=content, headers=headers), status, fragment)


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 200_000,  # nesting deep enough to exhaust the JSON parser's recursion
        b'{"chunks":[{"id":"a","size_in_KB":' + b"9" * 5000 + b'}],"request_id":"r"}',
    ],
    ids=["deep nesting", "5000-digit int"],
)
def test_hostile_json_is_4xx(client: TestClient, content: bytes) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    r = client.post("/upload", content=content, headers=headers)
    assert 400 <= r.status_code < 500 and "error" in r.json()


def test_error_messages_stay_short(client: TestClient) -> None:
    r = client.post("/upload", json={"k" * 100_000: 1}, headers=AUTH)
    assert_error(r, 422, "unknown field")
    assert len(r.text) < 1100
    assert_error(client.get("/" + "x" * 5000, headers=AUTH), 404)
    assert len(client.get("/" + "x" * 5000, headers=AUTH).text) < 1100


def test_upload_json_with_charset_is_accepted(client: TestClient) -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    r = client.post("/upload", content=json.dumps(SEED_REQUEST).encode(), headers=headers)
    assert r.status_code == 200


def test_upload_body_over_1mib_is_413(client: TestClient) -> None:
    body = upload_with(request_id="r", pad="x" * UPLOAD_BODY_LIMIT)
    assert_error(client.post("/upload", json=body, headers=AUTH), 413, "limit")


# --- PUT /chunks/{id} -------------------------------------------------------------------


@pytest.fixture
def small_backend() -> FakeBackend:
    return FakeBackend(max_chunk_bytes=4096)


@pytest.fixture
def small_client(small_backend: FakeBackend) -> Iterator[TestClient]:
    with TestClient(create_app(small_backend, TOKEN), raise_server_exceptions=False) as c:
        yield c


def test_put_at_limit_ok_over_limit_413(
    small_client: TestClient, small_backend: FakeBackend
) -> None:
    assert small_client.put("/chunks/a", content=b"x" * 4096, headers=AUTH).status_code == 201
    assert_error(small_client.put("/chunks/b", content=b"x" * 4097, headers=AUTH), 413, "4096")
    assert list(small_backend.staged) == ["a"]


def test_put_streamed_without_content_length_413(
    small_client: TestClient, small_backend: FakeBackend
) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    r = small_client.put("/chunks/b", content=body(), headers=AUTH)
    assert_error(r, 413, "4096")
    assert small_backend.staged == {}


def asgi_put(app: Any, headers: list[tuple[bytes, bytes]], piece: int) -> tuple[int, int]:
    """PUT an endless body straight through ASGI; returns (status, pieces the app pulled)."""
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * piece, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": "/chunks/big",
        "raw_path": b"/chunks/big",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", AUTH["Authorization"].encode()), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    asyncio.run(app(scope, receive, send))
    return status, pulled


def test_put_streamed_body_is_not_buffered_past_the_limit(small_backend: FakeBackend) -> None:
    app = create_app(small_backend, TOKEN)
    status, pulled = asgi_put(app, [], piece=1000)
    assert status == 413 and pulled == 5  # 5000 > 4096: stops at the first piece past the limit
    # A lying Content-Length (says small, sends endless) is bounded the same way.
    status, pulled = asgi_put(app, [(b"content-length", b"10")], piece=1000)
    assert status == 413 and pulled == 5
    # A declared Content-Length over the limit fails before any byte is read.
    status, pulled = asgi_put(app, [(b"content-length", b"5000")], piece=1000)
    assert status == 413 and pulled == 0
    assert small_backend.staged == {}


def test_put_unauthenticated_is_401_before_reading_body(small_backend: FakeBackend) -> None:
    app = create_app(small_backend, "another-token")
    status, pulled = asgi_put(app, [(b"content-length", b"5000")], piece=1000)
    assert (status, pulled) == (401, 0)


def test_put_bad_ids(client: TestClient) -> None:
    assert_error(client.put("/chunks/bad!id", content=b"x", headers=AUTH), 422, "path.id")
    assert_error(client.put(f"/chunks/{'c' * 129}", content=b"x", headers=AUTH), 422, "path.id")
    assert_error(client.put("/chunks/a/b", content=b"x", headers=AUTH), 404, "/chunks/a/b")
    assert_error(client.put("/chunks/", content=b"x", headers=AUTH), 404)


def test_put_restage_replaces(client: TestClient, backend: FakeBackend) -> None:
    client.put("/chunks/c1", content=b"one", headers=AUTH)
    r = client.put("/chunks/c1", content=b"", headers=AUTH)
    assert r.status_code == 201 and r.json() == {"id": "c1", "size": 0}
    assert backend.staged == {"c1": b""}


def asgi_put_messages(
    app: Any, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] = ()
) -> tuple[int, bytes]:
    """PUT /chunks/c1 straight through ASGI with these receive messages; once they run
    out the client goes silent (receive never returns). Returns (status, body)."""
    pending = list(messages)
    status, body = 0, b""

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # a stalled client
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
        "scheme": "http", "path": "/chunks/c1", "raw_path": b"/chunks/c1", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080),
        "headers": [(b"authorization", AUTH["Authorization"].encode()), *headers],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return status, body


def piece(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


class PieceRecorder(FakeBackend):
    def stage_chunk(self, chunk_id: str, body: Any, size_hint: int | None) -> int:
        self.pieces = [len(p) for p in body]
        return super().stage_chunk(chunk_id, [b"x" * n for n in self.pieces], size_hint)


def test_put_body_reaches_the_backend_piece_by_piece() -> None:
    backend = PieceRecorder()
    app = create_app(backend, TOKEN)
    status, body = asgi_put_messages(app, [piece(b"a" * 1000)] * 3 + [piece(b"b" * 10, False)])
    assert status == 201 and json.loads(body) == {"id": "c1", "size": 3010}
    assert backend.pieces == [1000, 1000, 1000, 10]  # never joined by the HTTP layer


def test_put_passes_the_declared_length(client: TestClient, backend: FakeBackend) -> None:
    client.put("/chunks/a", content=b"x" * 10, headers=AUTH)
    client.put("/chunks/b", content=iter([b"x" * 10]), headers=AUTH)  # chunked: no length
    assert backend.size_hints == [10, None]


def test_put_over_the_staging_quota_is_507(client: TestClient, backend: FakeBackend) -> None:
    backend.raise_on_stage = StagingFull("9000 bytes staged", "POST /upload them")
    r = client.put("/chunks/c1", content=b"x", headers=AUTH)
    assert_error(r, 507, "staging quota exceeded: 9000 bytes staged (POST /upload them)")
    assert backend.staged == {}


def test_put_stalled_body_is_408_and_stages_nothing(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "BODY_IDLE_SECONDS", 0.2)
    status, body = asgi_put_messages(create_app(backend, TOKEN), [piece(b"x" * 100)])
    assert status == 408 and "no body bytes for 0.2 s" in json.loads(body)["error"]
    assert backend.staged == {}


def test_put_client_gone_stages_nothing_quietly(
    backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [piece(b"x" * 100), {"type": "http.disconnect"}]
    with caplog.at_level(logging.ERROR):
        status, _ = asgi_put_messages(create_app(backend, TOKEN), messages)
    assert status == 400 and backend.staged == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_serving_starts_and_closes_the_backend(backend: FakeBackend) -> None:
    with TestClient(create_app(backend, TOKEN)):
        assert (backend.started, backend.closed) == (1, 0)
    assert (backend.started, backend.closed) == (1, 1)


def test_wrong_method_is_405_json(client: TestClient) -> None:
    assert_error(client.delete("/chunks/c1", headers=AUTH), 405, "DELETE")
    assert_error(client.get("/upload", headers=AUTH), 405)


# --- status, metrics, OpenAPI -----------------------------------------------------------


def test_status_shape(client: TestClient, backend: FakeBackend) -> None:
    seen = datetime(2024, 1, 1, tzinfo=UTC)
    backend.status_value = Status(
        peers=[
            {"name": "p1", "up": True, "last_error": None, "seen": seen},
            {"name": "p2", "up": False, "last_error": OSError("refused"), "rtt": math.nan},
        ],
        queue_depth=3,
        in_flight=1,
        under_replicated=2,
        extra={"version": "0.1"},
    )
    r = client.get("/status", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {
        "peers": [
            {"name": "p1", "up": True, "last_error": None, "seen": "2024-01-01 00:00:00+00:00"},
            {"name": "p2", "up": False, "last_error": "refused", "rtt": None},
        ],
        "queue_depth": 3,
        "in_flight": 1,
        "under_replicated": 2,
        "extra": {"version": "0.1"},
    }


def test_metrics(client: TestClient) -> None:
    stage_seed_chunks(client)
    client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)
    client.post("/upload", json=seed_with_c2_declared_999(), headers=AUTH)  # replay: not counted
    client.get("/nope/x", headers=AUTH)
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'chunkvault_api_upload_chunks_total{send="OK"} 2.0' in text
    assert 'chunkvault_api_upload_chunks_total{send="NOTOK"} 1.0' in text
    assert f"chunkvault_api_staged_bytes_total {float(930 * KiB)}" in text
    assert (
        'chunkvault_api_requests_total{method="PUT",route="/chunks/{id}",status="201"} 3.0' in text
    )
    assert 'chunkvault_api_requests_total{method="POST",route="/upload",status="200"} 2.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "chunkvault_api_request_duration_seconds_bucket" in text


def test_registry_per_app_and_shared_with_daemon(backend: FakeBackend) -> None:
    registry = CollectorRegistry()
    app = create_app(backend, TOKEN, registry=registry)
    create_app(backend, TOKEN)  # a second app in the same process does not clash
    assert app.state.registry is registry and registry_of(app) is registry
    Counter("chunkvault_daemon_scans", "Daemon's own metric.", registry=registry).inc()
    text = TestClient(app).get("/metrics", headers=AUTH).text
    assert "chunkvault_daemon_scans_total 1.0" in text


def test_openapi_documents_the_routes(client: TestClient) -> None:
    r = client.get("/openapi.json", headers=AUTH)
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    assert set(paths) == {
        "/health",
        "/chunks/{id}",
        "/upload",
        "/upload/{request_id}",
        "/status",
        "/metrics",
    }
    assert set(paths["/chunks/{id}"]) == {"put", "get"}
    put = paths["/chunks/{id}"]["put"]
    assert list(put["requestBody"]["content"]) == ["application/octet-stream"]
    assert put["parameters"][0]["schema"]["pattern"] == "^[A-Za-z0-9._-]{1,128}$"
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in paths["/health"]["get"]
    assert paths["/upload"]["post"]["security"] == [{"HTTPBearer": []}]
    schemas = spec["components"]["schemas"]
    chunk = schemas["UploadChunkIn"]
    assert chunk["additionalProperties"] is False
    assert chunk["properties"]["size_in_KB"]["type"] == "integer"
    assert chunk["properties"]["size_in_KB"]["minimum"] == 0
    assert schemas["UploadIn"]["properties"]["chunks"]["maxItems"] == 1000
    assert set(schemas["UploadOut"]["properties"]) == {"chunks", "request_id"}
    assert "HTTPValidationError" not in schemas  # every error is documented as ErrorOut
    assert client.get("/docs").status_code == 404  # no UI pulling scripts from a CDN
