"""``chunkvault check``: is every object the vault's versions need on R peers, and (with
``--read-data``) does every copy still open? Read-only; see :mod:`chunkvault.check`."""

from __future__ import annotations

from pathlib import Path

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.errors import ChunkvaultError
from chunkvault.names import json_fields
from chunkvault.sizes import format_size


def subset_fraction(value: str) -> float:
    """``--read-data-subset``: "N%" (or "N"), 0 < N <= 100, as a fraction."""
    text = value.strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        percent = -1.0
    if not 0 < percent <= 100:
        raise click.BadParameter(f"{value!r} is not a percentage above 0 and up to 100 (5%)")
    return percent / 100


@click.command()
@click.option(
    "--read-data", is_flag=True, help="Download every copy of everything and check it opens."
)
@click.option(
    "--read-data-subset",
    metavar="N%",
    help="As --read-data, for N% of the objects (each run another).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@passphrase_option
@pass_cli
def check(
    cli: CliContext,
    read_data: bool,
    read_data_subset: str | None,
    as_json: bool,
    passphrase_file: Path | None,
) -> None:
    """Check that every object the stored versions need is on R peers, that every
    manifest batch opens and that each peer holds the keyring; with --read-data, that
    every copy on every peer authenticates. Lists each problem once, with the files it
    affects, and exits non-zero if there is any."""
    cli.require_owner("check the vault (it cannot read what is stored)")
    from chunkvault.check import Checker
    from chunkvault.cli.progress import byte_progress
    from chunkvault.integrity import affected, describe

    if read_data and read_data_subset:
        raise click.UsageError("--read-data and --read-data-subset exclude each other")
    fraction = 1.0 if read_data else 0.0
    if read_data_subset:
        fraction = subset_fraction(read_data_subset)
    with cli.vault(passphrase_file, prepare=True) as vault:
        checker = Checker(vault, fraction)
        report = checker.structure()
        if fraction:
            with byte_progress("check", checker.data_bytes) as progress:
                checker.read_data(report, progress)
    if as_json:
        echo_json({
            "versions": report.versions, "objects": report.objects, "peers": report.peers,
            "copies_read": report.copies_read, "bytes_read": report.bytes_read,
            "problems": [
                {"kind": p.kind, "subject": p.subject, "detail": p.detail,
                 "files": [json_fields(f) for f in p.files]}
                for p in report.problems
            ],
        })  # fmt: skip
    else:
        for problem in report.problems:
            click.echo(describe(problem))
    counts = ", ".join(
        f"{n} {kind}{'(es)' if kind.endswith('ch') else '(s)'}"
        for kind, n in sorted(report.objects.items())
    )
    read = (
        f"; read {report.copies_read} copies ({format_size(report.bytes_read)})" if fraction else ""
    )
    if not as_json:
        click.echo(
            f"check: {report.versions} version(s), {counts or 'no objects'} on "
            f"{report.peers} peer(s){read}: "
            + (f"{len(report.problems)} problem(s)" if report.problems else "no problems")
        )
    if report.problems:
        files = affected(report.problems)
        raise ChunkvaultError(
            f"{len(report.problems)} problem(s) found"
            + (f", affecting {len(files)} file(s)" if files else ""),
            "restores read around missing and damaged copies while one good copy is left; "
            "`chunkvault repair` brings every object back to R good copies",
        )
