"""The local catalog: SQLite in WAL mode at ``<state_dir>/catalog.db``.

It is a cache of what the peers hold (files, versions, chunks and where their replicas
are) plus the API's idempotency records. Everything needed to restore is also on the
peers, and :mod:`chunkvault.sync` rebuilds the catalog from them on a fresh machine.

One connection, guarded by a lock: writes are small and SQLite serialises writers anyway,
and a single connection keeps transactions simple across worker threads.

File paths are stored as BLOBs of the name's bytes (:func:`path_value`), not TEXT: a name
need not be UTF-8, and SQLite text from Python must be. Byte order is UTF-8 text order, so
``ORDER BY path`` sorts as before. Schema 1 (TEXT paths) is converted when first opened.

Schema 3 (issue 12) adds packs: a small chunk's sealed body may sit inside a pack object
(``chunks.pack``, ``chunks.pack_offset``; ``stored_size`` is then the body's length in the
pack), and a version may be an entry of a manifest batch (``versions.batch``). Schema 1
and 2 catalogs gain the columns and tables when first opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkvault import names
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import ensure_private_dir, open_private_file, tighten_private_file

SCHEMA_VERSION = 4
# Run statement by statement (split on ";", so no ";" in a comment).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    plain_size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    wrapped_dek BLOB NOT NULL,
    generation INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    pack TEXT,  -- NULL: the chunk is its own object under chunks/
    pack_offset INTEGER NOT NULL DEFAULT 0,
    scheme TEXT  -- NULL: whole copies, else the erasure scheme of its shares ("3-2")
);
CREATE TABLE IF NOT EXISTS replicas (
    chunk_id TEXT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ok',
    updated REAL NOT NULL,
    share INTEGER,  -- NULL: a whole copy, else the index of the share the peer holds
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
    chunk_count INTEGER NOT NULL,
    batch TEXT,  -- NULL: `manifest` names a per-file manifest object, else the batch holding it
    writer TEXT  -- the writer id of the write-only host that stored it, NULL for the owner
);
CREATE INDEX IF NOT EXISTS versions_path ON versions(path, created_ns);
CREATE TABLE IF NOT EXISTS packs (
    id TEXT PRIMARY KEY,
    stored_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    scheme TEXT
);
CREATE TABLE IF NOT EXISTS pack_replicas (
    pack_id TEXT NOT NULL REFERENCES packs(id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ok',
    updated REAL NOT NULL,
    share INTEGER,
    PRIMARY KEY (pack_id, peer)
);
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
# Created after an older catalog gained the columns they index (see _add_columns).
INDEXES = """
CREATE INDEX IF NOT EXISTS chunks_pack ON chunks(pack) WHERE pack IS NOT NULL;
CREATE INDEX IF NOT EXISTS versions_batch ON versions(batch) WHERE batch IS NOT NULL;
"""
# Columns schemas 3 and 4 added to older tables, as ALTER TABLE ADD COLUMN takes them.
_ADDED_COLUMNS = {
    "chunks": (("pack", "TEXT"), ("pack_offset", "INTEGER NOT NULL DEFAULT 0"),
               ("scheme", "TEXT")),
    "versions": (("batch", "TEXT"), ("writer", "TEXT")),
    "packs": (("scheme", "TEXT"),),
    "replicas": (("share", "INTEGER"),),
    "pack_replicas": (("share", "INTEGER"),),
}  # fmt: skip


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


def _add_columns(db: sqlite3.Connection) -> None:
    """Give tables of an older schema the columns they lack (a new catalog has them all)."""
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


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


#: Meta of a write-only host's state dir: its writer id (and so, its versions' origin).
WRITER_ID = "writer_id"


class CatalogError(ChunkvaultError):
    pass


_CHUNK_COLUMNS = (
    "id, plain_size, stored_size, wrapped_dek, generation, sha256, pack, pack_offset, scheme"
)
_CHUNK_INSERT = (
    "id, plain_size, stored_size, wrapped_dek, generation, sha256, created, pack, pack_offset, "
    "scheme"
)
_INSERT_VERSION = (
    "INSERT OR IGNORE INTO versions (path, manifest, size, mtime_ns, mode, sha256, deleted, "
    "created_ns, inode, chunk_count, batch, writer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class ChunkRow:
    id: str
    plain_size: int
    stored_size: int
    wrapped_dek: bytes
    generation: int
    sha256: str
    # Where the sealed body is: its own object (pack None), or ``stored_size`` bytes at
    # ``pack_offset`` in the pack object ``pack``.
    pack: str | None = None
    pack_offset: int = 0
    # A chunk object stored as erasure-coded shares: their scheme ("3-2"); None: copies.
    scheme: str | None = None


@dataclass(frozen=True)
class PackRow:
    """A pack object: sealed bodies of small chunks back to back (see docs/format.md)."""

    id: str
    stored_size: int
    sha256: str
    scheme: str | None = None  # as ChunkRow.scheme


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
    # None: ``manifest`` names a per-file manifest object. Else the manifest batch object
    # that holds this version, and ``manifest`` is only the entry's identity.
    batch: str | None = None
    # The write-only host that stored it (its writer id); None: the owner.
    writer: str | None = None


def _chunk_values(row: ChunkRow, pack: str | None, now: float) -> tuple[Any, ...]:
    return (row.id, row.plain_size, row.stored_size, row.wrapped_dek, row.generation,
            row.sha256, now, pack, row.pack_offset, row.scheme)  # fmt: skip


def _version_values(row: VersionRow) -> tuple[Any, ...]:
    return (path_value(row.path), row.manifest, row.size, row.mtime_ns, row.mode, row.sha256,
            int(row.deleted), row.created_ns, row.inode, row.chunk_count, row.batch,
            row.writer)  # fmt: skip


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
        # Whose versions this machine's tree is compared with (latest, latest_own): the
        # writer id of a write-only host's state dir (writer_credential.writer_keys sets it
        # at its first use), None for the owner's.
        self.origin: str | None = self.get_meta(WRITER_ID)

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
            _add_columns(db)
            for statement in INDEXES.split(";"):
                db.execute(statement)
            if version != SCHEMA_VERSION:  # (only then: opening must not count as a change)
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

    def data_version(self) -> int:
        """Changes whenever another connection (this process's or another's) commits to the
        catalog: tells whether what this one read is still current."""
        return int(self.query("PRAGMA data_version")[0][0])

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

    def first_meta(self, key: str, value: str) -> str:
        """``key``'s value, set to ``value`` if it has none: of two processes that set it
        at once, both get the first one's."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
        found = self.get_meta(key)
        assert found is not None
        return found

    def delete_meta(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        rows = self.query(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {str(k): str(v) for k, v in rows}

    # --- chunks and replicas ---------------------------------------------------------------

    def chunk(self, chunk_id: str) -> ChunkRow | None:
        rows = self.query(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE id = ?", (chunk_id,))
        return ChunkRow(*rows[0]) if rows else None

    def known_chunks(self, chunk_ids: Sequence[str]) -> set[str]:
        """Which of ``chunk_ids`` the catalog has: one query per 500 (a writer asks about
        a batch of chunks at once, not one query and one GIL hand-off per chunk)."""
        known: set[str] = set()
        for start in range(0, len(chunk_ids), 500):
            part = chunk_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            known.update(
                r[0] for r in self.query(f"SELECT id FROM chunks WHERE id IN ({marks})", part)
            )
        return known

    def chunk_shares(self, chunk_id: str) -> dict[str, int]:
        """The peers holding a share of an erasure-coded chunk object: peer -> index."""
        rows = self.query(
            "SELECT peer, share FROM replicas WHERE chunk_id = ? AND state = 'ok' "
            "AND share IS NOT NULL",
            (chunk_id,),
        )
        return {peer: int(share) for peer, share in rows}

    def pack_shares(self, pack_id: str) -> dict[str, int]:
        """As :meth:`chunk_shares`, of a pack."""
        rows = self.query(
            "SELECT peer, share FROM pack_replicas WHERE pack_id = ? AND state = 'ok' "
            "AND share IS NOT NULL",
            (pack_id,),
        )
        return {peer: int(share) for peer, share in rows}

    def replicas(self, chunk_id: str) -> list[str]:
        rows = self.query(
            "SELECT peer FROM replicas WHERE chunk_id = ? AND state = 'ok' ORDER BY peer",
            (chunk_id,),
        )
        return [r[0] for r in rows]

    def record_chunk(
        self,
        row: ChunkRow,
        peers: Sequence[str],
        shares: Mapping[str, int] | None = None,
        *,
        replace: bool = False,
    ) -> None:
        """The chunk (object) is on ``peers``: whole copies, or (``shares``) the share of
        each peer's index. ``replace``: only there (a new encoding of it was written, and
        shares of the old one are no longer its)."""
        now = time.time()
        with self.transaction() as db:
            if replace:
                db.execute("DELETE FROM replicas WHERE chunk_id = ?", (row.id,))
            # The location moves with stored_size: they describe the same stored body.
            db.execute(
                f"INSERT INTO chunks ({_CHUNK_INSERT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET "
                "stored_size=excluded.stored_size, wrapped_dek=excluded.wrapped_dek, "
                "generation=excluded.generation, sha256=excluded.sha256, "
                "pack=excluded.pack, pack_offset=excluded.pack_offset, scheme=excluded.scheme",
                _chunk_values(row, row.pack, now),
            )
            db.executemany(
                "INSERT OR REPLACE INTO replicas VALUES (?, ?, 'ok', ?, ?)",
                [(row.id, peer, now, (shares or {}).get(peer)) for peer in peers],
            )

    def forget_replicas(self, chunk_id: str, peers: Sequence[str]) -> None:
        """``peers`` no longer hold the chunk object (``repair`` found them without it)."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM replicas WHERE chunk_id = ? AND peer = ?",
                [(chunk_id, peer) for peer in peers],
            )

    def forget_pack_replicas(self, pack_id: str, peers: Sequence[str]) -> None:
        """``peers`` no longer hold the pack, so neither the chunks in it."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM pack_replicas WHERE pack_id = ? AND peer = ?",
                [(pack_id, peer) for peer in peers],
            )
            db.executemany(
                "DELETE FROM replicas WHERE peer = ? AND chunk_id IN "
                "(SELECT id FROM chunks WHERE pack = ?)",
                [(peer, pack_id) for peer in peers],
            )

    def relocate_chunks(
        self,
        rows: Sequence[ChunkRow],
        peers: Sequence[str],
        pack: PackRow | None = None,
        shares: Mapping[str, int] | None = None,
    ) -> None:
        """The chunks now live where ``rows`` say (in ``pack``, new and on ``peers``, when
        given), on exactly ``peers``: gc moved them out of a pack it repacks or deletes.
        One transaction, so they are at the old place or the new one, never neither."""
        now = time.time()
        with self.transaction() as db:
            if pack is not None:
                db.execute(
                    "INSERT OR REPLACE INTO packs VALUES (?, ?, ?, ?, ?)",
                    (pack.id, pack.stored_size, pack.sha256, now, pack.scheme),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO pack_replicas VALUES (?, ?, 'ok', ?, ?)",
                    [(pack.id, peer, now, (shares or {}).get(peer)) for peer in peers],
                )
            for row in rows:
                db.execute(
                    f"INSERT INTO chunks ({_CHUNK_INSERT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET stored_size=excluded.stored_size, "
                    "sha256=excluded.sha256, pack=excluded.pack, "
                    "pack_offset=excluded.pack_offset, scheme=excluded.scheme",
                    _chunk_values(row, row.pack, now),
                )
                db.execute("DELETE FROM replicas WHERE chunk_id = ?", (row.id,))
                db.executemany(
                    "INSERT INTO replicas VALUES (?, ?, 'ok', ?, ?)",
                    [(row.id, peer, now, (shares or {}).get(peer)) for peer in peers],
                )

    def forget_objects(self, chunk_ids: Sequence[str], pack_ids: Sequence[str]) -> None:
        """gc is about to delete these chunk objects and packs: the chunks stored in them
        leave the catalog first (with their replicas), so nothing stored later
        deduplicates against a chunk that is going."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM chunks WHERE id = ? AND pack IS NULL", [(c,) for c in chunk_ids]
            )
            db.executemany("DELETE FROM chunks WHERE pack = ?", [(p,) for p in pack_ids])
            db.executemany("DELETE FROM packs WHERE id = ?", [(p,) for p in pack_ids])

    def set_replica_state(self, chunk_id: str, peer: str, state: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE replicas SET state = ?, updated = ? WHERE chunk_id = ? AND peer = ?",
                (state, time.time(), chunk_id, peer),
            )

    def set_pack_replica_state(self, pack_id: str, peer: str, state: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE pack_replicas SET state = ?, updated = ? WHERE pack_id = ? AND peer = ?",
                (state, time.time(), pack_id, peer),
            )

    def update_wrapped_dek(self, chunk_id: str, wrapped: bytes, generation: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE chunks SET wrapped_dek = ?, generation = ? WHERE id = ?",
                (wrapped, generation, chunk_id),
            )

    def chunks_not_at(self, generation: int) -> list[ChunkRow]:
        rows = self.query(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE generation != ?", (generation,)
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

    # --- packs -----------------------------------------------------------------------------

    def record_pack(
        self,
        pack: PackRow,
        chunks: Sequence[ChunkRow],
        peers: Sequence[str],
        shares: Mapping[str, int] | None = None,
    ) -> None:
        """A pack now durable on ``peers``, with the chunks whose bodies it holds: one
        transaction, so a crash leaves the pack and its chunks recorded together or not at
        all. A chunk id the catalog already has keeps its row (dedup: the first stored copy
        wins, this pack's body of it is never read); the chunks recorded here get a replica
        on each of ``peers``, as :meth:`record_chunk` gives a chunk object (with the index
        of each peer's share, for an erasure-coded pack)."""
        for row in chunks:
            if row.pack not in (None, pack.id):
                raise ValueError(f"chunk {row.id} says it is in pack {row.pack}, not {pack.id}")
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO packs VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "stored_size=excluded.stored_size, sha256=excluded.sha256, "
                "scheme=excluded.scheme",
                (pack.id, pack.stored_size, pack.sha256, now, pack.scheme),
            )
            db.executemany(
                "INSERT OR REPLACE INTO pack_replicas VALUES (?, ?, 'ok', ?, ?)",
                [(pack.id, peer, now, (shares or {}).get(peer)) for peer in peers],
            )
            db.executemany(
                f"INSERT INTO chunks ({_CHUNK_INSERT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO NOTHING",
                [_chunk_values(row, pack.id, now) for row in chunks],
            )
            # Only rows that point into this pack: a chunk that was already stored elsewhere
            # is not here as far as the catalog knows (its replicas are its first copy's).
            db.executemany(
                "INSERT OR REPLACE INTO replicas (chunk_id, peer, state, updated, share) "
                "SELECT id, ?, 'ok', ?, ? FROM chunks WHERE id = ? AND pack = ?",
                [(peer, now, (shares or {}).get(peer), row.id, pack.id)
                 for row in chunks for peer in peers],
            )  # fmt: skip

    def pack(self, pack_id: str) -> PackRow | None:
        rows = self.query(
            "SELECT id, stored_size, sha256, scheme FROM packs WHERE id = ?", (pack_id,)
        )
        return PackRow(*rows[0]) if rows else None

    def pack_replicas(self, pack_id: str) -> list[str]:
        rows = self.query(
            "SELECT peer FROM pack_replicas WHERE pack_id = ? AND state = 'ok' ORDER BY peer",
            (pack_id,),
        )
        return [r[0] for r in rows]

    def chunks_in_pack(self, pack_id: str) -> list[ChunkRow]:
        """The chunks the catalog places in ``pack_id``."""
        rows = self.query(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE pack = ?", (pack_id,))
        return [ChunkRow(*r) for r in rows]

    def pack_count(self) -> int:
        return int(self.query("SELECT count(*) FROM packs")[0][0])

    # --- files and versions ----------------------------------------------------------------

    def add_version(self, row: VersionRow) -> None:
        self.add_versions((row,))

    def add_versions(self, rows: Sequence[VersionRow]) -> None:
        """Record versions in one transaction (a batch's entries); one already recorded
        (same manifest name) is left as it is."""
        with self.transaction() as db:
            db.executemany(_INSERT_VERSION, [_version_values(row) for row in rows])

    def _versions(self, where: str, args: Sequence[Any]) -> list[VersionRow]:
        rows = self.query(
            "SELECT path, manifest, size, mtime_ns, mode, sha256, deleted, created_ns, "
            f"chunk_count, inode, batch, writer FROM versions {where}",
            args,
        )
        return [VersionRow(path_of(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8],
                           r[9], r[10], r[11]) for r in rows]  # fmt: skip

    def latest(self, path: str) -> VersionRow | None:
        """The newest version of ``path`` this machine stored (``origin``): what its tree
        is compared with. Another host's versions of the path are not its to replace."""
        rows = self._versions(
            "WHERE path = ? AND writer IS ? ORDER BY created_ns DESC, id DESC LIMIT 1",
            (path_value(path), self.origin),
        )
        return rows[0] if rows else None

    def versions(self, path: str) -> list[VersionRow]:
        return self._versions("WHERE path = ? ORDER BY created_ns, id", (path_value(path),))

    def latest_all(self) -> list[VersionRow]:
        """The newest version of every path (tombstones included), by path, whoever
        stored it: what `ls` and `restore` show."""
        return self._versions(
            "v WHERE NOT EXISTS (SELECT 1 FROM versions w WHERE w.path = v.path AND "
            "(w.created_ns > v.created_ns OR (w.created_ns = v.created_ns AND w.id > v.id))) "
            "ORDER BY path",
            (),
        )

    def latest_own(self) -> list[VersionRow]:
        """The newest version of every path this machine stored (``origin``), by path:
        what a scan of its tree is compared with. The versions write-only hosts stored
        (synced here by the owner) are not gone from this tree, nor changed in it; nor are
        the chunks a write-only host's API stored as files (``names.API_UPLOADS``)."""
        rows = self._versions(
            "v WHERE writer IS ? AND NOT EXISTS (SELECT 1 FROM versions w WHERE "
            "w.path = v.path AND w.writer IS v.writer AND (w.created_ns > v.created_ns OR "
            "(w.created_ns = v.created_ns AND w.id > v.id))) ORDER BY path",
            (self.origin,),
        )
        return [v for v in rows if not names.is_api_upload(v.path)]

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

    def remove_versions_named(self, manifests: Sequence[str]) -> None:
        """Forget these versions (gc: the ones retention no longer keeps)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM versions WHERE manifest = ?", [(m,) for m in manifests])

    def has_manifest(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM versions WHERE manifest = ?", (name,)))

    def has_batch(self, name: str) -> bool:
        """Whether any version of the manifest batch ``name`` is recorded."""
        return bool(self.query("SELECT 1 FROM versions WHERE batch = ? LIMIT 1", (name,)))

    def versions_in_batch(self, name: str) -> list[VersionRow]:
        """The versions recorded from batch ``name``, in the order they were added."""
        return self._versions("WHERE batch = ? ORDER BY id", (name,))

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
