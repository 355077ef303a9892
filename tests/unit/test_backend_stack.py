"""stack.py: the one place peers are composed, and the composition working end to end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from chunkvault.backends import (
    FilesystemPeer,
    HealthPeer,
    LimitPeer,
    MemoryPeer,
    PeerDown,
    RetryPeer,
    S3Peer,
    TransientError,
    build_peer,
    build_peers,
    wrap_peer,
)
from chunkvault.backends.stack import prepared_in_background
from chunkvault.config import PeerConfig, TransferConfig, parse_config


def test_build_peer_composes_health_retry_limit(tmp_path: Path) -> None:
    transfer = TransferConfig(
        concurrency=8, peer_concurrency=3, retries=5, down_after_failures=4, down_seconds=7
    )
    peer = build_peer(PeerConfig(name="usb", path=tmp_path, zone="z1"), transfer)
    assert isinstance(peer, HealthPeer)
    assert (peer.down_after_failures, peer.down_seconds) == (4, 7)
    retry = peer.inner
    assert isinstance(retry, RetryPeer) and retry.retries == 5
    limit = retry.inner
    assert isinstance(limit, LimitPeer) and limit.limit == 3
    backend = limit.inner
    assert isinstance(backend, FilesystemPeer) and backend.root == tmp_path
    for layer in (peer, retry, limit, backend):
        assert (layer.name, layer.kind, layer.location) == ("usb", "filesystem", str(tmp_path))


def test_build_peer_s3_and_default_peer_concurrency() -> None:
    config = PeerConfig(name="a", endpoint="http://127.0.0.1:9", bucket="chunkvault")
    peer = build_peer(config, TransferConfig(concurrency=6))
    try:
        limit = peer.inner.inner
        assert isinstance(limit, LimitPeer) and limit.limit == 6  # peer_concurrency None
        assert isinstance(limit.inner, S3Peer)
        assert (peer.kind, peer.location) == ("s3", "http://127.0.0.1:9/chunkvault")
    finally:
        peer.close()


def test_build_peers_in_config_order(tmp_path: Path) -> None:
    config = parse_config(
        {
            "peers": [
                {"name": "b", "path": str(tmp_path / "b")},
                {"name": "a", "endpoint": "http://127.0.0.1:9", "bucket": "vault"},
            ]
        }
    )
    peers = build_peers(config)
    assert [(p.name, p.kind) for p in peers] == [("b", "filesystem"), ("a", "s3")]
    assert all(isinstance(p, HealthPeer) for p in peers)


def test_flapping_peer_succeeds_through_the_stack() -> None:
    mem = MemoryPeer("flaky")
    sleeps: list[float] = []
    peer = wrap_peer(mem, TransferConfig(retries=3), sleep=sleeps.append)
    mem.fail_next(2)
    peer.put("v/chunks/ab/ab", b"data", {"gen": "1"})
    mem.fail_next(3, ops={"get"})
    assert peer.get("v/chunks/ab/ab") == b"data"
    assert len(sleeps) == 5
    assert peer.is_up and peer.consecutive_failures == 0


def test_dead_peer_goes_down_then_fails_fast_without_retrying() -> None:
    mem = MemoryPeer("dead")
    sleeps: list[float] = []
    transfer = TransferConfig(retries=2, down_after_failures=2, down_seconds=30)
    peer = wrap_peer(mem, transfer, sleep=sleeps.append, clock=lambda: 0.0)
    mem.down = True
    for _ in range(2):
        with pytest.raises(TransientError):
            peer.get("a")
    assert mem.calls == ["get"] * 6  # 2 calls x (1 + 2 retries): health counts calls
    assert not peer.is_up and len(sleeps) == 4
    with pytest.raises(PeerDown):
        peer.get("a")
    assert len(mem.calls) == 6 and len(sleeps) == 4  # no request, no backoff


def test_no_slot_is_held_while_retry_sleeps() -> None:
    mem = MemoryPeer()
    mem.put("a", b"x")
    blocked: list[bool] = []

    def sleep(seconds: float) -> None:
        # While this call backs off, another caller must get the only slot.
        other = threading.Thread(target=lambda: peer.get("a"), daemon=True)
        other.start()
        other.join(2)
        blocked.append(other.is_alive())

    peer = wrap_peer(mem, TransferConfig(peer_concurrency=1, retries=1), sleep=sleep)
    mem.fail_next(1, ops={"put"})
    peer.put("b", b"y")
    assert blocked == [False]


def test_peers_are_prepared_in_a_thread_through_every_wrapper_and_errors_wait_for_use() -> None:
    class Preparing(MemoryPeer):
        def __init__(self, name: str, fail: bool) -> None:
            super().__init__(name)
            self.fail = fail
            self.prepared_in: list[str] = []

        def prepare(self) -> None:
            time.sleep(0.1)  # the block must wait for this, not end before it
            self.prepared_in.append(threading.current_thread().name)
            if self.fail:
                raise OSError("no client today")

    backends = [Preparing("a", fail=True), Preparing("b", fail=False)]
    transfer = TransferConfig(retries=0)
    peers = [wrap_peer(b, transfer, sleep=lambda s: None) for b in backends]
    with prepared_in_background(peers):
        assert backends[1].prepared_in == []  # still being prepared, in the background
    assert [b.prepared_in for b in backends] == [["prepare-peers"], ["prepare-peers"]]


def test_an_s3_peer_prepares_its_client_without_a_request() -> None:
    cfg = PeerConfig(name="s3", endpoint="http://127.0.0.1:9", bucket="chunkvault")
    peer = build_peer(cfg, TransferConfig(retries=0, timeout_seconds=1))
    backend = peer.inner.inner.inner  # type: ignore[attr-defined]
    assert isinstance(backend, S3Peer) and backend._client is None
    peer.prepare()  # port 9 (discard) would refuse a request: none is sent
    assert backend._client is not None
    peer.close()
