"""The agent: watch the tree, record every change durably, and run each file's flow.

    inotify source ─┐                                   ┌─ worker ─ ingest / delete / move
    rescan / poll ──┼─> recorder ─> job queue (SQLite) ─┼─ worker      (+ exec hook)
    startup scan ───┘   (batches)   (coalesce, settle)  └─ ...

The event handler only enqueues in memory; the recorder writes batches to the durable
queue every 50 ms; workers take due jobs, re-check that a file has settled, and act.
Anything lost between an event and the queue (a crash in those 50 ms, an inotify overflow,
a bind mount that drops events) is caught by the startup scan and the periodic rescan.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chunkvault.catalog.jobs import Job, JobQueue, Note
from chunkvault.errors import ChunkvaultError
from chunkvault.healing import Healer
from chunkvault.ingest import Ingestor, IngestResult
from chunkvault.light_future import LightFuture
from chunkvault.names import show
from chunkvault.vault import Vault
from chunkvault.watcher import unreadable
from chunkvault.watcher.events import Change
from chunkvault.watcher.scan import differences, scan_tree

log = logging.getLogger(__name__)
RECORD_INTERVAL = 0.05
MAX_BACKOFF = 300.0
#: Jobs a worker starts at once (and then waits for): enough for small files to share
#: packs and manifest batches, few enough that one worker's slow file holds up little.
JOBS_PER_TAKE = 32
HOOK_TIMEOUT = 60.0
STATE_CHECK_INTERVAL = 1.0


class StateLost(ChunkvaultError):
    """The state dir (catalog, queue, writer lock) was deleted or replaced under the agent."""


@dataclass
class AgentStats:
    """Counters the agent keeps for status and metrics (updated from worker threads)."""

    processed: dict[str, int] = field(default_factory=dict)
    last_errors: list[str] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, result: IngestResult) -> None:
        with self.lock:
            self.processed[result.action] = self.processed.get(result.action, 0) + 1
            if result.error:
                line = f"{show(result.path)}: {result.error}"  # JSON in /status: escaped
                self.last_errors = [*self.last_errors[-9:], line]


def hook_environment(
    agent_env: Mapping[str, str], path: str, rel_path: str, event: str
) -> dict[str, str]:
    """The whole environment of an exec hook: the locale, time zone, PATH and HOME it needs
    to run, and what happened. Nothing else from the agent's environment: that holds the
    passphrase, peer credentials and the API token, and a hook is someone else's program."""
    env = {"PATH": agent_env.get("PATH", os.defpath)}
    env.update(
        (key, value)
        for key, value in agent_env.items()
        if key in ("HOME", "LANG", "TZ") or key.startswith("LC_")
    )
    env.update(CHUNKVAULT_PATH=path, CHUNKVAULT_REL_PATH=rel_path, CHUNKVAULT_EVENT=event)
    return env


