"""The durable work queue: one row per path with pending work, in the catalog's SQLite.

A change is written here before anything acts on it, so a crash or SIGKILL loses nothing:
rows left ``running`` are reset at the next start and redone (every job is idempotent).
Changes to the same path coalesce into its row, and the row's ``due`` time implements
settling: a write pushes ``due`` to ``now + settle_seconds``; a close-write makes it due at
once; the worker re-checks size and mtime before acting and defers again if they moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from chunkvault.catalog.store import Catalog, path_of, path_value

JobKind = Literal["upsert", "delete", "move"]

JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    path BLOB PRIMARY KEY,  -- the name's bytes, as versions.path (catalog.store)
    kind TEXT NOT NULL,
    src BLOB,
    due REAL NOT NULL,
    seen_size INTEGER,
    seen_mtime_ns INTEGER,
    closed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    first_seen REAL NOT NULL,
    running INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(running, due);
"""


@dataclass(frozen=True)
class Job:
    path: str
    kind: JobKind
    src: str | None
    due: float
    seen_size: int | None
    seen_mtime_ns: int | None
    closed: bool
    attempts: int
    last_error: str | None
    first_seen: float
    version: int


@dataclass(frozen=True)
class Note:
    """One observed change, as the recorder hands it to :meth:`JobQueue.note`."""

    path: str
    kind: JobKind
    delay: float = 0.0  # settle time before the job is due
    closed: bool = False
    src: str | None = None
    size: int | None = None
    mtime_ns: int | None = None


_COLUMNS = (
    "path, kind, src, due, seen_size, seen_mtime_ns, closed, attempts, last_error, first_seen, "
    "version"
)


def _job(row: tuple) -> Job:  # type: ignore[type-arg]
    src = None if row[2] is None else path_of(row[2])  # paths are bytes: see catalog.store
    return Job(path_of(row[0]), row[1], src, row[3], row[4], row[5], bool(row[6]), row[7], row[8],
               row[9], row[10])  # fmt: skip


class JobQueue:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        with catalog.transaction() as db:
            for statement in JOBS_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def note(self, notes: list[Note], now: float | None = None) -> None:
        """Record changes in one transaction (the recorder batches events)."""
        now = time.time() if now is None else now
        with self.catalog.transaction() as db:
            for n in notes:
                if n.kind == "move" and n.src is not None:
                    pending = db.execute(
                        "SELECT kind FROM jobs WHERE path = ?", (path_value(n.src),)
                    ).fetchone()
                    if pending is not None and pending[0] == "upsert":
                        # The source was never stored (written then renamed at once):
                        # the move is simply a new file at the destination.
                        db.execute("DELETE FROM jobs WHERE path = ?", (path_value(n.src),))
                        n = Note(n.path, "upsert", n.delay, n.closed, None, n.size, n.mtime_ns)
                # A repeat of what the row already says (a poll scan seeing the same pending
                # file again) changes nothing: it must not push `due` back, or a file polled
                # more often than settle_seconds would never become due.
                db.execute(
                    "INSERT INTO jobs (path, kind, src, due, seen_size, seen_mtime_ns, closed, "
                    "first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                    "kind = excluded.kind, src = excluded.src, due = excluded.due, "
                    "seen_size = excluded.seen_size, seen_mtime_ns = excluded.seen_mtime_ns, "
                    "closed = excluded.closed, version = version + 1 "
                    "WHERE NOT (jobs.kind = excluded.kind AND jobs.src IS excluded.src "
                    "AND jobs.seen_size IS excluded.seen_size "
                    "AND jobs.seen_mtime_ns IS excluded.seen_mtime_ns "
                    "AND jobs.closed >= excluded.closed AND excluded.kind = 'upsert')",
                    (
                        path_value(n.path),
                        n.kind,
                        None if n.src is None else path_value(n.src),
                        now + n.delay,
                        n.size,
                        n.mtime_ns,
                        int(n.closed),
                        now,
                    ),
                )

    def take(self, limit: int, now: float | None = None) -> list[Job]:
        """Claim up to ``limit`` due jobs (oldest due first)."""
        now = time.time() if now is None else now
        with self.catalog.transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE running = 0 AND due <= ? ORDER BY due LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany("UPDATE jobs SET running = 1 WHERE path = ?", [(r[0],) for r in rows])
        return [_job(r) for r in rows]

    def done(self, job: Job) -> None:
        """Finished. If the path changed meanwhile (a newer note), keep that newer work."""
        with self.catalog.transaction() as db:
            key = path_value(job.path)
            db.execute("DELETE FROM jobs WHERE path = ? AND version = ?", (key, job.version))
            db.execute("UPDATE jobs SET running = 0 WHERE path = ?", (key,))

    def defer(self, job: Job, delay: float, size: int | None, mtime_ns: int | None) -> None:
        """Not settled yet: look again after ``delay`` with the new observation."""
        with self.catalog.transaction() as db:
            db.execute(
                "UPDATE jobs SET running = 0, due = ?, seen_size = ?, seen_mtime_ns = ? "
                "WHERE path = ? AND version = ?",
                (time.time() + delay, size, mtime_ns, path_value(job.path), job.version),
            )
            db.execute("UPDATE jobs SET running = 0 WHERE path = ?", (path_value(job.path),))

    def retry(self, job: Job, error: str, delay: float) -> None:
        with self.catalog.transaction() as db:
            db.execute(
                "UPDATE jobs SET running = 0, attempts = attempts + 1, last_error = ?, "
                "due = max(due, ?) WHERE path = ?",
                (error[:500], time.time() + delay, path_value(job.path)),
            )

    def reset_running(self) -> int:
        """After a crash: whatever was being worked on is pending again."""
        with self.catalog.transaction() as db:
            return db.execute("UPDATE jobs SET running = 0 WHERE running = 1").rowcount

    def depth(self) -> int:
        return int(self.catalog.query("SELECT count(*) FROM jobs")[0][0])

    def running(self) -> int:
        return int(self.catalog.query("SELECT count(*) FROM jobs WHERE running = 1")[0][0])

    def pending(self, limit: int = 20) -> list[Job]:
        """The next jobs due, running ones first."""
        rows = self.catalog.query(
            f"SELECT {_COLUMNS} FROM jobs ORDER BY running DESC, due LIMIT ?", (limit,)
        )
        return [_job(r) for r in rows]

    def failing(self, limit: int = 10) -> list[Job]:
        rows = self.catalog.query(
            f"SELECT {_COLUMNS} FROM jobs WHERE last_error IS NOT NULL ORDER BY due LIMIT ?",
            (limit,),
        )
        return [_job(r) for r in rows]

    def next_due(self) -> float | None:
        rows = self.catalog.query("SELECT min(due) FROM jobs WHERE running = 0")
        return rows[0][0]
