"""Shared fixtures: hermetic AWS environment and real HTTP S3 peers (moto_server).

- ``moto_peers`` (session): 3 moto_server processes shared by every integration test. Use a
  fresh bucket per test (``support.moto_peers.unique_bucket()``) and do not kill or stop
  these servers.
- ``moto_peer_factory`` (function): ``start() -> MotoServer`` for tests that kill or SIGSTOP
  a peer; every server it started is shut down after the test.
- ``hostile_proxy_factory`` (function): ``start(upstream_endpoint) -> HostileProxy``, a
  reverse proxy that makes one peer lie (``support.hostile_proxy``); every proxy it started
  is stopped after the test.

Tests that use either fixture are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # makes `support` importable

from support.hostile_proxy import HostileProxy
from support.moto_peers import MotoPeers, MotoServer, shutdown_all

MOTO_FIXTURES = {"moto_peers", "moto_peer_factory", "hostile_proxy_factory"}


@pytest.fixture(scope="session", autouse=True)
def _hermetic_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No real AWS account, profile, proxy or instance-metadata lookup leaks into tests."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for var in ("NO_PROXY", "no_proxy"):
            mp.setenv(var, ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get(var)])))
        yield


@pytest.fixture(scope="session")
def moto_peers() -> Iterator[MotoPeers]:
    peers = MotoPeers.start(3)
    try:
        yield peers
    finally:
        peers.shutdown()


@pytest.fixture
def moto_peer_factory() -> Iterator[Callable[[], MotoServer]]:
    started: list[MotoServer] = []

    def start() -> MotoServer:
        server = MotoServer.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.shutdown()


@pytest.fixture
def hostile_proxy_factory() -> Iterator[Callable[[str], HostileProxy]]:
    started: list[HostileProxy] = []

    def start(upstream: str) -> HostileProxy:
        proxy = HostileProxy(upstream).start()
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MOTO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutdown_all()  # belt and braces: fixtures already stopped their servers
