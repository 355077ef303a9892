"""The local catalog: SQLite in WAL mode at ``<state_dir>/catalog.db``.

It is a cache of what the peers hold (files, versions, chunks and where their replicas
are) plus the API's idempotency records. Everything needed to restore is also on the
peers, and :mod:`chunkvault.sync` rebuilds the catalog from them on a fresh machine.

One connection, guarded by a lock: writes are small and SQLite serialises writers anyway,
and a single connection keeps transactions simple across worker threads.

File paths are stored as BLOBs of the name's bytes (:func:`path_value`), not TEXT: a name
need not be UTF-8, and SQLite text from Python must be. Byte order is UTF-8 text order, so
``ORDER BY path`` sorts as before. Schema 1 (TEXT paths) is converted when first opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkvault import names
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import ensure_private_dir, open_private_file, tighten_private_file

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    plain_size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    wrapped_dek BLOB NOT NULL,
    generation INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS replicas (
    chunk_id TEXT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ok',
    updated REAL NOT NULL,
    PRIMARY KEY (chunk_id, peer)
);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL,
    manifest TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    inode INTEGER,
    chunk_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_path ON versions(path, created_ns);
CREATE TABLE IF NOT EXISTS api_requests (
    request_id TEXT PRIMARY KEY,
    canonical TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_chunks (
    client_id TEXT PRIMARY KEY,
    chunk_id TEXT NOT NULL
);
"""


# Schema 1 held paths as TEXT (UTF-8 only); 2 holds the bytes. TEXT affinity keeps a BLOB
# a BLOB, so converting the values is all it takes. The jobs table (catalog.jobs) may not
# exist yet.
_PATH_COLUMNS = {"versions": ("path",), "jobs": ("path", "src")}


def path_value(path: str) -> bytes:
    """How a file path is bound in SQL: its bytes (see the module docstring)."""
    return names.raw(path)


def path_of(value: bytes | str) -> str:
    """A path read back from SQL (a TEXT value only from a catalog written by schema 1)."""
    return names.from_raw(value) if isinstance(value, bytes) else value


def _upgrade_paths(db: sqlite3.Connection) -> None:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table, columns in _PATH_COLUMNS.items():
        if table in tables:
            for column in columns:
                db.execute(
                    f"UPDATE {table} SET {column} = CAST({column} AS BLOB) "
                    f"WHERE typeof({column}) = 'text'"
                )


def _make_private(path: Path) -> None:
    """The catalog lists every path and a plain SHA-256 of every file: owner only. SQLite
    creates the database 0644 (minus the umask) and gives its -wal/-shm the database's
    mode, so the database is created 0600 first; an older, looser state dir and catalog
    are tightened."""
    ensure_private_dir(path.parent)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten_private_file(f"{path}{suffix}")
    tighten_private_file(path)
    os.close(open_private_file(path, os.O_RDONLY))


class CatalogError(ChunkvaultError):
    pass


@dataclass(frozen=True)
class ChunkRow:
    id: str
    plain_size: int
    stored_size: int
    wrapped_dek: bytes
    generation: int
    sha256: str


