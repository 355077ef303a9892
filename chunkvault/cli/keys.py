"""``chunkvault key ...``: passphrase slots, master-key rotation, keyring backup."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from chunkvault.cli.context import CliContext, Unlocked, pass_cli
from chunkvault.cli.output import echo_json, table
from chunkvault.cli.passphrase import NEW_PASSPHRASE_HELP, new_passphrase, passphrase_option
from chunkvault.crypto.keyring import Keyring, KeyringCorrupted
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError

F = TypeVar("F", bound=Callable[..., Any])


def _saved(cli: CliContext, unlocked: Unlocked, ring: Keyring) -> list[str]:
    """Store a changed keyring; peers that missed it are retried by the next save (and
    `key verify`). Returns the peers that missed it."""
    failed = unlocked.store.save(ring)
    if failed:
        click.echo(
            f"warning: keyring saved locally but not on {', '.join(failed)}; "
            "run `chunkvault key verify` when they are back to copy it there",
            err=True,
        )
    return failed


@click.group()
def key() -> None:
    """Manage passphrase slots and the master key."""


def owner_only(command: F) -> F:
    """A key command: refused on a write-only host (under ``pass_cli``, so that `--help`
    works everywhere)."""

    @functools.wraps(command)
    def refusing(cli: CliContext, *args: Any, **kwargs: Any) -> Any:
        cli.require_owner("manage keys")
        return command(cli, *args, **kwargs)

    return refusing  # type: ignore[return-value]


@key.command()
@passphrase_option
@pass_cli
@owner_only
def verify(cli: CliContext, passphrase_file: Path | None) -> None:
    """Check the passphrase, and that every peer holds the current keyring (copying it to
    peers that miss it or hold an older, damaged or forged copy)."""
    with cli.writer("key verify"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        opened = unlocked.opened
        assert opened is not None
        ring, slot = unlocked.ring, unlocked.slot
        if not slot.active:
            click.echo(
                f"warning: this passphrase opens slot {slot.id}, superseded by an interrupted "
                "`key passwd`; rerun `chunkvault key passwd` to finish it",
                err=True,
            )
        elif any(not s.active for s in ring.slots):
            # The new passphrase of an interrupted change is proven: finish the change.
            ring = ring.without_superseded(unlocked.keys)
            _saved(cli, unlocked, ring)
            click.echo("finished an interrupted passphrase change: old slot removed", err=True)
        unlocked.copy_to_stale_peers(ring)
        if opened.foreign:
            raise ChunkvaultError(
                f"passphrase OK, but peer(s) {', '.join(sorted(opened.foreign))} hold the "
                f"keyring of another vault named {ring.vault_id!r}; left as it is",
                "each vault needs its own vault.id (or bucket); check the peers' config",
            )
        if opened.newer():
            raise ChunkvaultError(
                f"passphrase OK for revision {ring.revision}, but peer(s) "
                f"{', '.join(opened.newer())} hold a keyring it does not open",
                "if you changed a passphrase on another machine, use the new one; otherwise "
                "those copies are forged or damaged: check the peers",
            )
    click.echo(
        f"passphrase OK: opens slot {slot.label!r} ({slot.id}) of vault {ring.vault_id!r}, "
        f"keyring revision {ring.revision}"
    )


@key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
@owner_only
def list_slots(cli: CliContext, as_json: bool) -> None:
    """Show the key slots and issued writer credentials (no passphrase needed: the keyring
    holds no readable secret)."""
    with cli.peers() as peers:
        ring, source = cli.keystore(peers).load_unverified()
    if source != "local":
        click.echo(
            f"note: no keyring on this machine; showing revision {ring.revision} from "
            f"{source}, not verified (commands with the passphrase verify it)",
            err=True,
        )
    rows = [
        {"kind": "slot", "id": s.id, "label": s.label, "created": s.created, "kdf": s.kdf.alg,
         **s.kdf.params, "state": "active" if s.active else f"superseded by {s.superseded_by}"}
        for s in ring.slots
    ]  # fmt: skip
    writers = [
        {"kind": "writer", "id": w.id, "label": w.label, "created": w.created,
         "state": "active" if w.revoked is None else f"revoked {w.revoked}"}
        for w in ring.writers
    ]  # fmt: skip
    if as_json:
        echo_json(rows + writers)
        return
    click.echo(
        table(
            ["ID", "LABEL", "CREATED", "KDF", "PARAMETERS", "STATE"],
            [
                [
                    s.id,
                    s.label,
                    s.created,
                    s.kdf.alg,
                    " ".join(f"{k}={v}" for k, v in s.kdf.params.items()),
                    "active" if s.active else "superseded (interrupted `key passwd`)",
                ]
                for s in ring.slots
            ],
        )
    )
    if writers:
        click.echo()
        cells = [[w["id"], w["label"], w["created"], w["state"]] for w in writers]
        click.echo(table(["WRITER", "LABEL", "CREATED", "STATE"], cells))


@key.command(epilog=NEW_PASSPHRASE_HELP)
@click.option("--label", required=True, help="Name of the new slot (e.g. 'laptop', 'paper').")
@passphrase_option
@pass_cli
@owner_only
def add(cli: CliContext, label: str, passphrase_file: Path | None) -> None:
    """Add a slot: another passphrase that opens the same vault."""
    with cli.writer("key add"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        ring = unlocked.ring.add_slot(unlocked.keys, new_passphrase(), label, cli.config.keys.kdf)
        _saved(cli, unlocked, ring)
    click.echo(f"slot {label!r} added; {len(ring.slots)} slot(s) now")


@key.command(epilog=NEW_PASSPHRASE_HELP)
@passphrase_option
@pass_cli
@owner_only
def passwd(cli: CliContext, passphrase_file: Path | None) -> None:
    """Change the passphrase of the slot it opens. Touches only the keyring: O(1) in vault
    size, no chunk or manifest is rewritten."""
    with cli.writer("key passwd"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        added, final = unlocked.ring.replace_slot_passphrase(
            unlocked.keys, unlocked.slot, new_passphrase(), cli.config.keys.kdf
        )
        # New slot stored first (old one marked superseded), old one removed second: a
        # crash in between leaves a keyring that both passphrases open, never one that
        # neither does; rerunning from either passphrase finishes the change.
        unlocked.store.save(added)
        failed = _saved(cli, unlocked, final)
    before = {s.id for s in unlocked.ring.slots}
    label = next(s.label for s in final.slots if s.id not in before)
    if failed:
        click.echo(
            f"passphrase of slot {label!r} changed here and on {len(peers) - len(failed)} of "
            f"{len(peers)} peer(s); the old one still opens the copies on "
            f"{', '.join(f.split(' ')[0] for f in failed)} until `chunkvault key verify` "
            "replaces them"
        )
        return
    click.echo(f"passphrase of slot {label!r} changed; the old one no longer works")


@key.command()
@click.argument("slot")
@passphrase_option
@pass_cli
@owner_only
def remove(cli: CliContext, slot: str, passphrase_file: Path | None) -> None:
    """Remove a slot by id or label (never the last one)."""
    with cli.writer("key remove"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        target = unlocked.ring.find(slot)
        ring = unlocked.ring.remove_slot(unlocked.keys, slot)
        _saved(cli, unlocked, ring)
    click.echo(f"slot {target.label!r} ({target.id}) removed; {len(ring.slots)} slot(s) left")


@key.command("rotate-master")
@click.option("--yes", is_flag=True, help="Do not ask before removing the other slots.")
@passphrase_option
@pass_cli
@owner_only
def rotate_master(cli: CliContext, yes: bool, passphrase_file: Path | None) -> None:
    """Replace the master key: new generation, every data key re-wrapped (object metadata
    by server-side copy; no chunk data is re-sent). Resumable: rerun after an interruption.

    Slots other than the one the passphrase opens cannot be re-wrapped without their
    passphrases; they are removed (re-add them with `key add`).
    """
    from chunkvault.catalog import Catalog
    from chunkvault.journal import JournalStore
    from chunkvault.manifest import ManifestStore
    from chunkvault.peerset import place
    from chunkvault.rotation import (
        rewrap_batches,
        rewrap_catalog,
        rewrap_chunk_objects,
        rewrap_manifests,
    )
    from chunkvault.vault import check_generation

    cfg = cli.config
    with cli.writer("key rotate-master"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        keys, slot, ring = unlocked.keys, unlocked.slot, unlocked.ring
        check_generation(cfg.vault.state_dir, keys, "the keyring")
        kdf = slot.kdf.alg
        if len(keys.keks) == 1:
            others = [s.label for s in ring.slots if s.id != slot.id]
            if others and not yes:
                if not sys.stdin.isatty():
                    raise ChunkvaultError(
                        f"rotate-master would remove slot(s) {', '.join(others)}",
                        "pass --yes to confirm, then re-add them with `chunkvault key add`",
                    )
                click.confirm(
                    f"Slots {', '.join(others)} will be removed (re-add them afterwards). Go on?",
                    abort=True,
                    err=True,
                )
            generation = keys.add_generation()
            # The vault key and writer keys move to the new generation with the slot.
            ring = ring.rewrap_all(keys, slot, unlocked.passphrase, kdf).rewrapped_secrets(keys)
            _saved(cli, unlocked, ring)
            click.echo(f"rotation started: master key generation {generation}", err=True)
        else:
            generation = keys.current
            click.echo(f"resuming rotation to generation {generation}", err=True)
        workers = cfg.transfer.concurrency
        report = rewrap_chunk_objects(peers, cfg.vault.id, keys, generation, workers=workers)
        manifests = ManifestStore(
            cfg.vault.id, keys, place(cfg, peers), cfg.replication.metadata_copies, 1
        )
        m_report = rewrap_manifests(manifests, keys, generation, workers=workers)
        # Batches too: the old generation is dropped only once nothing is sealed under it.
        batches = JournalStore(
            cfg.vault.id, keys, place(cfg, peers), cfg.replication.metadata_copies, 1
        )
        b_report = rewrap_batches(batches, keys, generation, workers=workers)
        failures = report.failures + m_report.failures + b_report.failures
        if failures:
            for failure in failures[:10]:
                click.echo(f"  {failure}", err=True)
            done = report.rewrapped + m_report.rewrapped + b_report.rewrapped
            raise ChunkvaultError(
                f"rotation incomplete: {len(failures)} object(s) not re-wrapped "
                f"({done} done); the old key is kept",
                "rerun `chunkvault key rotate-master` to resume",
            )
        catalog_path = cfg.vault.state_dir / "catalog.db"
        cached = 0
        if catalog_path.exists():
            catalog = Catalog(catalog_path)
            try:
                cached = rewrap_catalog(catalog, keys, generation)
            finally:
                catalog.close()
        ring = ring.rewrapped_secrets(keys)  # (a no-op unless an older version started)
        keys.drop_generations_except(generation)
        ring = ring.rewrap_all(keys, ring.slots[0], unlocked.passphrase, kdf)
        _saved(cli, unlocked, ring)
        # From now on a keyring of an older generation is a rollback, here at least.
        check_generation(cfg.vault.state_dir, keys, "the keyring", record=True)
    click.echo(
        f"master key rotated to generation {generation}: {report.rewrapped} data key(s) "
        f"re-wrapped in {report.examined} chunk object(s), {m_report.rewrapped} manifest(s) "
        f"re-sealed, {b_report.rewrapped} manifest batch(es) re-sealed, {cached} catalog "
        "entr(ies) updated; old generations dropped"
    )


@key.command("export")
@click.option("--paper", is_flag=True, help="Printable text with per-line checksums.")
@pass_cli
@owner_only
def export(cli: CliContext, paper: bool) -> None:
    """Print the keyring for a backup (it holds only passphrase-wrapped slots)."""
    from chunkvault.crypto.paper import to_paper
    from chunkvault.keystore import encode

    with cli.peers() as peers:
        ring, source = cli.keystore(peers).load_unverified()
    if source != "local":
        click.echo(
            f"note: no keyring on this machine; exporting the copy on {source}, not verified "
            "(`key import` checks it with the passphrase)",
            err=True,
        )
    data = encode(ring)
    if not paper:
        click.echo(data.decode(), nl=False)
        return
    slots = ", ".join(s.label for s in ring.slots)
    description = (
        f"vault: {ring.vault_id}  uuid: {ring.vault_uuid.hex()}  revision: {ring.revision}\n"
        f"slots: {slots}\n"
        "Restore with `chunkvault key import --paper FILE` (typed lines; a checksum ends each)."
    )
    click.echo(to_paper(data, description), nl=False)


def _counts(ring: Keyring, keys: MasterKeys) -> bool:
    """Whether a copy's revision is one to stay above: a version 1 copy's is unproven but
    harmless to exceed; a version 2 copy's counts only if it authenticates."""
    if not ring.authenticated:
        return True
    try:
        ring.verify(keys)
    except KeyringCorrupted:
        return False
    return True


