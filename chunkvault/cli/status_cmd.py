"""``chunkvault status``: peers up/down, what the vault holds, what is under-replicated."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json, table
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.names import json_fields, show


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@passphrase_option
@pass_cli
def status(cli: CliContext, as_json: bool, passphrase_file: Path | None) -> None:
    """Peers (probed now), files, chunks, packs, under-replicated chunks."""
    from chunkvault.rollback import missing_latest
    from chunkvault.status import vault_status

    with cli.vault(passphrase_file) as vault:
        report = vault_status(vault, probe_max_age=0, probe_budget=None)  # probed now
        missing = missing_latest(vault)
    report.extra["missing_latest"] = (
        None
        if missing is None
        else [{**json_fields(m.path), "deleted": m.deleted, "older_listed": m.older_listed}
              for m in missing]
    )  # fmt: skip
    if as_json:
        echo_json(asdict(report))
        return
    extra = report.extra
    click.echo(
        f"vault {extra['vault']}: {extra['files']} file(s), {extra['chunks']} chunk(s), "
        f"{extra['packs']} pack(s), "
        f"{report.under_replicated} under-replicated (target {extra['replicas_target']} "
        f"replicas), queue {report.queue_depth}"
    )
    if extra["unreadable_dirs"]:
        from chunkvault.watcher.unreadable import count, describe

        named = ", ".join(describe(d) for d in extra["unreadable"])
        more = extra["unreadable_dirs"] - len(extra["unreadable"])
        click.echo(f"warning: {count(extra['unreadable_dirs'])} in the tree cannot be read, so "
                   f"their files are not stored: {named}" + (f" and {more} more" if more else ""),
                   err=True)  # fmt: skip
    for m in missing or []:
        what = "deletion" if m.deleted else "newest version"
        how = "older versions are still there: rolled back" if m.older_listed else "lost"
        click.echo(f"warning: the {what} of {show(m.path)} is on no peer ({how}); "
                   "a fresh machine would not see it", err=True)  # fmt: skip
    moving = extra["rebalance"]
    if moving is not None:
        drained = f" (draining {', '.join(moving['draining'])})" if moving["draining"] else ""
        click.echo(f"rebalance{drained}: {moving['state']}, {moving['done']} of "
                   f"{moving['objects']} object(s) moved")  # fmt: skip
    click.echo(
        table(
            ["PEER", "STATE", "CHUNKS", "LATENCY", "LAST ERROR"],
            [
                [
                    p["name"],
                    ("up" if p["up"] else "down") + (", draining" if p["draining"] else ""),
                    p["chunks"],
                    f"{p['latency_ms']} ms" if p["latency_ms"] is not None else None,
                    p["last_error"],
                ]
                for p in report.peers
            ],
        )
    )
