"""The one place peers are assembled: backend + limit + retry + health.

    HealthPeer(RetryPeer(LimitPeer(backend)))

- LimitPeer is innermost: a slot is held only while a request is on the wire, never while
  RetryPeer sleeps between attempts (a sleeping retry must not block other requests).
- RetryPeer sits between: every attempt takes its own slot.
- HealthPeer is outermost: it sees the outcome after retries (one failed *call* = one
  failure, not one per attempt), and while the peer is down it fails fast without taking a
  slot or sleeping through backoffs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from chunkvault.backends.base import Peer
from chunkvault.backends.filesystem import FilesystemPeer
from chunkvault.backends.health import HealthPeer
from chunkvault.backends.limit import LimitPeer
from chunkvault.backends.retry import RetryPeer
from chunkvault.backends.s3 import S3Peer
from chunkvault.config import Config, PeerConfig, TransferConfig


def open_backend(peer: PeerConfig, transfer: TransferConfig) -> Peer:
    """The bare backend for one configured peer (no limit, retry or health)."""
    if peer.kind == "s3":
        return S3Peer(peer, transfer)
    if peer.path is None:
        raise ValueError(f"peer {peer.name}: a filesystem peer needs a path")
    return FilesystemPeer(peer.name, peer.path)


def wrap_peer(
    backend: Peer,
    transfer: TransferConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> HealthPeer:
    """Wrap any backend (tests pass a MemoryPeer) the way every peer is wrapped."""
    limited = LimitPeer(backend, transfer.peer_concurrency or transfer.concurrency)
    retried = RetryPeer(limited, transfer.retries, sleep=sleep)
    return HealthPeer(retried, transfer.down_after_failures, transfer.down_seconds, clock=clock)


def build_peer(peer: PeerConfig, transfer: TransferConfig) -> HealthPeer:
    """A ready-to-use peer: ``HealthPeer(RetryPeer(LimitPeer(backend)))``."""
    return wrap_peer(open_backend(peer, transfer), transfer)


def build_peers(config: Config) -> list[HealthPeer]:
    """Every configured peer, in config order."""
    peers: list[HealthPeer] = []
    try:
        for peer in config.peers:
            peers.append(build_peer(peer, config.transfer))
    except BaseException:
        for built in peers:
            built.close()
        raise
    return peers


@contextmanager
def prepared_in_background(peers: list[HealthPeer]) -> Iterator[None]:
    """Run every peer's :meth:`~Peer.prepare` in a thread during the block: what the first
    request needs is then made while the command derives its key (Argon2 lets go of the
    GIL), not when the first request is due. The block ends once it is done."""

    def prepare() -> None:
        for peer in peers:
            # What fails here, the first real request meets again, and reports.
            with suppress(Exception):
                peer.prepare()

    thread = threading.Thread(target=prepare, name="prepare-peers", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
