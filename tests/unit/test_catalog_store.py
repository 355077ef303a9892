"""The catalog stores file paths as their bytes: any name, exact, in byte order."""

import os
import sqlite3
from pathlib import Path

import pytest

from chunkvault.catalog import Catalog, VersionRow
from chunkvault.catalog.jobs import JobQueue, Note
from chunkvault.catalog.store import CatalogError
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

    assert catalog.query("PRAGMA user_version") == [(2,)]
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
    db.execute("PRAGMA user_version=3")
    db.close()
    with pytest.raises(CatalogError, match="schema 3") as info:
        Catalog(path)
    assert isinstance(info.value, ChunkvaultError) and "upgrade chunkvault" in str(info.value)
    db = sqlite3.connect(path)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []  # left as it was
    db.close()
