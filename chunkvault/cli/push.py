"""``chunkvault push``: one-shot ingest of the watched tree, or parts of it."""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from pathlib import Path

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.cli.progress import byte_progress
from chunkvault.errors import ChunkvaultError
from chunkvault.names import show
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


def walk(root: Path, rel_dir: str) -> dict[str, int]:
    """Regular files under ``root/rel_dir`` (or that one file) with their sizes, by relative
    path. No symlink below ``root`` is followed: not a symlinked file, nor a directory."""
    from chunkvault.fsutil import lstat_in_tree, open_dir
    from chunkvault.watcher.scan import scan_tree

    if rel_dir:
        try:
            root_fd = open_dir(root)
            try:
                st = lstat_in_tree(root_fd, rel_dir)
            finally:
                os.close(root_fd)
        except OSError:
            return {}  # gone (its catalog entries become deletions) or not in the tree
        if stat.S_ISREG(st.st_mode):
            return {rel_dir: st.st_size}
    return {rel: state.size for rel, state in scan_tree(root, lambda _rel: False, rel_dir).items()}


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
        sizes = {rel: size for scope in scopes for rel, size in walk(root, scope).items()}
        files = sorted(sizes)
        present = set(files)
        gone = [
            v.path
            for v in vault.catalog.latest_all()
            if not v.deleted and v.path not in present
            and any(s == "" or v.path == s or v.path.startswith(s + "/") for s in scopes)
        ]  # fmt: skip
        total = sum(sizes.values())
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
            click.echo(f"failed: {show(r.path)}: {r.error}", err=True)
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to do"
    click.echo(
        f"push: {summary}; {new_chunks} new chunk(s), {format_size(sent)} sent "
        f"in {time.monotonic() - started:.1f}s"
    )
    if counts["failed"]:
        raise ChunkvaultError(
            f"{counts['failed']} file(s) not stored", "see the lines above; rerun push to retry"
        )
