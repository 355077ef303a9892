"""``chunkvault repair``: every object back to R good copies, the keyring on every peer.
Takes the writer lock; see :mod:`chunkvault.repair`."""

from __future__ import annotations

from pathlib import Path

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.errors import ChunkvaultError
from chunkvault.sizes import format_size


@click.command()
@passphrase_option
@pass_cli
def repair(cli: CliContext, passphrase_file: Path | None) -> None:
    """Bring every object the stored versions need back to R good copies: reads and
    verifies every copy (as check --read-data), copies a verified one over each damaged
    copy and to the best-ranked peers missing one, and puts the keyring back on peers
    that lack it. Safe to run again; exits non-zero if something could not be repaired."""
    cli.require_owner("repair the vault (it cannot read what is stored)")
    from chunkvault.cli.progress import byte_progress, count_progress
    from chunkvault.integrity import describe
    from chunkvault.repair import Repairer

    with cli.writer("repair"), cli.vault(passphrase_file, writer=True, prepare=True) as vault:
        repairer = Repairer(vault, cli.keystore([p.peer for p in vault.peers]))
        check = repairer.checker.structure()
        with byte_progress("check", repairer.checker.data_bytes) as progress:
            repairer.checker.read_data(check, progress)
        report, plans = repairer.plan(check)
        with count_progress("repair", len(plans)) as progress:
            repairer.repair(report, plans, progress)
    for problem in report.check.problems:
        click.echo(f"found: {describe(problem)}")
    for problem in report.left:
        click.echo(f"left: {describe(problem)}")
    keyrings = (
        f", the keyring on {', '.join(report.keyrings_written)}" if report.keyrings_written else ""
    )
    click.echo(
        f"repair: {report.objects_repaired} object(s) repaired, {report.copies_written} "
        f"copies written ({format_size(report.bytes_written)}){keyrings}; "
        + (f"{len(report.left)} left" if report.left else "every object on R good copies")
    )
    if report.left:
        raise ChunkvaultError(
            f"{len(report.left)} object(s) could not be repaired",
            "an object with no good copy is lost (its files are named above); for failed "
            "writes, check `chunkvault peers list` and run repair again",
        )
