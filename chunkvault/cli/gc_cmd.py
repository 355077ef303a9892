"""``chunkvault gc [--dry-run]``: delete what no kept version references, repack packs
that are mostly garbage. See :mod:`chunkvault.gc`."""

from __future__ import annotations

from pathlib import Path

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.errors import ChunkvaultError
from chunkvault.sizes import format_size


@click.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only say what would be dropped and freed (takes no lock, changes nothing).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@passphrase_option
@pass_cli
def gc(cli: CliContext, dry_run: bool, as_json: bool, passphrase_file: Path | None) -> None:
    """Drop the versions `retention` no longer keeps and delete every chunk and pack that
    no kept version references; rewrite packs whose garbage reaches
    retention.repack_threshold. Holds the writer lock (stop the agent first); safe to
    interrupt and run again."""
    cli.require_owner("collect garbage (it cannot read what other versions need)")
    from chunkvault.cli.progress import count_progress
    from chunkvault.gc import Collector, GcReport

    if dry_run:
        with cli.vault(passphrase_file, prepare=True) as vault:
            collector = Collector(vault)
            plan = collector.plan(sync=False)
        report = GcReport()
    else:
        with cli.writer("gc"), cli.vault(passphrase_file, writer=True, prepare=True) as vault:
            collector = Collector(vault)
            plan = collector.plan()
            with count_progress("gc", collector.steps(plan)) as progress:
                report = collector.sweep(plan, progress)
    objects = plan.objects
    summary = {
        "dry_run": dry_run,
        "versions_dropped": len(plan.drop),
        "versions_kept": plan.versions_kept,
        # (a repacked pack is deleted too, once its live chunks are in the new one)
        "objects_deleted": (
            len(objects.delete) + len(objects.repack) if dry_run else report.objects_deleted
        ),
        "packs_repacked": len(objects.repack) if dry_run else report.packs_repacked,
        "batches_rewritten": len(plan.batches) if dry_run else report.batches_rewritten,
        "stored_bytes": plan.stored_bytes,
        "freed_bytes": plan.freed_bytes if dry_run else report.bytes_freed,
        "kept_young": {"objects": objects.young[0], "bytes": objects.young[1]},
        "refused_batches_deleted": len(plan.refused) if dry_run else report.refused_deleted,
        "kept_for_writers": {"objects": objects.writers[0], "bytes": objects.writers[1]},
        "kept_below_threshold": {
            "packs": objects.below_threshold[0], "bytes": objects.below_threshold[1],
        },
        "problems": report.problems,
    }  # fmt: skip
    if as_json:
        echo_json(summary)
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        verb = "would free" if dry_run else "freed"
        click.echo(
            f"gc: {'would drop' if dry_run else 'dropped'} {len(plan.drop)} version(s) "
            f"({plan.versions_kept} kept); {summary['objects_deleted']} object(s) deleted, "
            f"{summary['packs_repacked']} pack(s) repacked, {summary['batches_rewritten']} "
            f"manifest batch(es) rewritten; {verb} {format_size(max(0, summary['freed_bytes']))}"
            f" of {format_size(plan.stored_bytes)} stored"
        )
        if objects.young[0]:
            click.echo(
                f"gc: kept {objects.young[0]} unreferenced object(s) "
                f"({format_size(objects.young[1])}) younger than retention.grace_hours: "
                "uploads whose commit may still come"
            )
        if summary["refused_batches_deleted"]:
            click.echo(
                f"gc: {'would delete' if dry_run else 'deleted'} "
                f"{summary['refused_batches_deleted']} manifest batch(es) of revoked writers, "
                "dated after their revocation"
            )
        if objects.writers[0]:
            click.echo(
                f"gc: kept {objects.writers[0]} unreferenced object(s) "
                f"({format_size(objects.writers[1])}) that write-only hosts stored: they "
                "may still deduplicate against them"
            )
        if objects.below_threshold[0]:
            click.echo(
                f"gc: left {format_size(objects.below_threshold[1])} of garbage in "
                f"{objects.below_threshold[0]} pack(s) under retention.repack_threshold"
            )
    if report.problems:
        raise ChunkvaultError(
            f"gc left {len(report.problems)} problem(s); what it could do is done",
            "check `chunkvault peers list`, then run gc again: it finishes what is left",
        )
