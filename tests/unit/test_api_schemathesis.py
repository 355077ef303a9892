"""Property-based run of the API against its own OpenAPI schema (in-process ASGI): whatever
schemathesis generates, valid or not, the app never answers 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from support.fake_api import FakeBackend

from chunkvault.api.app import create_app
from chunkvault.api.backend import (
    Status,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _backend() -> FakeBackend:
    backend = FakeBackend(max_chunk_bytes=64 * 1024)
    backend.status_value = Status(peers=[{"name": "p1", "up": True}], queue_depth=1)
    return backend


app = create_app(_backend(), TOKEN)
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
