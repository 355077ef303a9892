"""``chunkvault push``: one-shot ingest of the watched tree, or parts of it."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
    from chunkvault.catalog import Catalog, VersionRow
    from chunkvault.config import Config
    from chunkvault.flows import FlowRules
    from chunkvault.ingest import IngestResult
    from chunkvault.seal_workers import SealWorkers
    from chunkvault.vault import Vault
    from chunkvault.watcher.scan import FileState


class PushIncomplete(ChunkvaultError):
    """Everything readable was stored, but some directories could not be read (restic says
    "incomplete snapshot" with exit 3, which is our wrong passphrase)."""

    exit_code = 6


def scope_candidates(root: Path, given: str) -> list[str]:
    """Where ``given`` may point inside the tree, as paths relative to ``root``, best
    first: relative to the current directory (as a shell means it), then relative to the
    tree itself (as `ls` shows paths). Raises if neither is inside the tree."""
    path = Path(given).expanduser()
    tree = root.resolve()
    found: list[str] = []
    for candidate in [path] if path.is_absolute() else [Path.cwd() / path, tree / path]:
        try:
            # Fully resolved: a symlink given by name means its target, which must be in
            # the tree too (nothing below the tree is followed later).
            rel = candidate.resolve().relative_to(tree)
        except ValueError:
            continue
        text = "" if rel == Path(".") else rel.as_posix()
        if text not in found:
            found.append(text)
    if not found:
        raise ChunkvaultError(
            f"{show(given)} is outside the watched tree {show(str(root))}",
            "give paths under watch.path, or relative to it as `chunkvault ls` shows them",
        )
    return found


def resolve_scope(root: Path, given: str, stored: Callable[[str], bool]) -> str:
    """The one scope ``given`` means: the first candidate that exists in the tree, else
    the first one the vault stores something at or below (its deletion is pushed). A path
    that is neither is an error, not a silent "nothing to do"."""
    candidates = scope_candidates(root, given)
    for rel in candidates:
        if rel == "" or os.path.lexists(root / rel):
            return rel
    for rel in candidates:
        if stored(rel):
            return rel
    raise ChunkvaultError(
        f"{show(given)} does not exist in the watched tree {show(str(root))}, and nothing is "
        "stored there",
        "check the name (`chunkvault ls` shows what is stored)",
    )


def walk(root: Path, rel_dir: str, unreadable: set[str] | None = None) -> dict[str, FileState]:
    """Regular files under ``root/rel_dir`` (or that one file) with their size, mtime and
    mode, by relative path. No symlink below ``root`` is followed: not a symlinked file,
    nor a directory. Directories that cannot be read are skipped and added to ``unreadable``."""
    from chunkvault.fsutil import lstat_in_tree, open_dir
    from chunkvault.watcher.scan import FileState, blocked_at, scan_tree

    blocked = unreadable if unreadable is not None else set()
    if rel_dir:
        try:
            root_fd = open_dir(root)
            try:
                st = lstat_in_tree(root_fd, rel_dir)
            except PermissionError:  # a directory on the way: its files are not gone
                blocked.add(blocked_at(root_fd, rel_dir))
                return {}
            finally:
                os.close(root_fd)
        except PermissionError:
            blocked.add("")
            return {}
        except OSError:
            return {}  # gone (its catalog entries become deletions) or not in the tree
        if stat.S_ISREG(st.st_mode):
            return {rel_dir: FileState(st.st_size, st.st_mtime_ns, st.st_mode)}
    return scan_tree(root, lambda _rel: False, rel_dir, blocked)


@dataclass
class PushPlan:
    """What a push will do, from the tree and the catalog (reads only)."""

    newest: dict[str, VersionRow]  # every path's newest version, tombstones included
    scopes: list[str]
    blocked: set[str]  # directories that could not be read
    files: list[str]  # to read (new, or size, mtime or mode differ), sorted
    sizes: dict[str, int]  # of those files, as the walk saw them
    gone: list[str]  # stored and no longer in the tree: their deletions
    unchanged: dict[str, int] = field(default_factory=dict)  # path -> size, not even queued

    @property
    def work(self) -> bool:
        return bool(self.files or self.gone)


def plan_push(catalog: Catalog, rules: FlowRules, root: Path, paths: tuple[str, ...]) -> PushPlan:
    """Walk the scopes ``paths`` name (the whole tree by default) and compare with the
    catalog: what is new or changed, what is gone."""
    from chunkvault.ingest import unchanged
    from chunkvault.watcher import unreadable

    # Every path's newest version, in one query (not one per file): the writer lock keeps
    # them current while this push runs.
    newest = {v.path: v for v in catalog.latest_own()}
    live = [path for path, v in newest.items() if not v.deleted]

    def stored(rel: str) -> bool:
        return any(p == rel or p.startswith(rel + "/") for p in live)

    scopes = [resolve_scope(root, given, stored) for given in paths] or [""]
    blocked: set[str] = set()
    states = {rel: st for scope in scopes for rel, st in walk(root, scope, blocked).items()}
    gone = [
        v.path
        for v in newest.values()
        if not v.deleted and v.path not in states and not unreadable.within(v.path, blocked)
        and any(s == "" or v.path == s or v.path.startswith(s + "/") for s in scopes)
    ]  # fmt: skip
    # What the tree holds as stored (same size, mtime and mode: the test the readers would
    # make after opening it) is not even queued.
    same = {
        rel: st.size
        for rel, st in states.items()
        if unchanged(newest.get(rel), st.size, st.mtime_ns, st.mode) and not rules.flow(rel).ignore
    }
    files = sorted(rel for rel in states if rel not in same)
    return PushPlan(newest, scopes, blocked, files, {f: states[f].size for f in files}, gone, same)


def sealable(plan: PushPlan, config: Config) -> int:
    """How many of the plan's files a seal worker would take."""
    from chunkvault.seal_workers import sealable_below

    limit = sealable_below(config.chunking)
    return sum(1 for size in plan.sizes.values() if 0 < size < limit)


