"""Prometheus metrics of the HTTP layer, on a per-app registry so several apps (tests, or a
daemon restarting its API) never clash in prometheus_client's global registry."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


class ApiMetrics:
    """The HTTP layer's own metrics. Names are part of docs/api.md."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "chunkvault_api_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "chunkvault_api_request_duration_seconds",
            "HTTP request handling time by route template and method.",
            ["route", "method"],
            registry=registry,
        )
        self.upload_chunks = Counter(
            "chunkvault_api_upload_chunks",
            "Chunk outcomes of POST /upload (replays not counted).",
            ["send"],
            registry=registry,
        )
        self.staged_bytes = Counter(
            "chunkvault_api_staged_bytes",
            "Bytes accepted by PUT /chunks/{id}.",
            registry=registry,
        )
        # Pre-create the label sets so a fresh scrape already shows both series at zero.
        for send in ("OK", "NOTOK"):
            self.upload_chunks.labels(send=send)


def registry_of(app: FastAPI) -> CollectorRegistry:
    """The registry ``GET /metrics`` exposes; the daemon registers its own metrics here."""
    registry: CollectorRegistry = app.state.registry
    return registry


class MetricsMiddleware:
    """Counts every request by route *template* (``/chunks/{id}``, never the raw path, to
    keep label cardinality bounded) once the router has matched it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before answering, the server error handler says 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.duration.labels(route=route, method=method).observe(
                time.perf_counter() - started
            )