@key.command("import")
@click.argument("source", type=click.File("r"), default="-")
@click.option("--paper", is_flag=True, help="SOURCE is a paper backup, not JSON.")
@passphrase_option
@pass_cli
@owner_only
def import_(
    cli: CliContext, source: click.utils.LazyFile, paper: bool, passphrase_file: Path | None
) -> None:
    """Restore the keyring from a backup (file or - for stdin), here and on every peer.
    The passphrase of one of its slots proves the backup is intact and yours."""
    from chunkvault.crypto.paper import PaperError, from_paper
    from chunkvault.keystore import decode
    from chunkvault.vault import check_generation

    text = source.read()
    try:
        data = from_paper(text) if paper else text.encode()
    except PaperError as exc:
        raise ChunkvaultError(f"paper backup: {exc}") from None
    ring = decode(data, "backup")
    cfg = cli.config
    if ring.vault_id != cfg.vault.id:
        raise ChunkvaultError(
            f"the backup is of vault {ring.vault_id!r}, the config says {cfg.vault.id!r}",
            "set vault.id to match",
        )
    keys, _slot = ring.unlock(cli.passphrase(passphrase_file))
    with cli.writer("key import"), cli.peers() as peers:
        store = cli.keystore(peers)
        present = [r for r in [store.load_local()] if r] + [
            c.ring for c in store.peer_copies() if c.ring
        ]
        foreign = [r for r in present if r.vault_uuid != ring.vault_uuid]
        if foreign:
            raise ChunkvaultError(
                "a different vault with the same vault.id exists here or on the peers; "
                "refusing to replace its keyring"
            )
        check_generation(cfg.vault.state_dir, keys, "the backup")
        # Win over any copy still around, so every machine picks this one; sealed again
        # because the revision is authenticated.
        newest = max([r.revision for r in present if _counts(r, keys)], default=ring.revision)
        ring = replace(ring, revision=max(newest, ring.revision) + 1).sealed(keys)
        failed = store.save(ring)
    click.echo(f"keyring imported ({len(ring.slots)} slot(s)); `chunkvault key verify` checks it")
    if failed:
        click.echo(f"warning: not stored on {', '.join(failed)}", err=True)


