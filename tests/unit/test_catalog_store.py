"""The catalog stores file paths as their bytes: any name, exact, in byte order."""

import os
import sqlite3
from pathlib import Path

import pytest

from chunkvault.catalog import Catalog, ChunkRow, PackRow, VersionRow
from chunkvault.catalog.jobs import JobQueue, Note
from chunkvault.catalog.store import SCHEMA_VERSION, CatalogError
from chunkvault.errors import ChunkvaultError

LATIN = os.fsdecode(b"caf\xe9.txt")
ODD = [LATIN, "new\nline", "é.txt", "a.txt", os.fsdecode(b"dir-\xff/x"), "z" * 255]


def row(path: str, n: int, deleted: bool = False) -> VersionRow:
    return VersionRow(path, f"m/{n}", n, n, 0o100644, "00" * 32, deleted, n, 1)


def test_any_name_is_stored_and_found_exactly(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    for n, path in enumerate(ODD):
        catalog.add_version(row(path, n))
    catalog.add_version(row(LATIN, 100))

    assert [v.path for v in catalog.latest_all()] == sorted(ODD, key=os.fsencode)
    assert catalog.latest(LATIN).manifest == "m/100"
    assert [v.manifest for v in catalog.versions(LATIN)] == ["m/0", "m/100"]
    assert catalog.version_count(LATIN) == 2
    assert catalog.latest(os.fsdecode(b"caf\xe8.txt")) is None
    assert catalog.remove_versions(LATIN) == ["m/0", "m/100"]
    assert catalog.latest(LATIN) is None
    catalog.close()


def test_the_job_queue_keeps_any_name(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    queue = JobQueue(catalog)
    queue.note([Note(LATIN, "upsert"), Note("new\nline", "move", src=LATIN)], now=1.0)
    (job,) = queue.take(5, now=2.0)  # the move of a never-stored file became an upsert
    assert (job.path, job.kind, job.src) == ("new\nline", "upsert", None)
    queue.note([Note(os.fsdecode(b"b\xff"), "move", src=os.fsdecode(b"a\xfe"))], now=3.0)
    queue.done(job)
    (moved,) = queue.take(5, now=4.0)
    assert (moved.path, moved.src) == (os.fsdecode(b"b\xff"), os.fsdecode(b"a\xfe"))
    catalog.close()


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE versions (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, manifest TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,
    sha256 TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL,
    inode INTEGER, chunk_count INTEGER NOT NULL
);
CREATE INDEX versions_path ON versions(path, created_ns);
CREATE TABLE jobs (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, src TEXT, due REAL NOT NULL,
    seen_size INTEGER, seen_mtime_ns INTEGER, closed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, first_seen REAL NOT NULL,
    running INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 0
);
"""


def test_a_schema_1_catalog_is_converted_when_opened(tmp_path: Path):
    """What every existing state dir holds: paths as TEXT."""
    path = tmp_path / "catalog.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.executemany(
        "INSERT INTO versions (path, manifest, size, mtime_ns, mode, sha256, created_ns, "
        "chunk_count) VALUES (?, ?, 1, 1, 33188, '', ?, 1)",
        [("docs/é.txt", "m/1", 1), ("a.txt", "m/2", 2), ("docs/é.txt", "m/3", 3)],
    )
    db.execute("INSERT INTO jobs (path, kind, src, due, first_seen) VALUES "
               "('new.txt', 'move', 'old.txt', 0, 0)")  # fmt: skip
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    catalog = Catalog(path)
    catalog.add_version(row(LATIN, 4))

    assert catalog.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert catalog.query("SELECT DISTINCT typeof(path) FROM versions") == [("blob",)]
    assert [v.path for v in catalog.latest_all()] == ["a.txt", LATIN, "docs/é.txt"]
    assert catalog.latest("docs/é.txt").manifest == "m/3"
    (job,) = JobQueue(catalog).take(1, now=1.0)
    assert (job.path, job.src) == ("new.txt", "old.txt")
    catalog.close()
    again = Catalog(path)  # reopening changes nothing
    assert again.latest("a.txt").manifest == "m/2"
    again.close()


def test_a_catalog_from_a_newer_version_is_a_clear_error(tmp_path):
    path = tmp_path / "catalog.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CatalogError, match=f"schema {SCHEMA_VERSION + 1}") as info:
        Catalog(path)
    assert isinstance(info.value, ChunkvaultError) and "upgrade chunkvault" in str(info.value)
    db = sqlite3.connect(path)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []  # left as it was
    db.close()


# --- schema 3: packs and manifest batches ------------------------------------------------

# The DDL of schema 1 (git a4a3d1d) and schema 2 (git f37b0fb), catalog.store's SCHEMA then
# catalog.jobs' JOBS_SCHEMA, verbatim: what real state dirs hold.
OLD_SCHEMAS = {
    1: """
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
    path TEXT NOT NULL,
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
CREATE TABLE IF NOT EXISTS jobs (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    src TEXT,
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
""",
    2: """
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
""",
}
DEK = b"\x01" * 60


def old_catalog(path: Path, schema: int) -> None:
    """A catalog as chunkvault wrote it at ``schema``, with a row in every table."""
    as_path = (lambda p: p) if schema == 1 else os.fsencode  # schema 1 held TEXT paths
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMAS[schema])
    db.execute("INSERT INTO meta VALUES ('vault_id', 'home')")
    db.executemany(
        "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, 1.0)",
        [("c1", 100, 140, DEK, 1, "aa"), ("c2", 200, 240, DEK, 2, "bb")],
    )
    db.executemany(
        "INSERT INTO replicas VALUES (?, ?, ?, 1.0)",
        [("c1", "p0", "ok"), ("c1", "p1", "ok"), ("c2", "p1", "missing")],
    )
    db.executemany(
        "INSERT INTO versions (path, manifest, size, mtime_ns, mode, sha256, deleted, "
        "created_ns, inode, chunk_count) VALUES (?, ?, ?, ?, 33188, 'ff', ?, ?, ?, ?)",
        [(as_path("docs/é.txt"), "m/1", 300, 5, 0, 10, 7, 2),
         (as_path("docs/é.txt"), "m/2", 0, 6, 1, 20, None, 0),
         (as_path("a.txt"), "m/3", 100, 7, 0, 30, 8, 1)],
    )  # fmt: skip
    db.execute("INSERT INTO api_requests VALUES ('r1', 'canon', '{\"chunks\": []}', 1.0)")
    db.execute("INSERT INTO api_chunks VALUES ('client-1', 'c1')")
    db.execute(
        "INSERT INTO jobs (path, kind, src, due, first_seen) VALUES (?, 'move', ?, 0, 0)",
        (as_path("new.txt"), as_path("old.txt")),
    )
    db.execute(f"PRAGMA user_version={schema}")
    db.commit()
    db.close()


@pytest.mark.parametrize("schema", sorted(OLD_SCHEMAS))
def test_an_older_catalog_is_converted_to_the_schema_and_every_row_reads_back(tmp_path, schema):
    path = tmp_path / "catalog.db"
    old_catalog(path, schema)

    catalog = Catalog(path)
    assert catalog.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert catalog.get_meta("vault_id") == "home"
    assert catalog.chunk("c1") == ChunkRow("c1", 100, 140, DEK, 1, "aa", None, 0)
    assert catalog.chunks_not_at(1) == [ChunkRow("c2", 200, 240, DEK, 2, "bb")]
    assert catalog.replicas("c1") == ["p0", "p1"] and catalog.replicas("c2") == []
    assert catalog.replica_counts() == {"p0": 1, "p1": 1}
    assert catalog.under_replicated(2) == 1
    assert catalog.all_versions() == [
        VersionRow("a.txt", "m/3", 100, 7, 33188, "ff", False, 30, 1, 8, None),
        VersionRow("docs/é.txt", "m/1", 300, 5, 33188, "ff", False, 10, 2, 7, None),
        VersionRow("docs/é.txt", "m/2", 0, 6, 33188, "ff", True, 20, 0, None, None),
    ]
    assert catalog.api_request("r1") == ("canon", {"chunks": []})
    assert catalog.client_chunk("client-1") == "c1"
    (job,) = JobQueue(catalog).take(1, now=1.0)
    assert (job.path, job.src) == ("new.txt", "old.txt")
    # ...and the new columns and tables work on it.
    catalog.record_pack(PackRow("k1", 500, "cc"), [packed("c3", 0), packed("c1", 40)], ["p2"])
    assert catalog.chunk("c3").pack == "k1" and catalog.chunk("c1").pack is None
    catalog.add_versions([version("b.txt", 1, batch="batch/1")])
    assert catalog.has_batch("batch/1") and catalog.pack_count() == 1
    catalog.record_pack(PackRow("k2", 90, "ee", "3-2"), [], ["p0", "p3"], {"p0": 4, "p3": 0})
    assert catalog.pack_shares("k2") == {"p0": 4, "p3": 0} and catalog.pack_shares("k1") == {}
    assert catalog.pack("k2") == PackRow("k2", 90, "ee", "3-2")
    catalog.close()

    again = Catalog(path)  # converted once: reopening changes nothing
    assert again.chunk("c3") == packed("c3", 0)
    assert [v.batch for v in again.all_versions()] == [None, "batch/1", None, None]
    assert again.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert again.pack_shares("k2") == {"p0": 4, "p3": 0}
    again.close()


def packed(chunk_id: str, offset: int, pack: str | None = "k1") -> ChunkRow:
    return ChunkRow(chunk_id, 10, 40, DEK, 1, "dd", pack, offset)


def version(path: str, n: int, batch: str | None = None) -> VersionRow:
    return VersionRow(path, f"m/{path}/{n}", n, n, 0o100644, "00", False, n, 1, None, batch)


def test_a_pack_records_its_chunks_and_their_replicas(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.record_chunk(ChunkRow("old", 900_000, 900_100, DEK, 1, "ee"), ["p0"])
    chunks = [packed("a", 5), packed("b", 45), packed("old", 85), packed("a", 125)]
    catalog.record_pack(PackRow("k1", 170, "f" * 64), chunks, ["p2", "p1"])

    assert catalog.pack("k1") == PackRow("k1", 170, "f" * 64)
    assert catalog.pack("k2") is None
    assert catalog.pack_replicas("k1") == ["p1", "p2"] and catalog.pack_replicas("k2") == []
    assert catalog.pack_count() == 1 and catalog.chunk_count() == 3
    assert catalog.chunk("a") == packed("a", 5)  # its first copy in the pack wins too
    assert catalog.chunk("b") == packed("b", 45)
    # Dedup: a chunk already stored keeps its own object and its replicas.
    assert catalog.chunk("old") == ChunkRow("old", 900_000, 900_100, DEK, 1, "ee")
    assert catalog.replicas("old") == ["p0"]
    assert catalog.replicas("a") == catalog.replicas("b") == ["p1", "p2"]
    assert catalog.replica_counts() == {"p0": 1, "p1": 2, "p2": 2}
    assert catalog.under_replicated(2) == 1  # "old"
    assert catalog.under_replicated(2, on_peers=["p0", "p1"]) == 3
    not_at = sorted(catalog.chunks_not_at(2), key=lambda c: c.id)
    assert not_at == [packed("a", 5), packed("b", 45), catalog.chunk("old")]

    # Recording the same pack again (a retry) changes no location and adds a peer.
    catalog.record_pack(PackRow("k1", 170, "f" * 64), [packed("b", 45)], ["p3"])
    assert catalog.pack_count() == 1 and catalog.chunk("b") == packed("b", 45)
    assert catalog.pack_replicas("k1") == ["p1", "p2", "p3"]
    assert catalog.replicas("b") == ["p1", "p2", "p3"]
    # A chunk row without a pack is given this pack's id.
    catalog.record_pack(PackRow("k2", 40, "0" * 64), [packed("c", 5, pack=None)], ["p0"])
    assert catalog.chunk("c") == packed("c", 5, pack="k2") and catalog.pack_count() == 2
    catalog.close()


def test_a_pack_and_its_chunks_are_recorded_together_or_not_at_all(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    broken = ChunkRow("bad", 10, 40, None, 1, "dd", "k1", 40)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):  # wrapped_dek NOT NULL: fails mid-way
        catalog.record_pack(PackRow("k1", 80, "f" * 64), [packed("a", 0), broken], ["p0"])
    assert catalog.pack("k1") is None and catalog.pack_replicas("k1") == []
    assert catalog.chunk("a") is None and catalog.replicas("a") == []
    with pytest.raises(ValueError, match="pack k9"):
        catalog.record_pack(PackRow("k1", 80, "f" * 64), [packed("a", 0, pack="k9")], ["p0"])
    assert catalog.pack_count() == 0
    catalog.close()


def test_record_chunk_stores_and_moves_a_location(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.record_chunk(packed("a", 77), ["p0"])
    assert catalog.chunk("a") == packed("a", 77)
    own = ChunkRow("a", 10, 52, DEK, 1, "dd")  # stored again as its own object
    catalog.record_chunk(own, ["p1"])
    assert catalog.chunk("a") == own and catalog.replicas("a") == ["p0", "p1"]
    catalog.close()


def test_gc_moves_chunks_to_a_new_pack_and_forgets_what_it_deletes(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.record_pack(PackRow("k1", 170, "f" * 64), [packed("a", 5), packed("b", 45)], ["p0"])
    catalog.record_chunk(ChunkRow("own", 10, 52, DEK, 1, "dd"), ["p0", "p1"])
    catalog.relocate_chunks([packed("a", 5, pack="k2")], ["p1", "p2"], PackRow("k2", 50, "e"))
    # Moved whole: the new place, and replicas only where the new pack is.
    assert catalog.chunk("a") == packed("a", 5, pack="k2")
    assert catalog.replicas("a") == ["p1", "p2"] and catalog.pack_replicas("k2") == ["p1", "p2"]
    catalog.forget_objects(["own", "b"], ["k1"])  # "b" is not its own object: kept by that
    assert catalog.chunk("own") is None and catalog.chunk("b") is None  # gone with k1
    assert catalog.pack("k1") is None and catalog.pack_replicas("k1") == []
    assert catalog.replicas("own") == [] and catalog.chunk_count() == 1
    catalog.add_versions([version("x", 1), version("x", 2)])
    catalog.remove_versions_named(["m/x/1"])
    assert [v.manifest for v in catalog.all_versions()] == ["m/x/2"]
    catalog.close()


def test_versions_of_a_batch(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    rows = [version(f"f{i}", i, batch="b/1") for i in (3, 1, 2)]
    catalog.add_versions(rows)
    catalog.add_versions([version("f1", 1, batch="b/other"), version("g", 1, batch="b/2")])
    catalog.add_version(version("h", 1))  # a per-file manifest object, as before
    catalog.add_version(version("i", 1, batch="b/3"))
    catalog.add_versions([])

    assert catalog.versions_in_batch("b/1") == rows  # in the order added; f1 not overwritten
    assert catalog.latest("f1").batch == "b/1" and catalog.latest("h").batch is None
    assert catalog.has_batch("b/1") and catalog.has_batch("b/2") and catalog.has_batch("b/3")
    assert not catalog.has_batch("b/other") and not catalog.has_batch("m/h/1")
    assert catalog.versions_in_batch("b/none") == []

    catalog.remove_versions("f3")  # a purge: its batch keeps the others' versions
    assert [v.path for v in catalog.versions_in_batch("b/1")] == ["f1", "f2"]
    assert [v.batch for v in catalog.latest_all()] == ["b/1", "b/1", "b/2", None, "b/3"]
    catalog.close()


def test_batched_writes_are_one_transaction(tmp_path):
    """2,000 small files are committed together: one BEGIN, whatever the row count."""
    catalog = Catalog(tmp_path / "catalog.db")
    statements: list[str] = []
    catalog._db.set_trace_callback(statements.append)
    catalog.record_pack(
        PackRow("k1", 2000 * 40, "f" * 64), [packed(f"c{i}", i * 40) for i in range(2000)],
        ["p0", "p1"],
    )  # fmt: skip
    catalog.add_versions([version(f"f{i}", 1, batch="b/1") for i in range(2000)])
    catalog._db.set_trace_callback(None)
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 2
    assert catalog.replica_counts() == {"p0": 2000, "p1": 2000}
    assert len(catalog.versions_in_batch("b/1")) == 2000 and catalog.under_replicated(2) == 0
    catalog.close()


def test_a_machine_compares_its_tree_with_its_own_versions_only(tmp_path):
    # The owner's catalog holds what write-only hosts stored too (synced): its scans must
    # not take their files for its own deleted or changed ones; `ls` shows them all.
    from dataclasses import replace

    from chunkvault.catalog.store import WRITER_ID

    catalog = Catalog(tmp_path / "c.db")
    mine = row("docs/a.txt", 1)
    theirs = replace(row("docs/a.txt", 2), writer="0a0b0c0d")
    elsewhere = replace(row("photos/b.jpg", 3), writer="0a0b0c0d")
    api = replace(row(".chunkvault-api/req-1/chunk-x", 4), writer="0a0b0c0d")
    catalog.add_versions([mine, theirs, elsewhere, api])
    assert catalog.origin is None
    assert [v.manifest for v in catalog.latest_all()] == [api.manifest, theirs.manifest,
                                                          elsewhere.manifest]  # fmt: skip
    assert [v.manifest for v in catalog.latest_own()] == [mine.manifest]
    assert catalog.latest("docs/a.txt") == mine and catalog.latest("photos/b.jpg") is None
    catalog.close()
    # A write-only host's state dir says whose it is: its catalog compares with that
    # writer's versions, and leaves the API's files out of its tree.
    writer = Catalog(tmp_path / "w.db")
    writer.first_meta(WRITER_ID, "0a0b0c0d")
    writer.add_versions([theirs, elsewhere, api])
    writer.close()
    again = Catalog(tmp_path / "w.db")
    assert again.origin == "0a0b0c0d"
    assert [v.path for v in again.latest_own()] == ["docs/a.txt", "photos/b.jpg"]
    assert again.first_meta(WRITER_ID, "ffffffff") == "0a0b0c0d"  # set once
    again.close()
