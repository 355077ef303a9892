"""``chunkvault init``: create a vault's keyring, its state directory and the buckets."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chunkvault.backends.base import PeerError
from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import current_passphrase, passphrase_option
from chunkvault.crypto.keyring import Keyring
from chunkvault.errors import ChunkvaultError

if TYPE_CHECKING:
    from chunkvault.backends.health import HealthPeer


@click.command()
@click.option("--label", default="default", show_default=True, help="Label of the first slot.")
@click.option(
    "--if-missing",
    is_flag=True,
    help="If the vault already exists (here or on a peer), check that the passphrase opens "
    "it, copy its keyring to peers that miss it, and exit 0 instead of refusing: for "
    "scripts and compose's one-shot init.",
)
@passphrase_option
@pass_cli
def init(cli: CliContext, label: str, if_missing: bool, passphrase_file: Path | None) -> None:
    """Create a new vault: keyring (locally and on every peer), state dir and buckets.

    Refuses to touch a vault that already exists here or on any peer.
    """
    cli.require_owner("initialise a vault")
    cfg = cli.config
    with cli.writer("init"), cli.peers() as peers:
        store = cli.keystore(peers)
        if if_missing and store.path.exists():
            return _already_there(cli, peers, passphrase_file, "here")
        if store.path.exists():
            raise ChunkvaultError(
                f"vault {cfg.vault.id!r} is already initialised here ({store.path})",
                "nothing to do; `chunkvault key verify` checks the passphrase",
            )
        for peer in peers:
            try:
                peer.create_container()
            except PeerError as exc:
                raise ChunkvaultError(
                    f"cannot initialise peer {peer.name}: {exc.message}",
                    "init needs every peer; check `chunkvault peers list`",
                ) from None
        copies = store.peer_copies()
        unreachable = [f"{c.peer} ({c.error})" for c in copies if c.error]
        if unreachable:
            raise ChunkvaultError(
                f"cannot check whether the vault exists on {', '.join(unreachable)}",
                "init needs every peer; check `chunkvault peers list`",
            )
        existing = [c.peer for c in copies if not c.missing]
        if existing and if_missing:
            return _already_there(cli, peers, passphrase_file, "on " + ", ".join(existing))
        if existing:
            raise ChunkvaultError(
                f"vault {cfg.vault.id!r} already exists on peer(s) {', '.join(existing)}; "
                "refusing to overwrite it",
                "to use it on this machine just run a command with its passphrase (the "
                "keyring is fetched from the peers); for a new vault choose another vault.id",
            )
        passphrase = current_passphrase(passphrase_file or cli.passphrase_file, confirm=True)
        ring, keys = Keyring.create(cfg.vault.id, passphrase, kdf=cfg.keys.kdf, label=label)
        failed = store.save(ring)
        if failed:
            # All or nothing: a vault whose keyring is missing on a peer is not restorable
            # from that peer alone, so undo and let the user retry.
            for peer in peers:
                with contextlib.suppress(PeerError):
                    peer.delete(store.key)
            store.path.unlink(missing_ok=True)
            raise ChunkvaultError(
                f"could not store the keyring on {', '.join(failed)}; nothing was created",
                "check `chunkvault peers list` and run init again",
            )
        _new_catalog(cfg.vault.state_dir, keys.current)
    click.echo(
        f"vault {cfg.vault.id!r} initialised: keyring in {store.path} and on "
        f"{len(peers)} peer(s), slot {label!r} ({cfg.keys.kdf})."
    )
    click.echo(
        "Keep the passphrase safe: without it nobody, including you, can decrypt the data. "
        "A paper backup of the keyring: `chunkvault key export --paper`.",
        err=True,
    )


def _new_catalog(state_dir: Path, generation: int) -> None:
    """A new vault: no peer holds anything of it (init checked), so the first command need
    not list every peer to rebuild the catalog from them. The key generation in use is
    recorded now too, so the first unlock writes nothing (a push's plan, made before the
    unlock, then stands: see EarlyPlan)."""
    from chunkvault.catalog import Catalog
    from chunkvault.vault import CATALOG_NAME, GENERATION_FLOOR, SYNCED

    catalog = Catalog(state_dir / CATALOG_NAME)
    try:
        catalog.set_meta(SYNCED, "1")
        catalog.set_meta(GENERATION_FLOOR, str(generation))
    finally:
        catalog.close()


def _already_there(
    cli: CliContext, peers: list[HealthPeer], passphrase_file: Path | None, where: str
) -> None:
    """``--if-missing`` on an existing vault: it must open with this passphrase, and every
    peer gets the keyring (what ``key verify`` does)."""
    unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
    unlocked.copy_to_stale_peers()  # e.g. a peer added since: it gets the keyring too
    click.echo(
        f"vault {cli.config.vault.id!r} already exists {where}; the passphrase opens it "
        f"(keyring revision {unlocked.ring.revision}): nothing to do."
    )