class EarlyPlan:
    """The plan made before the unlock, from a catalog connection of its own: the
    passphrase KDF (~0.2 s, without the GIL) then overlaps making S3 clients, and only
    when there is something to send (a push with nothing to do never imports boto3). It
    stands after the unlock unless the vault changed the catalog meanwhile (a sync from
    the peers, a commit a kill cut short, recovered): SQLite's ``data_version`` tells."""

    def __init__(self, config: Config, paths: tuple[str, ...]) -> None:
        from chunkvault.catalog import Catalog
        from chunkvault.flows import FlowRules
        from chunkvault.vault import CATALOG_NAME

        self.plan: PushPlan | None = None
        self._catalog: Catalog | None = None
        path = config.vault.state_dir / CATALOG_NAME
        if not path.exists():  # a fresh machine: the catalog comes from the peers
            return
        self._catalog = Catalog(path)
        self._version = self._catalog.data_version()
        try:
            self.plan = plan_push(self._catalog, FlowRules(config), config.watch.path, paths)
        except ChunkvaultError:
            # (A path neither in the tree nor stored.) The catalog may still change before
            # the unlock ends (a commit a kill cut short, recovered): the plan made then
            # decides, and says so if it must.
            self.plan = None

    @property
    def sends(self) -> bool:
        """The push will (probably) send something: make the S3 clients now."""
        return self.plan is None or self.plan.work

    def still_current(self) -> PushPlan | None:
        if self.plan is None or self._catalog is None:
            return None
        return self.plan if self._catalog.data_version() == self._version else None

    def seal_workers(self, config: Config) -> SealWorkers | None:
        """Worker processes for the plan's small files, started now (without keys), or
        None for a plan with few of them (or none yet: the plan after the unlock decides)."""
        from chunkvault.seal_workers import SealWorkers, worker_count

        if self.plan is None:
            return None
        count = worker_count(sealable(self.plan, config))
        if not count:
            return None
        try:
            return SealWorkers(count)
        except (OSError, subprocess.SubprocessError):
            return None  # the Ingestor tries again, and says why

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None


