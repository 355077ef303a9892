"""``chunkvault ls``: the files in the vault."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

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
        rows = []
        for latest in vault.catalog.latest_all():
            if (latest.deleted and not deleted) or not matches(latest.path, patterns):
                continue
            history = vault.catalog.versions(latest.path)
            live = [v for v in history if not v.deleted]
            shown = live[-1] if live else latest  # a deleted file shows its last content
            row = {
                "path": latest.path,
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
            rows.append(row)
    if as_json:
        echo_json(rows)
    else:
        _print_table(rows)
    if problem is not None:
        raise problem


def _print_table(rows: list[dict[str, Any]]) -> None:
    lines = []
    for r in rows:
        state = "deleted" if r["deleted"] else ""
        lines.append([r["path"], format_size(r["size"]), r["mtime"], r["versions"], state])
        for v in r.get("history", []):
            mark = "(deleted)" if v["deleted"] else format_size(v["size"])
            lines.append([f"  @ {v['created']}", mark, v["mtime"], "", ""])
    click.echo(table(["PATH", "SIZE", "MTIME", "VERSIONS", ""], lines))