@key.command("writer-credential")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to create (mode 0600; never over an existing file).",
)
@click.option("--label", default=None, help="Name of the writer [default: writer-N].")
@passphrase_option
@pass_cli
@owner_only
def writer_credential(
    cli: CliContext, out: Path, label: str | None, passphrase_file: Path | None
) -> None:
    """Issue a credential for a write-only host: the vault's public key, the chunk-id key
    and a key of its own, nothing that decrypts (the vault gets its key pair the first
    time). `key list` shows it; `key revoke-writer` stops trusting it."""
    from chunkvault.crypto.domains import writer_id_key
    from chunkvault.writer_credential import WriterCredential, write_new

    if out.exists() or out.is_symlink():
        raise ChunkvaultError(f"{out} exists: a credential is never written over a file",
                              "choose another --out, or remove the old file first")  # fmt: skip
    with cli.writer("key writer-credential"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        ring, keys = unlocked.ring, unlocked.keys
        if label is None:
            taken = {w.label for w in ring.writers}
            label = next(f"writer-{n}" for n in range(1, len(taken) + 2)
                         if f"writer-{n}" not in taken)  # fmt: skip
        ring, writer, secret = ring.add_writer(keys, label)
        assert ring.vault_key is not None
        credential = WriterCredential(
            ring.vault_id, ring.vault_uuid, writer.id, writer.label, ring.vault_key.public,
            writer_id_key(keys.id_key, writer.id), secret,
        )  # fmt: skip
        # The keyring first: a credential the keyring does not know would be refused.
        _saved(cli, unlocked, ring)
        write_new(out, credential)
    click.echo(f"writer {label!r} ({writer.id}) issued: {out} (mode 0600); copy it to the "
               "write-only host and delete it here")  # fmt: skip


@key.command("revoke-writer")
@click.argument("writer")
@passphrase_option
@pass_cli
@owner_only
def revoke_writer(cli: CliContext, writer: str, passphrase_file: Path | None) -> None:
    """Stop trusting a writer credential (by label or id)."""
    with cli.writer("key revoke-writer"), cli.peers() as peers:
        unlocked = cli.unlock(peers, passphrase_file, consult_peers=True, writer=True)
        target = unlocked.ring.find_writer(writer)
        ring = unlocked.ring.revoke_writer(unlocked.keys, writer)
        _saved(cli, unlocked, ring)
    click.echo(f"writer {target.label!r} ({target.id}) revoked")