@click.command()
@click.argument("paths", nargs=-1)
@passphrase_option
@pass_cli
def push(cli: CliContext, paths: tuple[str, ...], passphrase_file: Path | None) -> None:
    """Store new and changed files now (default: the whole watched tree). Files gone from
    the tree are handled by their flow's on_delete (tombstone by default).

    PATHS are files or directories in the watched tree, relative to the current directory
    or to the tree itself (as `chunkvault ls` shows them). A path that exists in neither
    place and holds nothing stored is an error."""
    cfg = cli.config
    root = cfg.watch.path
    if not root.is_dir():
        raise ChunkvaultError(f"watch.path {root} is not a directory", "fix watch.path")
    for given in paths:
        scope_candidates(root, given)  # outside the tree: say so before any unlock
    started = time.monotonic()
    with cli.writer("push"):
        # The passphrase first: a prompt (or its absence) comes before any work.
        passphrase = None if cli.write_only else cli.passphrase(passphrase_file)
        early = EarlyPlan(cfg, paths)
        # Seal workers start now, so their start-up overlaps the KDF; they get the keys
        # after the unlock.
        workers = early.seal_workers(cfg)
        try:
            with cli.vault(
                passphrase_file, writer=True, prepare=early.sends, passphrase=passphrase
            ) as vault:
                plan = early.still_current() or plan_push(vault.catalog, vault.rules, root, paths)
                early.close()
                results = _carry_out(vault, plan, workers)
        finally:
            early.close()
            if workers is not None:
                workers.close()
    _report(results, plan.blocked, started)


def _carry_out(
    vault: Vault, plan: PushPlan, workers: SealWorkers | None = None
) -> list[IngestResult]:
    from chunkvault.ingest import Ingestor, IngestResult
    from chunkvault.seal_workers import worker_count
    from chunkvault.watcher import unreadable

    for path in sorted(plan.blocked):
        click.echo(
            f"warning: cannot read directory {unreadable.describe(path)} (permission "
            "denied): skipped; what the vault holds from it is kept", err=True
        )  # fmt: skip
    known = unreadable.UnreadableDirs(unreadable.load(vault.catalog))
    for scope in plan.scopes:  # what this push looked at is now known (for `status`)
        known.update((), scope)
    known.add(plan.blocked)
    unreadable.save(vault.catalog, known.known)
    results = [IngestResult(rel, "unchanged", size=size) for rel, size in plan.unchanged.items()]
    with byte_progress("push", sum(plan.sizes.values())) as progress:
        # One reader: a push waits for the whole tree, so no small file must get by a big
        # one being read, and one reader is the cheaper (see Ingestor). Many small files:
        # worker processes read and seal them, on the cores the reader leaves idle.
        seal: SealWorkers | int = (
            workers if workers is not None else worker_count(sealable(plan, vault.config))
        )
        ingestor = Ingestor(vault, progress, readers=1, seal_workers=seal)
        try:
            # Every file goes into the pipeline at once (the byte budget, not the file
            # count, bounds memory); they commit in any order. Deletions are manifest
            # entries only: queued meanwhile, into the same batches.
            pending = [ingestor.submit(f, plan.newest.get(f)) for f in plan.files]
            ingestor.all_submitted()
            pending += [ingestor.submit_delete(p, plan.newest[p]) for p in plan.gone]
            if plan.gone or not plan.files:
                # Tombstones may be queued after the last file said nothing more is coming
                # (or there is no file to say it): write what is queued now.
                vault.commits.flush()
            return results + [p.result() for p in pending]
        finally:
            ingestor.close()


def _report(results: list[IngestResult], blocked: set[str], started: float) -> None:
    """The summary line and the exit code."""
    from chunkvault.watcher import unreadable

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
    if blocked:
        raise PushIncomplete(
            f"{unreadable.count(len(blocked))} could not be read and "
            f"{'was' if len(blocked) == 1 else 'were'} skipped; everything else was stored",
            "make them readable for the user chunkvault runs as, and push again",
        )