@dataclass(frozen=True)
class VersionRow:
    path: str
    manifest: str
    size: int
    mtime_ns: int
    mode: int
    sha256: str
    deleted: bool
    created_ns: int
    chunk_count: int
    inode: int | None = None


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        _make_private(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        try:
            self._open_schema()
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        """Create the tables of a new catalog, convert an older one, refuse a newer one."""
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.path} has schema {version}, this chunkvault knows up to "
                    f"{SCHEMA_VERSION}",
                    "a newer chunkvault wrote it: upgrade chunkvault",
                )
            for statement in SCHEMA.split(";"):
                db.execute(statement)
            if version == 1:
                _upgrade_paths(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- chunks and replicas ---------------------------------------------------------------

    def chunk(self, chunk_id: str) -> ChunkRow | None:
        rows = self.query(
            "SELECT id, plain_size, stored_size, wrapped_dek, generation, sha256 "
            "FROM chunks WHERE id = ?",
            (chunk_id,),
        )
        return ChunkRow(*rows[0]) if rows else None

    def replicas(self, chunk_id: str) -> list[str]:
        rows = self.query(
            "SELECT peer FROM replicas WHERE chunk_id = ? AND state = 'ok' ORDER BY peer",
            (chunk_id,),
        )
        return [r[0] for r in rows]

    def record_chunk(self, row: ChunkRow, peers: Sequence[str]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "stored_size=excluded.stored_size, wrapped_dek=excluded.wrapped_dek, "
                "generation=excluded.generation, sha256=excluded.sha256",
                (row.id, row.plain_size, row.stored_size, row.wrapped_dek, row.generation,
                 row.sha256, now),
            )  # fmt: skip
            db.executemany(
                "INSERT OR REPLACE INTO replicas VALUES (?, ?, 'ok', ?)",
                [(row.id, peer, now) for peer in peers],
            )

    def set_replica_state(self, chunk_id: str, peer: str, state: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE replicas SET state = ?, updated = ? WHERE chunk_id = ? AND peer = ?",
                (state, time.time(), chunk_id, peer),
            )

    def update_wrapped_dek(self, chunk_id: str, wrapped: bytes, generation: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE chunks SET wrapped_dek = ?, generation = ? WHERE id = ?",
                (wrapped, generation, chunk_id),
            )

    def chunks_not_at(self, generation: int) -> list[ChunkRow]:
        rows = self.query(
            "SELECT id, plain_size, stored_size, wrapped_dek, generation, sha256 FROM chunks "
            "WHERE generation != ?",
            (generation,),
        )
        return [ChunkRow(*r) for r in rows]

    def chunk_count(self) -> int:
        return int(self.query("SELECT count(*) FROM chunks")[0][0])

    def replica_counts(self) -> dict[str, int]:
        rows = self.query("SELECT peer, count(*) FROM replicas WHERE state = 'ok' GROUP BY peer")
        return {peer: n for peer, n in rows}

    def under_replicated(self, target: int, on_peers: Sequence[str] | None = None) -> int:
        """Chunks with fewer than ``target`` replicas, counting only those on ``on_peers``
        (the peers up now) when given: a dead peer's copies do not count."""
        where, args = "", []
        if on_peers is not None:
            where = f" AND r.peer IN ({', '.join('?' * len(on_peers))})"
            args = list(on_peers)
        rows = self.query(
            "SELECT count(*) FROM chunks c WHERE (SELECT count(*) FROM replicas r "
            f"WHERE r.chunk_id = c.id AND r.state = 'ok'{where}) < ?",
            (*args, target),
        )
        return int(rows[0][0])

    # --- files and versions ----------------------------------------------------------------

    def add_version(self, row: VersionRow) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO versions (path, manifest, size, mtime_ns, mode, sha256, "
                "deleted, created_ns, inode, chunk_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (path_value(row.path), row.manifest, row.size, row.mtime_ns, row.mode,
                 row.sha256, int(row.deleted), row.created_ns, row.inode, row.chunk_count),
            )  # fmt: skip

    def _versions(self, where: str, args: Sequence[Any]) -> list[VersionRow]:
        rows = self.query(
            "SELECT path, manifest, size, mtime_ns, mode, sha256, deleted, created_ns, "
            f"chunk_count, inode FROM versions {where}",
            args,
        )
        return [VersionRow(path_of(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8],
                           r[9]) for r in rows]  # fmt: skip

    def latest(self, path: str) -> VersionRow | None:
        rows = self._versions(
            "WHERE path = ? ORDER BY created_ns DESC, id DESC LIMIT 1", (path_value(path),)
        )
        return rows[0] if rows else None

    def versions(self, path: str) -> list[VersionRow]:
        return self._versions("WHERE path = ? ORDER BY created_ns, id", (path_value(path),))

    def latest_all(self) -> list[VersionRow]:
        """The newest version of every path (tombstones included), by path."""
        return self._versions(
            "v WHERE NOT EXISTS (SELECT 1 FROM versions w WHERE w.path = v.path AND "
            "(w.created_ns > v.created_ns OR (w.created_ns = v.created_ns AND w.id > v.id))) "
            "ORDER BY path",
            (),
        )

    def all_versions(self) -> list[VersionRow]:
        return self._versions("ORDER BY path, created_ns, id", ())

    def version_count(self, path: str) -> int:
        rows = self.query("SELECT count(*) FROM versions WHERE path = ?", (path_value(path),))
        return int(rows[0][0])

    def remove_versions(self, path: str) -> list[str]:
        """Forget every version of ``path``; returns their manifest names."""
        with self.transaction() as db:
            key = (path_value(path),)
            found = [r[0] for r in db.execute("SELECT manifest FROM versions WHERE path = ?", key)]
            db.execute("DELETE FROM versions WHERE path = ?", key)
        return found

    def has_manifest(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM versions WHERE manifest = ?", (name,)))

    # --- API idempotency -------------------------------------------------------------------

    def api_request(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        rows = self.query(
            "SELECT canonical, response FROM api_requests WHERE request_id = ?", (request_id,)
        )
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def record_api_request(
        self, request_id: str, canonical: str, response: dict[str, Any], chunk_map: dict[str, str]
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO api_requests VALUES (?, ?, ?, ?)",
                (request_id, canonical, json.dumps(response), time.time()),
            )
            db.executemany("INSERT OR REPLACE INTO api_chunks VALUES (?, ?)", chunk_map.items())

    def client_chunk(self, client_id: str) -> str | None:
        rows = self.query("SELECT chunk_id FROM api_chunks WHERE client_id = ?", (client_id,))
        return rows[0][0] if rows else None
