"""``chunkvault ls``: the files in the vault.

Names are shown escaped (:func:`chunkvault.names.show`): one file is always one line.
``--json`` is lossless: ``path`` is the name when it is UTF-8, else its display form next
to ``path_b64``, the exact bytes (:func:`chunkvault.names.json_fields`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from chunkvault import names
from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json, table
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.sizes import format_size


def _iso(ns: int) -> str:
    return (
        datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


@click.command("ls")
@click.argument("patterns", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--deleted", is_flag=True, help="Include deleted files (still restorable).")
@click.option("--versions", is_flag=True, help="Include every version of each file.")
@passphrase_option
@pass_cli
def ls(
    cli: CliContext,
    patterns: tuple[str, ...],
    as_json: bool,
    deleted: bool,
    versions: bool,
    passphrase_file: Path | None,
) -> None:
    """List files: path, size, mtime, number of versions, deleted or not."""
    from chunkvault.restore import matches

    with cli.vault(passphrase_file) as vault:
        problem = vault.sync_problems()
        rows: list[tuple[str, dict[str, Any]]] = []
        for latest in vault.catalog.latest_all():
            if (latest.deleted and not deleted) or not matches(latest.path, patterns):
                continue
            history = vault.catalog.versions(latest.path)
            live = [v for v in history if not v.deleted]
            shown = live[-1] if live else latest  # a deleted file shows its last content
            row = {
                **names.json_fields(latest.path),
                "size": shown.size,
                "mtime": _iso(shown.mtime_ns),
                "mtime_ns": shown.mtime_ns,
                "mode": f"{shown.mode & 0o7777:04o}",
                "sha256": shown.sha256,
                "versions": len(live),
                "deleted": latest.deleted,
            }
            if versions:
                row["history"] = [
                    {"created": _iso(v.created_ns), "size": v.size, "mtime": _iso(v.mtime_ns),
                     "sha256": v.sha256, "deleted": v.deleted}
                    for v in history
                ]  # fmt: skip
            rows.append((latest.path, row))
    if as_json:
        echo_json([row for _path, row in rows])
    else:
        _print_table(rows)
    if problem is not None:
        raise problem


def _print_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """One line per file; with ``--versions``, one line per version below it, indented,
    with when it was stored (``@ ...``) in the PATH column and its own size and mtime (a
    deletion has none: ``-``) in theirs."""
    lines = []
    for path, r in rows:
        deleted = "yes" if r["deleted"] else ""
        lines.append([names.show(path), format_size(r["size"]), r["mtime"], r["versions"], deleted])
        for v in r.get("history", []):
            if v["deleted"]:
                lines.append([f"  @ {v['created']}", None, None, "", "yes"])
            else:
                lines.append([f"  @ {v['created']}", format_size(v["size"]), v["mtime"], "", ""])
    click.echo(table(["PATH", "SIZE", "MTIME", "VERSIONS", "DELETED"], lines))
