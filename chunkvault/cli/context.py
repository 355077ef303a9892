"""State shared by every command: the config (loaded once, on first use), the peers, and
the unlocked vault."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chunkvault.cli.passphrase import current_passphrase
from chunkvault.config import Config, load_config

if TYPE_CHECKING:  # boto3 is imported only by commands that talk to peers: fast --help
    from chunkvault.backends.health import HealthPeer
    from chunkvault.crypto.keyring import Keyring, Slot
    from chunkvault.crypto.material import MasterKeys
    from chunkvault.keystore import KeyStore
    from chunkvault.vault import Vault


@dataclass
class Unlocked:
    """A keyring opened with a passphrase, and where it is stored."""

    store: KeyStore
    ring: Keyring
    keys: MasterKeys
    slot: Slot
    passphrase: str = field(repr=False)


@dataclass
class CliContext:
    config_path: Path | None
    debug: bool = False
    passphrase_file: Path | None = None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @contextmanager
    def peers(self) -> Iterator[list[HealthPeer]]:
        from chunkvault.backends.stack import build_peers

        stack = build_peers(self.config)
        try:
            yield stack
        finally:
            for peer in stack:
                peer.close()

    def keystore(self, peers: list[HealthPeer]) -> KeyStore:
        from chunkvault.keystore import KeyStore

        return KeyStore(self.config.vault.state_dir, self.config.vault.id, peers)

    def passphrase(self, file_option: Path | None = None) -> str:
        return current_passphrase(file_option or self.passphrase_file)

    def unlock(self, peers: list[HealthPeer], file_option: Path | None = None) -> Unlocked:
        """Load the keyring (locally, else from the peers) and open it."""
        store = self.keystore(peers)
        ring = store.load()
        passphrase = self.passphrase(file_option)
        keys, slot = ring.unlock(passphrase)
        return Unlocked(store, ring, keys, slot, passphrase)

    @contextmanager
    def vault(self, file_option: Path | None = None, sync: bool = True) -> Iterator[Vault]:
        """Unlock and open the vault; on a fresh machine rebuild the catalog from peers."""
        from chunkvault.peerset import place
        from chunkvault.vault import Vault

        with self.peers() as peers:
            unlocked = self.unlock(peers, file_option)
            vault = Vault(self.config, place(self.config, peers), unlocked.keys)
            try:
                if sync:
                    vault.ensure_synced()
                yield vault
            finally:
                vault.close()


pass_cli = click.make_pass_decorator(CliContext)
