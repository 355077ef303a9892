"""Where the keyring lives: ``<state_dir>/keyring.json`` and ``<vault>/keyring`` on every
peer, so a fresh machine needs only the passphrase and the peer list.

The keyring holds slots only (never a bare key), so replicating it is safe: it is as
strong as the passphrases and their KDF.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chunkvault.backends.base import NotFound, Peer, PeerError
from chunkvault.crypto.keyring import Keyring, KeyringFormatError
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import atomic_write

log = logging.getLogger(__name__)
LOCAL_NAME = "keyring.json"


class NoKeyring(ChunkvaultError):
    exit_code = 5


def keyring_key(vault_id: str) -> str:
    return f"{vault_id}/keyring"


def encode(ring: Keyring) -> bytes:
    return (json.dumps(ring.to_json(), indent=2) + "\n").encode()


def decode(data: bytes, where: str) -> Keyring:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyringFormatError(f"{where}: not valid JSON ({exc})") from None
    try:
        return Keyring.from_json(obj)
    except KeyringFormatError as exc:
        raise KeyringFormatError(f"{where}: {exc.message}", exc.hint) from None


@dataclass
class PeerCopy:
    peer: str
    ring: Keyring | None = None
    missing: bool = False
    error: str | None = None


class KeyStore:
    def __init__(self, state_dir: Path, vault_id: str, peers: Sequence[Peer]) -> None:
        self.path = Path(state_dir) / LOCAL_NAME
        self.vault_id = vault_id
        self.peers = list(peers)
        self.key = keyring_key(vault_id)

    # --- reading ---------------------------------------------------------------------------

    def load_local(self) -> Keyring | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ChunkvaultError(f"cannot read {self.path}: {exc.strerror}") from None
        return decode(data, str(self.path))

    def peer_copies(self) -> list[PeerCopy]:
        """The keyring as every peer holds it (concurrently: one slow peer is not N)."""

        def fetch(peer: Peer) -> PeerCopy:
            try:
                return PeerCopy(peer.name, ring=decode(peer.get(self.key), f"peer {peer.name}"))
            except NotFound:
                return PeerCopy(peer.name, missing=True)
            except (PeerError, ChunkvaultError) as exc:
                return PeerCopy(peer.name, error=str(exc))

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            return list(pool.map(fetch, self.peers))

    def load(self) -> Keyring:
        """The local keyring; on a fresh machine, the newest copy on the peers (then kept
        locally)."""
        ring = self.load_local()
        if ring is not None:
            self._check_vault(ring, str(self.path))
            return ring
        copies = self.peer_copies()
        found = [c for c in copies if c.ring is not None and c.ring.vault_id == self.vault_id]
        if not found:
            errors = [f"{c.peer}: {c.error}" for c in copies if c.error]
            raise NoKeyring(
                f"no keyring for vault {self.vault_id!r} in {self.path.parent} or on any peer"
                + (f" ({'; '.join(errors)})" if errors else ""),
                "run `chunkvault init` to create the vault"
                if not errors
                else "check the peers (`chunkvault peers list`) or run `chunkvault init`",
            )
        newest = max(found, key=lambda c: c.ring.revision if c.ring else -1)
        assert newest.ring is not None
        log.info("keyring revision %d loaded from peer %s", newest.ring.revision, newest.peer)
        atomic_write(self.path, encode(newest.ring))
        return newest.ring

    def _check_vault(self, ring: Keyring, where: str) -> None:
        if ring.vault_id != self.vault_id:
            raise ChunkvaultError(
                f"{where} belongs to vault {ring.vault_id!r}, but the config says "
                f"vault.id {self.vault_id!r}",
                "fix vault.id or vault.state_dir in the config",
            )

    # --- writing ---------------------------------------------------------------------------

    def save(self, ring: Keyring) -> list[str]:
        """Store locally (atomically), then on every peer. Returns the peers that failed:
        the local copy is authoritative and the next save retries them."""
        data = encode(ring)
        atomic_write(self.path, data)

        def push(peer: Peer) -> str | None:
            try:
                peer.put(self.key, data)
            except PeerError as exc:
                log.warning("keyring not stored on peer %s: %s", peer.name, exc.message)
                return f"{peer.name} ({exc.message})"
            return None

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            return [failed for failed in pool.map(push, self.peers) if failed]
