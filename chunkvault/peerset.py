"""Built peers paired with their placement attributes (weight, zone from the config), so
rendezvous placement can rank the very objects that do the I/O."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chunkvault.backends.health import HealthPeer
from chunkvault.backends.stack import build_peers
from chunkvault.config import Config


@dataclass(frozen=True)
class PlacedPeer:
    peer: HealthPeer
    weight: float
    zone: str | None
    # Being drained (`peers drain`): read from as before, never chosen for a new copy.
    draining: bool = False

    @property
    def name(self) -> str:
        return self.peer.name


def place(config: Config, peers: list[HealthPeer]) -> list[PlacedPeer]:
    by_name = {p.name: p for p in peers}
    return [PlacedPeer(by_name[pc.name], pc.weight, pc.zone) for pc in config.peers]


@contextmanager
def open_peer_set(config: Config) -> Iterator[list[PlacedPeer]]:
    peers = build_peers(config)
    try:
        yield place(config, peers)
    finally:
        for peer in peers:
            peer.close()
