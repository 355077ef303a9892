"""State shared by every command: the config (loaded once, on first use), the peers, and
the unlocked vault."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chunkvault.cli.passphrase import PASSPHRASE_VARIABLES, current_passphrase
from chunkvault.config import Config, load_config
from chunkvault.errors import WriteOnlyHost

if TYPE_CHECKING:  # boto3 is imported only by commands that talk to peers: fast --help
    from chunkvault.backends.health import HealthPeer
    from chunkvault.crypto.keyring import Keyring, Slot
    from chunkvault.crypto.material import MasterKeys
    from chunkvault.keystore import KeyStore, Opened
    from chunkvault.vault import Vault


@dataclass
class Unlocked:
    """A keyring opened with a passphrase, and where it is stored."""

    store: KeyStore
    ring: Keyring
    keys: MasterKeys
    slot: Slot
    passphrase: str = field(repr=False)
    opened: Opened | None = field(default=None, repr=False)

    def copy_to_stale_peers(self, ring: Keyring | None = None) -> None:
        """Store the keyring on peers that miss it or hold an older, damaged or forged copy
        (a peer just added, one that was down at a change); exit 1 naming those it could
        not reach."""
        from chunkvault.errors import ChunkvaultError

        stale = self.opened.stale_peers() if self.opened else []
        if not stale:
            return
        failed = self.store.save(ring or self.ring, only=stale)
        fixed = [p for p in stale if not any(f.startswith(p + " ") for f in failed)]
        if fixed:
            click.echo(f"keyring copied to peer(s) {', '.join(fixed)}", err=True)
        if failed:
            raise ChunkvaultError(
                f"passphrase OK, but the keyring is not on {', '.join(failed)}",
                "rerun when the peers are up",
            )


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
    def peers(self, prepare: bool = False) -> Iterator[list[HealthPeer]]:
        """The configured peers. ``prepare``: the command will send requests, so their
        clients are made in the background from the start (see ``prepared_in_background``)."""
        from chunkvault.backends.stack import build_peers, prepared_in_background

        stack = build_peers(self.config)
        try:
            if prepare:
                with prepared_in_background(stack):
                    yield stack
            else:
                yield stack
        finally:
            for peer in stack:
                peer.close()

    def keystore(self, peers: list[HealthPeer]) -> KeyStore:
        from chunkvault.keystore import KeyStore

        return KeyStore(self.config.vault.state_dir, self.config.vault.id, peers)

    def passphrase(self, file_option: Path | None = None) -> str:
        return current_passphrase(file_option or self.passphrase_file)

    # --- write-only hosts (keys.writer_credential_file) ----------------------------------

    @property
    def write_only(self) -> bool:
        """This host stores with a writer credential and never holds the passphrase."""
        return self.config.keys.writer_credential_file is not None

    def require_owner(self, what: str) -> None:
        """Refuse (one line, exit 12) a command that needs the passphrase on a write-only
        host: ``what`` it cannot do."""
        if self.write_only:
            raise WriteOnlyHost(what)

    def _writer_keys(self, file_option: Path | None) -> MasterKeys:
        """The keys of a write-only host, from its credential. A passphrase offered here
        is refused: the point of the host's credential is that it holds none."""
        from chunkvault.writer_credential import CredentialError, load, writer_keys

        offered = ["--passphrase-file"] if file_option or self.passphrase_file else []
        offered += [name for name in PASSPHRASE_VARIABLES if os.environ.get(name)]
        if offered:
            raise CredentialError(
                f"this host is write-only (keys.writer_credential_file), but {offered[0]} "
                "offers it a passphrase",
                "a write-only host must not hold the passphrase: remove it from this host "
                "(or keys.writer_credential_file from the config)",
            )
        cfg = self.config
        path = cfg.keys.writer_credential_file
        assert path is not None
        credential = load(path)
        if credential.vault_id != cfg.vault.id:
            raise CredentialError(
                f"writer credential {path} is for vault {credential.vault_id!r}, not for "
                f"vault.id {cfg.vault.id!r}",
                "use the credential issued for this vault",
            )
        return writer_keys(credential, cfg.vault.state_dir)

    @contextmanager
    def writer(self, command: str) -> Iterator[None]:
        """The vault's writer lock (see :mod:`chunkvault.writerlock`) for the block."""
        from chunkvault.writerlock import writer_lock

        with writer_lock(self.config.vault.state_dir, self.config.vault.id, command):
            yield

    def unlock(
        self,
        peers: list[HealthPeer],
        file_option: Path | None = None,
        *,
        consult_peers: bool = False,
        writer: bool = False,
        passphrase: str | None = None,
    ) -> Unlocked:
        """Open the newest keyring the passphrase authenticates (locally, else from the
        peers; ``consult_peers`` reads the peers' copies even when there is a local one).

        ``writer`` (the caller holds the writer lock): a version 1 keyring is upgraded to
        the authenticated version 2 and stored everywhere. ``passphrase``: already read by
        the caller (else it is read now)."""
        self.require_owner("open the keyring")
        store = self.keystore(peers)
        if passphrase is None:
            passphrase = self.passphrase(file_option)
        opened = store.open(passphrase, consult_peers=consult_peers)
        ring = opened.ring
        if writer and not ring.authenticated:
            ring = ring.upgraded(opened.keys)
            failed = store.save(ring)
            click.echo(
                f"keyring upgraded to format version {ring.version} (revision {ring.revision})"
                + (f"; not yet stored on {', '.join(failed)}" if failed else ""),
                err=True,
            )
            opened.ring = ring
        return Unlocked(store, ring, opened.keys, opened.slot, passphrase, opened)

    @contextmanager
    def vault(
        self,
        file_option: Path | None = None,
        sync: bool = True,
        writer: bool = False,
        prepare: bool = False,
        passphrase: str | None = None,
    ) -> Iterator[Vault]:
        """Unlock and open the vault; on a fresh machine rebuild the catalog from peers.
        ``writer``: the caller holds the writer lock. ``prepare``: the command will send
        requests (see :meth:`peers`). ``passphrase``: as for :meth:`unlock`.

        On a write-only host the vault opens with the writer credential's keys, and its
        catalog is what this host stored (it can read nothing back to sync from)."""
        from chunkvault.peerset import place
        from chunkvault.vault import Vault

        with self.peers(prepare) as peers:
            if self.write_only:
                keys = self._writer_keys(file_option)
            else:
                keys = self.unlock(peers, file_option, writer=writer, passphrase=passphrase).keys
            vault = Vault(self.config, place(self.config, peers), keys)
            try:
                if sync and not vault.write_only:
                    vault.ensure_synced()
                if writer:  # commits a kill cut short (read-only commands leave them be)
                    vault.recover_pending()
                yield vault
            finally:
                vault.close()


pass_cli = click.make_pass_decorator(CliContext)
