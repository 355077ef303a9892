"""``chunkvault restore``: files back, byte-identical, from any surviving replicas."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.cli.progress import byte_progress
from chunkvault.errors import ChunkvaultError
from chunkvault.names import show
from chunkvault.sizes import format_size

if TYPE_CHECKING:
    from chunkvault.restore import Overwrite


@click.command()
@click.argument("patterns", nargs=-1)
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to restore into (created if missing).",
)
@click.option("--deleted", is_flag=True, help="Also restore deleted files (last content).")
@click.option(
    "--overwrite",
    type=click.Choice(["never", "if-changed", "always"]),
    default="never",
    show_default=True,
    help="A file already at the destination: never replace it (identical ones count as "
    "restored), replace it if its content differs, or always rewrite it.",
)
@passphrase_option
@pass_cli
def restore(
    cli: CliContext,
    patterns: tuple[str, ...],
    target: Path,
    deleted: bool,
    overwrite: Overwrite,
    passphrase_file: Path | None,
) -> None:
    """Restore files matching PATTERNs (globs, directories or paths; default: all).

    Existing files at the destination are never replaced unless --overwrite says so: a
    file that differs is kept and reported, so a restore cannot silently destroy an edit."""
    cli.require_owner("restore files: only the passphrase opens what it stored")
    from chunkvault.restore import Restorer, select

    started = time.monotonic()
    with cli.vault(passphrase_file, prepare=True) as vault:
        problem = vault.sync_problems()
        chosen = select(vault, patterns, deleted)
        if problem is not None and not chosen:
            raise problem
        if not chosen:
            raise ChunkvaultError(
                "nothing matches" + (f" {' '.join(map(show, patterns))}" if patterns else ""),
                "see `chunkvault ls` (add --deleted for deleted files)",
            )
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChunkvaultError(
                f"cannot create the restore target {target}: {exc.strerror}",
                "choose a directory you can write to with --to",
            ) from None
        with byte_progress("restore", sum(v.size for v in chosen)) as progress:
            restorer = Restorer(vault, progress, overwrite)
            try:
                report = restorer.restore(chosen, target)
            finally:
                restorer.close()
    for path, why in sorted(report.skipped.items()):
        click.echo(f"kept: {show(path)}: {why}", err=True)
    for path, error in sorted(report.failed.items()):
        click.echo(f"failed: {show(path)}: {error}", err=True)
    extra = "".join(
        [
            f", {len(report.unchanged)} already identical" if report.unchanged else "",
            f", {len(report.skipped)} kept as they are (--overwrite if-changed replaces them)"
            if report.skipped
            else "",
        ]
    )
    click.echo(
        f"restore: {len(report.restored)} file(s), {format_size(report.bytes)} to "
        f"{show(str(target))} in {time.monotonic() - started:.1f}s{extra}"
    )
    if report.failed and problem is not None:
        click.echo(f"error: {problem}", err=True)
    if report.failed:
        raise ChunkvaultError(
            f"{len(report.failed)} file(s) could not be restored: "
            + ", ".join(show(p) for p in sorted(report.failed)[:5])
            + (" ..." if len(report.failed) > 5 else ""),
            report.hint(),
        )
    if problem is not None:
        raise problem
