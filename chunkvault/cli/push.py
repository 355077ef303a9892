"""``chunkvault push``: one-shot ingest of the watched tree, or parts of it."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.cli.progress import byte_progress
from chunkvault.errors import ChunkvaultError
from chunkvault.sizes import format_size


def _relative(root: Path, given: str) -> str:
    path = Path(given).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    try:
        rel = path.relative_to(root.resolve())
    except ValueError:
        raise ChunkvaultError(
            f"{given} is outside the watched tree {root}", "push only paths under watch.path"
        ) from None
    return "" if rel == Path(".") else rel.as_posix()


def walk(root: Path, rel_dir: str) -> list[str]:
    """Regular files under ``root/rel_dir`` as sorted relative paths (symlinks not followed)."""
    start = root / rel_dir if rel_dir else root
    if start.is_file():
        return [rel_dir]
    found = []
    for dirpath, _dirs, files in os.walk(start):
        for name in files:
            full = Path(dirpath) / name
            if full.is_file() and not full.is_symlink():
                found.append(full.relative_to(root).as_posix())
    return sorted(found)


@click.command()
@click.argument("paths", nargs=-1)
@passphrase_option
@pass_cli
def push(cli: CliContext, paths: tuple[str, ...], passphrase_file: Path | None) -> None:
    """Store new and changed files now (default: the whole watched tree). Files gone from
    the tree are handled by their flow's on_delete (tombstone by default)."""
    from chunkvault.ingest import Ingestor

    cfg = cli.config
    root = cfg.watch.path
    if not root.is_dir():
        raise ChunkvaultError(f"watch.path {root} is not a directory", "fix watch.path")
    scopes = [_relative(root, p) for p in paths] or [""]
    started = time.monotonic()
    with cli.writer("push"), cli.vault(passphrase_file, writer=True) as vault:
        files = sorted({f for scope in scopes for f in walk(root, scope)})
        present = set(files)
        gone = [
            v.path
            for v in vault.catalog.latest_all()
            if not v.deleted and v.path not in present
            and any(s == "" or v.path == s or v.path.startswith(s + "/") for s in scopes)
        ]  # fmt: skip
        total = sum((root / f).stat().st_size for f in files if (root / f).exists())
        ingestor = None
        results = []
        with byte_progress("push", total) as progress:
            ingestor = Ingestor(vault, progress)
            try:
                results = [ingestor.ingest(f) for f in files] + [ingestor.delete(p) for p in gone]
            finally:
                ingestor.close()
    counts = Counter(r.action for r in results)
    new_chunks = sum(r.new_chunks for r in results)
    sent = sum(r.sent_bytes for r in results)
    for r in results:
        if r.action == "failed":
            click.echo(f"failed: {r.path}: {r.error}", err=True)
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to do"
    click.echo(
        f"push: {summary}; {new_chunks} new chunk(s), {format_size(sent)} sent "
        f"in {time.monotonic() - started:.1f}s"
    )
    if counts["failed"]:
        raise ChunkvaultError(
            f"{counts['failed']} file(s) not stored", "see the lines above; rerun push to retry"
        )