class Agent:
    def __init__(
        self,
        vault: Vault,
        *,
        workers: int | None = None,
        on_result: Callable[[IngestResult, float], None] | None = None,
    ) -> None:
        self.vault = vault
        cfg = vault.config
        self.root = cfg.watch.path
        self.settle = cfg.watch.settle_seconds
        self.mode = cfg.watch.mode
        self.jobs = JobQueue(vault.catalog)
        self.ingestor = Ingestor(vault)
        self.stats = AgentStats()
        self.on_result = on_result
        self.on_healed: Callable[[int], None] | None = None  # copies the background repair wrote
        # Workers only wait for their file: the data goes through the ingestor's one
        # shared pipeline, bounded by its byte budget, so a worker per concurrent transfer
        # lets that many files overlap (an idle worker costs a sleeping thread).
        self._workers = workers or cfg.transfer.concurrency
        self._pending: list[Change] = []
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._rescan_now = threading.Event()
        self._full_rescan = False  # asked for by an overflow (under _pending_lock)
        self._scoped: set[str] = set()  # dirs whose permissions changed (under _pending_lock)
        self.unreadable = unreadable.UnreadableDirs()  # updated by the rescan thread only
        self._unreadable_saved = False
        self._threads: list[threading.Thread] = []
        self._source: object | None = None
        # Set (once) when the agent cannot go on, e.g. its state dir was deleted; it has
        # then stopped its threads, and calls on_fatal so that `run` exits with the error.
        self.fatal: ChunkvaultError | None = None
        self.on_fatal: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if not self.root.is_dir():
            raise ChunkvaultError(f"watch.path {self.root} is not a directory", "fix watch.path")
        reset = self.jobs.reset_running()
        if reset:
            log.info("resuming %d job(s) interrupted by the last stop", reset)
        if self.mode in ("inotify", "both"):
            from chunkvault.watcher.inotify import InotifySource

            source = InotifySource(self.root, self.sink, ignore=self.vault.rules.ignored)
            source.start()  # before the scan: nothing changes unseen in between
            self._source = source
        self.rescan("")  # startup reconciliation: what changed while we were down
        self._spawn("recorder", self._record_loop)
        self._spawn("rescan", self._rescan_loop)
        self._spawn("state", self._state_loop)
        if self.vault.config.repair.interval_seconds > 0:
            self._spawn("heal", self._heal_loop)
        for i in range(self._workers):
            self._spawn(f"worker-{i}", self._work_loop)
        log.info("watching %s (%s), %d job(s) queued", self.root, self.mode, self.jobs.depth())

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"chunkvault-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop watching and let workers finish their current file (bounded by timeout).
        Work not finished stays in the durable queue for the next start."""
        self._stop.set()
        self._wake.set()
        if self._source is not None:
            self._source.stop()  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._flush()
        self.ingestor.close()

    # --- recording changes -----------------------------------------------------------------

    def sink(self, change: Change) -> None:
        """Called from the inotify thread: only enqueue in memory."""
        with self._pending_lock:
            self._pending.append(change)

    def _record_loop(self) -> None:
        while not self._stop.wait(RECORD_INTERVAL):
            try:
                self._flush()
            except Exception:  # the loop must survive anything; the rescan repairs
                log.exception("recording changes failed")

    def _flush(self) -> None:
        with self._pending_lock:
            changes, self._pending = self._pending, []
        if not changes:
            return
        notes: list[Note] = []
        for change in changes:
            notes.extend(self._notes_for(change))
        if notes:
            self.jobs.note(notes)
            self._wake.set()

    def _stat_note(self, path: str, closed: bool = False) -> Note:
        try:
            st = os.stat(self.root / path, follow_symlinks=False)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None
        return Note(path, "upsert", 0.0 if closed else self.settle, closed, None, size, mtime)

    def _live_under(self, directory: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        latest = self.vault.catalog.latest_own()
        return [v.path for v in latest if not v.deleted and v.path.startswith(prefix)]

    def _notes_for(self, change: Change) -> list[Note]:
        if change.kind == "rescan":
            self._ask_rescan(change.path)
            return []
        if change.kind in ("write", "closed"):
            if self.vault.rules.ignored(change.path):
                return []
            return [self._stat_note(change.path, closed=change.kind == "closed")]
        if change.kind == "delete":
            paths = self._live_under(change.path) if change.is_dir else [change.path]
            return [Note(p, "delete") for p in paths]
        # move
        assert change.src is not None
        if not change.is_dir:
            return [Note(change.path, "move", src=change.src)]
        notes = [
            Note(change.path + p[len(change.src) :], "move", src=p)
            for p in self._live_under(change.src)
        ]
        # Files in the moved directory the catalog never had are new files.
        moved = {n.path for n in notes}
        for rel in scan_tree(self.root, self.vault.rules.ignored, change.path):
            if rel not in moved:
                notes.append(self._stat_note(rel))
        return notes

    # --- rescans ---------------------------------------------------------------------------

    def rescan(self, under: str = "") -> tuple[int, int]:
        found: set[str] = set()
        tree = scan_tree(self.root, self.vault.rules.ignored, under, found)
        changed, gone = differences(tree, self.vault.catalog.latest_own(), under, found)
        notes = [
            Note(p, "upsert", self.settle, False, None, tree[p].size, tree[p].mtime_ns)
            for p in changed
        ] + [Note(p, "delete") for p in gone]
        if notes:
            self.jobs.note(notes)
            self._wake.set()
            log.info("rescan: %d changed, %d gone", len(changed), len(gone))
        self._note_unreadable(found, under)
        return len(changed), len(gone)

    def _note_unreadable(self, found: set[str], under: str) -> None:
        """Warn once per directory that became unreadable (or readable again), not once per
        scan, and keep the set in the catalog for `status`."""
        new, readable = self.unreadable.update(found, under)
        unreadable.report(new, readable)
        if new or readable or not self._unreadable_saved:
            unreadable.save(self.vault.catalog, self.unreadable.known)
            self._unreadable_saved = True

    def _ask_rescan(self, under: str) -> None:
        """A rescan of the tree (events were lost) or of one directory whose permissions
        changed. The latter only when that can change what a scan sees: the directory is or
        holds one known to be unreadable, or cannot be listed now (so `chmod -R` over a big
        readable tree costs nothing)."""
        if under and self._listable(under) and not self.unreadable.concerns(under):
            return
        with self._pending_lock:
            if under:
                self._scoped.add(under)
            else:
                self._full_rescan = True
        self._rescan_now.set()

    def _listable(self, rel: str) -> bool:
        path = self.root / rel
        return os.access(path, os.R_OK | os.X_OK, effective_ids=True, follow_symlinks=False)

    def _rescan_loop(self) -> None:
        cfg = self.vault.config.watch
        period = cfg.poll_seconds if self.mode == "poll" else cfg.rescan_seconds
        if self.mode == "both":
            period = min(cfg.poll_seconds, cfg.rescan_seconds or cfg.poll_seconds)
        next_at = time.monotonic() + period if period else float("inf")
        while not self._stop.is_set():
            self._rescan_now.wait(min(1.0, max(0.0, next_at - time.monotonic())))
            if self._stop.is_set():
                return
            self._rescan_now.clear()
            with self._pending_lock:
                full, self._full_rescan = self._full_rescan, False
                scoped, self._scoped = self._scoped, set()
            full = full or time.monotonic() >= next_at
            for under in [""] if full else sorted(scoped):
                try:
                    self.rescan(under)
                except Exception:
                    log.exception("rescan failed")
            if full:
                next_at = time.monotonic() + period if period else float("inf")

    # --- the state dir ---------------------------------------------------------------------

    def _state_loop(self) -> None:
        """Deleting the state dir (``rm -rf state``) does not stop SQLite: it would go on
        committing to a file no other process can open, so nothing stored from then on would
        show in `ls` or `status`, and the writer lock would be free for a second writer.
        Stop instead (exit non-zero): the next start rebuilds the catalog from the peers,
        which hold every manifest, and its startup scan queues whatever changed meanwhile."""
        while not self._stop.wait(STATE_CHECK_INTERVAL):
            problem = self.vault.state_lost()
            if problem is None:
                continue
            state_dir = self.vault.config.vault.state_dir
            log.error("state dir %s changed under the running agent (%s): stopping",
                      state_dir, problem)  # fmt: skip
            self._fail(
                StateLost(
                    f"the state dir {state_dir} was changed under the running agent: {problem}; "
                    "it stopped, as nothing stored from then on would reach the catalog",
                    "start it again, or let a supervisor restart it: it rebuilds the catalog "
                    "from the peers; to restore beside a running agent, use a config with "
                    "another vault.state_dir",
                )
            )
            return

    def _heal_loop(self) -> None:
        """The background repair (chunkvault.healing): a pass every interval."""
        repair = self.vault.config.repair
        healer = Healer(self.vault, repair.bytes_per_second, wait=self._stop.wait)
        while not self._stop.wait(repair.interval_seconds):
            try:
                done = healer.heal()
            except Exception:  # a bug: the agent goes on storing files, the next pass retries
                log.exception("background repair failed")
                continue
            if done.copies and self.on_healed is not None:
                self.on_healed(done.copies)

    def _fail(self, error: ChunkvaultError) -> None:
        self.fatal = error  # before reading on_fatal: see run.py
        self._stop.set()
        self._wake.set()
        callback = self.on_fatal
        if callback is not None:
            callback()

    # --- working ---------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            jobs = self.jobs.take(JOBS_PER_TAKE)
            if not jobs:
                due = self.jobs.next_due()
                wait = 0.5 if due is None else min(0.5, max(0.01, due - time.time()))
                self._wake.wait(wait)
                self._wake.clear()
                continue
            # Every job's file goes into the pipeline before any is waited for: their small
            # chunks share packs and their versions share a manifest batch.
            started: dict[LightFuture[IngestResult], Job] = {}
            finished: queue.SimpleQueue[LightFuture[IngestResult]] = queue.SimpleQueue()
            for job in jobs:
                try:
                    running = self._start(job)
                except Exception as exc:  # keep the worker alive; the job is retried
                    log.exception("job %s failed", job.path)
                    self.jobs.retry(job, f"internal error: {exc}", self._backoff(job))
                    continue
                if running is not None:
                    started[running] = job
            for running in started:
                running.add_done_callback(finished.put)
            for _ in range(len(started)):  # each recorded as soon as it is durable
                running = finished.get()
                job = started[running]
                try:
                    result = running.result()
                except Exception as exc:
                    log.exception("job %s failed", job.path)
                    self.jobs.retry(job, f"internal error: {exc}", self._backoff(job))
                    continue
                finally:
                    with self.stats.lock:
                        self.stats.in_flight -= 1
                self._finish(job, result)

    @staticmethod
    def _backoff(job: Job) -> float:
        return min(MAX_BACKOFF, 2.0 ** min(job.attempts, 16))

    def _start(self, job: Job) -> LightFuture[IngestResult] | None:
        """Start ``job``: its result once it is committed; None if it is deferred."""
        if job.kind == "upsert" and not job.closed:
            try:
                st = os.stat(self.root / job.path, follow_symlinks=False)
                seen = (st.st_size, st.st_mtime_ns)
            except OSError:
                seen = None
            if seen is not None and seen != (job.seen_size, job.seen_mtime_ns):
                self.jobs.defer(job, self.settle, *seen)  # still changing
                return None
        if job.kind == "upsert":
            running = self.ingestor.submit(job.path)
        else:
            running = LightFuture()
            try:
                if job.kind == "delete":
                    running.set_result(self.ingestor.delete(job.path))
                else:
                    assert job.src is not None
                    running.set_result(self.ingestor.move(job.src, job.path))
            except Exception as exc:
                running.set_exception(exc)
        with self.stats.lock:
            self.stats.in_flight += 1
        return running

    def _finish(self, job: Job, result: IngestResult) -> None:
        self.stats.record(result)
        if result.action == "failed":
            log.warning("%s: %s (retrying)", job.path, result.error)
            self.jobs.retry(job, result.error, self._backoff(job))
            return
        self.jobs.done(job)
        latency = time.time() - job.first_seen
        if result.action not in ("unchanged", "ignored"):
            log.info("%s %s (%.2fs after the change)", result.action, result.path, latency)
        if self.on_result is not None:
            self.on_result(result, latency)
        self._hook(result)

    def _hook(self, result: IngestResult) -> None:
        if result.action in ("unchanged", "ignored", "failed"):
            return
        flow = self.vault.rules.flow(result.path)
        if not flow.exec:
            return
        env = hook_environment(os.environ, str(self.root / result.path), result.path, result.action)
        try:
            done = subprocess.run(
                list(flow.exec), env=env, capture_output=True, text=True, timeout=HOOK_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("exec hook for %s failed: %s", result.path, exc)
            return
        if done.returncode != 0:
            log.warning(
                "exec hook for %s exited %d: %s", result.path, done.returncode, done.stderr[-500:]
            )
