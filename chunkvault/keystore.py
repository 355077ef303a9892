"""Where the keyring lives: ``<state_dir>/keyring.json`` and ``<vault>/keyring`` on every
peer, so a fresh machine needs only the passphrase and the peer list.

The keyring holds slots only (never a bare key), so replicating it is safe: it is as
strong as the passphrases and their KDF.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chunkvault.backends.base import NotFound, Peer, PeerError
from chunkvault.crypto.keyring import (
    KdfCache,
    Keyring,
    KeyringCorrupted,
    KeyringFormatError,
    Slot,
    WrongPassphrase,
)
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import atomic_write

log = logging.getLogger(__name__)
LOCAL_NAME = "keyring.json"
# 16 slots of ~700 bytes each; anything much bigger is not a keyring of ours.
MAX_KEYRING_BYTES = 256 * 1024


class NoKeyring(ChunkvaultError):
    exit_code = 5


def keyring_key(vault_id: str) -> str:
    return f"{vault_id}/keyring"


def encode(ring: Keyring) -> bytes:
    return (json.dumps(ring.to_json(), indent=2) + "\n").encode()


def decode(data: bytes, where: str) -> Keyring:
    if len(data) > MAX_KEYRING_BYTES:
        raise KeyringFormatError(f"{where}: {len(data)} bytes is too big for a keyring")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KeyringFormatError(f"{where}: not valid JSON ({str(exc)[:80]})") from None
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


@dataclass
class Opened:
    """A keyring opened with a passphrase: the copy chosen, and what every peer holds."""

    ring: Keyring
    keys: MasterKeys
    slot: Slot
    source: str  # "local" or "peer <name>"
    copies: list[PeerCopy] = field(default_factory=list)  # empty when peers were not read
    # Peers whose copy this passphrase opens but whose MAC or material fails, or an old
    # format copy beside version 2 ones: damaged, forged or superseded whatever revision
    # they claim, so safe to overwrite.
    refused: set[str] = field(default_factory=set)
    # Peers holding the keyring of another vault with this vault.id: never overwritten.
    foreign: set[str] = field(default_factory=set)

    def stale_peers(self) -> list[str]:
        """Peers that miss this keyring or hold an older, damaged or forged copy (never
        one with a higher revision: that may be newer than ours, see :meth:`newer`)."""
        return [c.peer for c in self.copies if c.peer not in self.foreign and self._stale(c)]

    def _stale(self, copy: PeerCopy) -> bool:
        if copy.ring is None or copy.peer in self.refused:
            return True
        if copy.ring.revision != self.ring.revision:
            return copy.ring.revision < self.ring.revision
        return copy.ring.to_json() != self.ring.to_json()

    def newer(self) -> list[str]:
        return [f"{c.peer} (revision {c.ring.revision})" for c in self.copies
                if c.ring is not None and c.ring.revision > self.ring.revision
                and c.peer not in self.refused and c.peer not in self.foreign]  # fmt: skip


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
        ring = decode(data, str(self.path))
        self._check_vault(ring, str(self.path))
        return ring

    def peer_copies(self) -> list[PeerCopy]:
        """The keyring as every peer holds it (concurrently: one slow peer is not N). A
        copy that is too big, malformed or of another vault is that peer's error."""

        def fetch(peer: Peer) -> PeerCopy:
            try:
                ring = decode(peer.get(self.key, max_size=MAX_KEYRING_BYTES), f"peer {peer.name}")
            except NotFound:
                return PeerCopy(peer.name, missing=True)
            except (PeerError, ChunkvaultError) as exc:
                log.warning("keyring on peer %s ignored: %s", peer.name, exc)
                return PeerCopy(peer.name, error=str(exc))
            if ring.vault_id != self.vault_id:
                error = f"keyring of vault {ring.vault_id!r}, not {self.vault_id!r}"
                log.warning("keyring on peer %s ignored: %s", peer.name, error)
                return PeerCopy(peer.name, error=error)
            return PeerCopy(peer.name, ring=ring)

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            return list(pool.map(fetch, self.peers))

    def _no_keyring(self, copies: list[PeerCopy]) -> NoKeyring:
        errors = [f"{c.peer}: {c.error}" for c in copies if c.error]
        return NoKeyring(
            f"no keyring for vault {self.vault_id!r} in {self.path.parent} or on any peer"
            + (f" ({'; '.join(errors)})" if errors else ""),
            "run `chunkvault init` to create the vault"
            if not errors
            else "check the peers (`chunkvault peers list`) or run `chunkvault init`",
        )

    def load_unverified(self) -> tuple[Keyring, str]:
        """For commands without a passphrase (`key list`, `key export`): the local
        keyring, else the peers' copy claiming the highest revision. Nothing is saved: a
        claim is not proof until a passphrase checks it."""
        ring = self.load_local()
        if ring is not None:
            return ring, "local"
        copies = self.peer_copies()
        found = [c for c in copies if c.ring is not None]
        if not found:
            raise self._no_keyring(copies)
        best = max(found, key=lambda c: (c.ring.authenticated, c.ring.revision))  # type: ignore[union-attr]
        assert best.ring is not None
        return best.ring, f"peer {best.peer}"

    def open(self, passphrase: str, *, consult_peers: bool = False) -> Opened:
        """Unlock the newest keyring this passphrase can authenticate.

        Candidates are the local copy and (on a fresh machine, or when asked) every peer's.
        The highest *authenticated* revision wins: a peer that raises the revision of an
        old copy breaks its MAC and is skipped. Never below the local revision, never a
        version 1 copy while any peer or this machine has version 2 (a downgrade), and the
        chosen copy is saved locally only after it opened."""
        local = self.load_local()
        copies = self.peer_copies() if consult_peers or local is None else []
        candidates: list[tuple[str, Keyring]] = [("local", local)] if local else []
        foreign: set[str] = set()
        refused: set[str] = set()
        for copy in copies:
            if copy.ring is None:
                continue
            if local is not None and copy.ring.vault_uuid != local.vault_uuid:
                log.warning("peer %s holds the keyring of another vault named %r; ignored",
                            copy.peer, self.vault_id)  # fmt: skip
                foreign.add(copy.peer)
                continue
            candidates.append((f"peer {copy.peer}", copy.ring))
        if not candidates:
            raise self._no_keyring(copies)
        if any(ring.authenticated for _, ring in candidates):
            legacy = [source for source, ring in candidates if not ring.authenticated]
            if legacy:
                log.warning("ignoring old-format keyring on %s: newer copies exist",
                            ", ".join(legacy))  # fmt: skip
                refused.update(source.removeprefix("peer ") for source in legacy)
            candidates = [c for c in candidates if c[1].authenticated]
        # Highest claimed revision first; the first that opens and authenticates is the
        # highest authenticated one. Local first among equals (no download needed).
        candidates.sort(key=lambda c: (c[1].revision, c[0] == "local"), reverse=True)
        cache = KdfCache()
        failures: list[KeyringCorrupted] = []
        for source, ring in candidates:
            try:
                keys, slot = ring.unlock(passphrase, cache)
            except WrongPassphrase:
                continue
            except KeyringCorrupted as exc:
                log.warning("keyring copy on %s refused: %s", source, exc.message)
                failures.append(exc)
                refused.add(source.removeprefix("peer "))
                continue
            if local is not None and ring.revision < local.revision:
                raise WrongPassphrase(
                    f"this passphrase opens only an older keyring (revision {ring.revision} "
                    f"on {source}); this machine has revision {local.revision}, which it "
                    "does not open"
                )
            if source != "local":
                log.info("keyring revision %d loaded from %s", ring.revision, source)
                self.save_local(ring)
            opened = Opened(ring, keys, slot, source, copies, refused, foreign)
            if opened.newer():
                log.warning("peer(s) %s hold a keyring this passphrase does not open; using "
                            "revision %d", ", ".join(opened.newer()), ring.revision)  # fmt: skip
            return opened
        if failures:
            raise failures[0]
        raise WrongPassphrase()

    def _check_vault(self, ring: Keyring, where: str) -> None:
        if ring.vault_id != self.vault_id:
            raise ChunkvaultError(
                f"{where} belongs to vault {ring.vault_id!r}, but the config says "
                f"vault.id {self.vault_id!r}",
                "fix vault.id or vault.state_dir in the config",
            )

    # --- writing ---------------------------------------------------------------------------

    def save_local(self, ring: Keyring) -> None:
        atomic_write(self.path, encode(ring))

    def save(self, ring: Keyring, only: Collection[str] | None = None) -> list[str]:
        """Store locally (atomically), then on every peer (or those named in ``only``).
        Returns the peers that failed: the local copy is authoritative and the next save
        retries them."""
        data = encode(ring)
        self.save_local(ring)
        targets = [p for p in self.peers if only is None or p.name in only]

        def push(peer: Peer) -> str | None:
            try:
                peer.put(self.key, data)
            except PeerError as exc:
                log.warning("keyring not stored on peer %s: %s", peer.name, exc.message)
                return f"{peer.name} ({exc.message})"
            return None

        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            return [failed for failed in pool.map(push, targets) if failed]
