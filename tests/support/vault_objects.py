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


def needed_objects(config: Path, passphrase: str) -> set[str]:
    """The keys of the chunk objects and packs the stored versions reference (as `check`
    sees them): an upload whose commit never came (a SIGKILLed agent) is not among them."""
    from chunkvault.check import Checker
    from chunkvault.keystore import KeyStore
    from chunkvault.layout import chunk_key, pack_key
    from chunkvault.peerset import open_peer_set
    from chunkvault.vault import Vault

    cfg = load_config(config)
    keys = KeyStore(cfg.vault.state_dir, cfg.vault.id, []).open(passphrase).keys
    with open_peer_set(cfg) as placed:
        vault = Vault(cfg, placed, keys)
        try:
            checker = Checker(vault)
            checker.structure()
        finally:
            vault.close()
    key_of = {"chunk": chunk_key, "pack": pack_key}
    return {key_of[kind](cfg.vault.id, name) for kind, name in checker.holdings if kind in key_of}
