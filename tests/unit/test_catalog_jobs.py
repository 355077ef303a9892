"""The durable queue: coalescing, settling, crash recovery, retries."""

from pathlib import Path

import pytest

from chunkvault.catalog import Catalog, VersionRow
from chunkvault.catalog.jobs import JobQueue, Note
from chunkvault.watcher.scan import FileState, differences, scan_tree


@pytest.fixture
def queue(tmp_path: Path):
    catalog = Catalog(tmp_path / "catalog.db")
    yield JobQueue(catalog)
    catalog.close()


def test_changes_to_one_path_coalesce_and_settle(queue):
    queue.note([Note("a.txt", "upsert", delay=1.0, size=1, mtime_ns=1)], now=100.0)
    queue.note([Note("a.txt", "upsert", delay=1.0, size=2, mtime_ns=2)], now=100.5)
    assert queue.depth() == 1
    assert queue.take(10, now=101.0) == []  # pushed back by the second write
    (job,) = queue.take(10, now=101.6)
    assert (job.kind, job.seen_size, job.first_seen) == ("upsert", 2, 100.0)
    assert queue.take(10, now=200.0) == []  # claimed: not handed out twice
    queue.done(job)
    assert queue.depth() == 0


def test_a_change_during_work_is_not_lost(queue):
    queue.note([Note("a", "upsert")], now=1.0)
    (job,) = queue.take(1, now=2.0)
    queue.note([Note("a", "upsert", closed=True)], now=3.0)  # changed while being stored
    queue.done(job)
    (again,) = queue.take(1, now=4.0)
    assert again.closed and again.version == job.version + 1


def test_running_jobs_are_reset_after_a_crash(tmp_path):
    catalog = Catalog(tmp_path / "c.db")
    queue = JobQueue(catalog)
    queue.note([Note("x", "upsert"), Note("y", "delete")], now=1.0)
    assert len(queue.take(5, now=2.0)) == 2
    catalog.close()
    reopened = JobQueue(Catalog(tmp_path / "c.db"))  # the process died; a new one starts
    assert reopened.take(5, now=3.0) == []
    assert reopened.reset_running() == 2
    assert {j.path for j in reopened.take(5, now=3.0)} == {"x", "y"}


def test_retry_backs_off_and_records_the_error(queue):
    queue.note([Note("p", "upsert")], now=1.0)
    (job,) = queue.take(1, now=1.0)
    queue.retry(job, "peer a down", delay=1000)
    assert queue.take(1) == []
    (failing,) = queue.failing()
    assert (failing.attempts, failing.last_error) == (1, "peer a down")
    assert [j.path for j in queue.pending()] == ["p"]


def test_a_move_of_a_never_stored_file_is_an_upsert(queue):
    queue.note([Note("tmp.part", "upsert")], now=1.0)
    queue.note([Note("final.bin", "move", src="tmp.part")], now=1.1)
    (job,) = queue.take(5, now=5.0)
    assert (job.path, job.kind, job.src) == ("final.bin", "upsert", None)


def test_scan_and_differences(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "new.txt").write_text("new")
    (tmp_path / "same.txt").write_text("same")
    (tmp_path / "x.swp").write_text("ignored")
    (tmp_path / "link").symlink_to(tmp_path / "same.txt")
    tree = scan_tree(tmp_path, lambda p: p.endswith(".swp"))
    assert set(tree) == {"d/new.txt", "same.txt"}
    same = tree["same.txt"]

    def row(path: str, st: FileState, deleted: bool = False) -> VersionRow:
        return VersionRow(path, f"m-{path}", st.size, st.mtime_ns, st.mode, "", deleted, 1, 0)

    latest = [row("same.txt", same), row("gone.txt", same), row("old.txt", same, deleted=True)]
    changed, gone = differences(tree, latest)
    assert changed == ["d/new.txt"] and gone == ["gone.txt"]
    assert differences(tree, latest, under="d") == (["d/new.txt"], [])


def test_seeing_the_same_pending_state_again_does_not_postpone_it(queue):
    queue.note([Note("f", "upsert", delay=1.0, size=5, mtime_ns=7)], now=10.0)
    for t in (10.4, 10.8, 10.9):  # a poll scan every 0.4 s, faster than the settle time
        queue.note([Note("f", "upsert", delay=1.0, size=5, mtime_ns=7)], now=t)
    (job,) = queue.take(1, now=11.05)
    assert job.version == 0
    queue.done(job)
    assert queue.depth() == 0
    queue.note([Note("f", "upsert", delay=1.0, size=6, mtime_ns=8)], now=20.0)  # real change
    queue.note([Note("f", "upsert", delay=1.0, size=7, mtime_ns=9)], now=20.5)
    assert queue.take(1, now=21.2) == []
    assert queue.take(1, now=21.6)
