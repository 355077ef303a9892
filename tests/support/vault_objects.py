"""What the peers of a test vault (vault id ``test``) hold, listed straight from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from chunkvault.backends.base import Peer
from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config


def copies(config: Path, prefix: str = "test/") -> dict[str, dict[str, int]]:
    """Every object under ``prefix`` -> {peer: size of its copy}."""
    out: dict[str, dict[str, int]] = {}
    peers = build_peers(load_config(config))
    try:
        for peer in peers:
            for info in peer.list(prefix):
                out.setdefault(info.key, {})[peer.name] = info.size
    finally:
        for peer in peers:
            peer.close()
    return out


def holders(config: Path, keyring: bool = True) -> dict[str, set[str]]:
    """Every object of the vault -> the peers holding it (``keyring``: the keyring too)."""
    return {
        key: set(where) for key, where in copies(config).items() if keyring or key != "test/keyring"
    }


def data_holders(config: Path) -> dict[str, set[str]]:
    """Chunk objects and packs -> the peers holding them."""
    return {k: v for k, v in holders(config).items() if "/chunks/" in k or "/packs/" in k}


def stored_bytes(config: Path, manifests: bool = True) -> int:
    """Bytes of every copy of every object of the vault, the keyring aside."""
    return sum(
        sum(where.values())
        for key, where in copies(config).items()
        if key != "test/keyring" and (manifests or "/manifests/" not in key)
    )


def on_peer(config: Path, name: str, change: Callable[[Peer], None]) -> None:
    """``change`` done to peer ``name`` directly (a test playing a peer's part)."""
    peers = build_peers(load_config(config))
    try:
        change(next(p for p in peers if p.name == name))
    finally:
        for peer in peers:
            peer.close()
