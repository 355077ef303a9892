"""InotifySource against the real kernel in tmp dirs (no S3).

Waits poll for the expected state (deadline 5 s). The only sleeps are the short quiet periods
that prove an event does NOT come (a move that must not turn into a delete).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from chunkvault.errors import ChunkvaultError
from chunkvault.watcher.events import Change
from chunkvault.watcher.inotify import (
    THREAD_NAME,
    InotifySource,
    Op,
    WatchLimitError,
    pyinotify,  # imported there without its asyncore DeprecationWarning
    translate,
)

WINDOW = 0.2  # move-pairing window used by these tests


class Collector:
    """A thread-safe sink; ``delay`` makes it slow, which widens the new-directory race."""

    def __init__(self, delay: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._items: list[Change] = []
        self._delay = delay

    def __call__(self, change: Change) -> None:
        time.sleep(self._delay)
        with self._lock:
            self._items.append(change)

    @property
    def items(self) -> list[Change]:
        with self._lock:
            return list(self._items)

    def paths(self, *kinds: str) -> set[str]:
        return {c.path for c in self.items if c.kind in kinds}

    def wait_for(self, predicate: Callable[[list[Change]], bool], what: str = "") -> list[Change]:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            items = self.items
            if predicate(items):
                return items
            time.sleep(0.01)
        pytest.fail(f"timed out waiting for {what or predicate}; got {self.items}")

    def wait_paths(self, expected: set[str], *kinds: str) -> None:
        kinds = kinds or ("write", "closed")
        self.wait_for(
            lambda items: expected <= {c.path for c in items if c.kind in kinds},
            f"{kinds} for {sorted(expected - self.paths(*kinds))}",
        )

    def wait_change(self, change: Change) -> list[Change]:
        return self.wait_for(lambda items: change in items, repr(change))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


@pytest.fixture
def watch(root: Path):
    """``watch(ignore=None, delay=0) -> Collector``: a started source on ``root``, stopped
    afterwards; ``watch.sources`` lists the sources."""
    sources: list[InotifySource] = []

    def start(ignore: Callable[[str], bool] | None = None, delay: float = 0.0) -> Collector:
        sink = Collector(delay)
        source = InotifySource(root, sink, ignore=ignore, move_window=WINDOW)
        sources.append(source)
        source.start()
        return sink

    start.sources = sources  # type: ignore[attr-defined]
    yield start
    for source in sources:
        source.stop()


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_tree(top: Path, files: int, depth: int = 4) -> set[str]:
    """``files`` files spread over nested dirs; returns their paths relative to ``top``."""
    made = set()
    for i in range(files):
        rel = "/".join(f"d{j}" for j in range(i % depth)) + f"/f{i}.txt"
        write(top / rel.lstrip("/"), f"content {i}")
        made.add(rel.lstrip("/"))
    return made


# -- the pure translation step -------------------------------------------------------------

ROOT = "/w"


def ev(mask: int, pathname: str | None = None, **extra: object) -> SimpleNamespace:
    return SimpleNamespace(mask=mask, pathname=pathname, wd=extra.pop("wd", 1), **extra)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev(pyinotify.IN_Q_OVERFLOW, wd=-1), Change("rescan", "")),
        (ev(pyinotify.IN_CREATE, "/w/a/f"), Change("write", "a/f")),
        (ev(pyinotify.IN_MODIFY, "/w/f"), Change("write", "f")),
        (ev(pyinotify.IN_CLOSE_WRITE, "/w/f"), Change("closed", "f")),
        (ev(pyinotify.IN_DELETE, "/w/f"), Change("delete", "f")),
        (ev(pyinotify.IN_DELETE | pyinotify.IN_ISDIR, "/w/d"), Change("delete", "d", is_dir=True)),
        (ev(pyinotify.IN_CREATE | pyinotify.IN_ISDIR, "/w/d"), Op("walk", "d", True)),
        (ev(pyinotify.IN_MOVED_FROM, "/w/f", cookie=7), Op("moved_from", "f", cookie=7)),
        (
            ev(pyinotify.IN_MOVED_TO | pyinotify.IN_ISDIR, "/w/d", cookie=7),
            Op("moved_to", "d", True, cookie=7),
        ),
        (ev(pyinotify.IN_MOVE_SELF, "/w/d-unknown-path", wd=5), Op("self", wd=5)),
        (ev(pyinotify.IN_DELETE_SELF, "/w", wd=1), Op("self", wd=1)),
        (ev(pyinotify.IN_IGNORED, "/w/d"), None),
        (ev(pyinotify.IN_ATTRIB | pyinotify.IN_ISDIR, "/w/d"), Op("attrib", "d", True)),
        (ev(pyinotify.IN_ATTRIB, "/w/f"), None),  # a file's mode: rescans compare it
        (ev(pyinotify.IN_ATTRIB | pyinotify.IN_ISDIR, "/w"), None),  # the root itself
        (ev(pyinotify.IN_MODIFY | pyinotify.IN_ISDIR, "/w"), None),  # the root itself
        (ev(pyinotify.IN_CREATE, "/w"), None),
        (ev(pyinotify.IN_CREATE, "/wx/f"), None),  # not under the root
        (ev(pyinotify.IN_CREATE, "/elsewhere/f"), None),
    ],
)
def test_translate(event, expected):
    assert translate(event, ROOT) == expected


# -- real kernel ---------------------------------------------------------------------------


def test_file_written_right_after_makedirs_is_reported(root, watch):
    # Without the walk of new directories, most of these are lost (all, with a slow sink).
    sink = watch(delay=0.002)
    expected = set()
    for i in range(20):
        os.makedirs(root / f"t{i}/b/c/d")
        write(root / f"t{i}/b/c/d/f.txt")
        expected.add(f"t{i}/b/c/d/f.txt")
    sink.wait_paths(expected)


def test_copytree_reports_every_file(root, tmp_path, watch):
    sink = watch()
    files = make_tree(tmp_path / "src", 40)
    shutil.copytree(tmp_path / "src", root / "copy")
    sink.wait_paths({f"copy/{f}" for f in files})


def test_tree_moved_in_is_walked_and_watched(root, tmp_path, watch):
    sink = watch()
    files = make_tree(tmp_path / "outside/tree", 12)
    (tmp_path / "outside/tree/d0/link").symlink_to("../f0.txt")
    os.rename(tmp_path / "outside/tree", root / "tree")
    sink.wait_paths({f"tree/{f}" for f in files})
    assert not {c for c in sink.items if c.path == "tree/d0/link"}  # a symlink is no file
    write(root / "tree/d0/d1/d2/late.txt")  # the deepest dir has a watch
    sink.wait_change(Change("closed", "tree/d0/d1/d2/late.txt"))


@pytest.mark.parametrize("ignore_swp", [True, False])
def test_editor_atomic_save(root, watch, ignore_swp):
    write(root / "notes.txt", "v1")
    sink = watch(ignore=(lambda p: p.endswith(".swp")) if ignore_swp else None)
    write(root / ".notes.txt.swp", "v2")
    os.replace(root / ".notes.txt.swp", root / "notes.txt")
    items = sink.wait_change(Change("move", "notes.txt", src=".notes.txt.swp"))
    temp_writes = [c for c in items if c.path == ".notes.txt.swp"]
    assert bool(temp_writes) is not ignore_swp
    time.sleep(WINDOW * 2)  # quiet period: the paired MOVED_FROM must not become a delete
    assert not [c for c in sink.items if c.kind == "delete"]


def test_rename_file_within_tree_is_one_move(root, watch):
    write(root / "a.txt")
    sink = watch()
    os.rename(root / "a.txt", root / "b.txt")
    sink.wait_change(Change("move", "b.txt", src="a.txt"))
    time.sleep(WINDOW * 2)
    assert sink.items == [Change("move", "b.txt", src="a.txt")]


def test_rename_dir_within_tree_is_one_move_and_paths_follow(root, watch):
    write(root / "d/sub/f.txt")
    sink = watch()
    os.rename(root / "d", root / "e")
    sink.wait_change(Change("move", "e", src="d", is_dir=True))
    write(root / "e/new.txt")
    write(root / "e/sub/new2.txt")
    sink.wait_paths({"e/new.txt", "e/sub/new2.txt"}, "closed")
    time.sleep(WINDOW * 2)
    moves_and_deletes = [c for c in sink.items if c.kind in ("move", "delete")]
    assert moves_and_deletes == [Change("move", "e", src="d", is_dir=True)]
    assert not [c for c in sink.items if c.path.startswith("d/")]


def test_move_out_of_tree_is_a_delete_and_leaves_no_stale_watches(root, tmp_path, watch):
    write(root / "a.txt")
    write(root / "d/sub/f.txt")
    sink = watch()
    source = watch.sources[0]
    assert source.watch_count == 3  # root, d, d/sub
    os.rename(root / "a.txt", tmp_path / "outside/a.txt")
    os.rename(root / "d", tmp_path / "outside/d")
    # Written before the move is even seen: these must not come back as bogus tree paths.
    write(tmp_path / "outside/d/new.txt")
    write(tmp_path / "outside/d/sub/new2.txt")
    os.mkdir(tmp_path / "outside/d/sub/newdir")
    sink.wait_change(Change("delete", "a.txt"))
    sink.wait_change(Change("delete", "d", is_dir=True))
    write(tmp_path / "outside/d/later.txt")
    write(root / "sentinel.txt")  # events come in order: once this is seen, the others were too
    sink.wait_change(Change("closed", "sentinel.txt"))
    assert {c.path for c in sink.items} == {"a.txt", "d", "sentinel.txt"}
    assert source.watch_count == 1


def replay(changes: list[Change]) -> set[str]:
    """The file paths a consumer that only follows the reported names would believe in."""
    known: set[str] = set()
    for c in changes:
        if c.kind in ("write", "closed"):
            known.add(c.path)
        elif c.kind in ("delete", "move"):
            gone = {
                k for k in known if k == (c.src or c.path) or k.startswith(f"{c.src or c.path}/")
            }
            known -= gone
            if c.kind == "move":
                known |= {c.path + k[len(c.src) :] for k in gone}
    return known


def test_build_then_rename_into_place(root, watch):
    # A slow sink makes handling lag behind the disk: dirs are renamed before their creation is
    # handled, which is where pyinotify's own path bookkeeping goes wrong.
    sink = watch(delay=0.002)
    for i in range(10):
        os.makedirs(root / f".tmp{i}/sub/deep")
        for j in range(3):
            write(root / f".tmp{i}/f{j}")
            write(root / f".tmp{i}/sub/deep/g{j}")
        os.rename(root / f".tmp{i}", root / f"out{i}")
        if i % 3 == 0:
            os.rename(root / f"out{i}", root / f"final{i}")
    actual = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    sink.wait_for(lambda items: replay(items) == actual, "the replayed changes to match the tree")
    sink.wait_for(lambda _: watch.sources[0].watch_count == 1 + 3 * 10, "root + out/sub/deep")
    assert not [c for c in sink.items if c.kind == "rescan"]


def test_delete_file_and_rmtree(root, watch):
    write(root / "a.txt")
    write(root / "d/f1.txt")
    write(root / "d/sub/f2.txt")
    sink = watch()
    os.unlink(root / "a.txt")
    shutil.rmtree(root / "d")
    # rmtree: one delete per file (IN_DELETE in its dir) and one is_dir delete per directory.
    for change in [
        Change("delete", "a.txt"),
        Change("delete", "d/f1.txt"),
        Change("delete", "d/sub/f2.txt"),
        Change("delete", "d/sub", is_dir=True),
        Change("delete", "d", is_dir=True),
    ]:
        sink.wait_change(change)
    sink.wait_for(lambda _: watch.sources[0].watch_count == 1, "watches of deleted dirs dropped")


def test_append_to_preexisting_file(root, watch):
    write(root / "old/log.txt", "line 1\n")
    sink = watch()
    with open(root / "old/log.txt", "a") as f:
        f.write("line 2\n")
    sink.wait_change(Change("write", "old/log.txt"))
    sink.wait_change(Change("closed", "old/log.txt"))


def test_ignore_applies_to_files_not_directories(root, watch):
    write(root / "x.tmp/keep.txt")
    sink = watch(ignore=lambda p: p.endswith(".tmp"))
    write(root / "a.tmp")
    write(root / "b.txt")
    os.unlink(root / "a.tmp")
    shutil.rmtree(root / "x.tmp")
    sink.wait_change(Change("delete", "x.tmp", is_dir=True))
    assert not [c for c in sink.items if c.path == "a.tmp"]
    assert Change("closed", "b.txt") in sink.items
    assert Change("delete", "x.tmp/keep.txt") in sink.items


def test_chmod_of_a_directory_asks_for_a_rescan_of_it(root, watch):
    # An unreadable dir is neither watched nor listed (run as a user: see the agent's e2e
    # test); its chmod comes from the parent's watch, and the dir is rescanned.
    write(root / "d/sub/f.txt")
    sink = watch()
    (root / "d" / "sub").chmod(0o700)
    sink.wait_change(Change("rescan", "d/sub", is_dir=True))
    (root / "d" / "sub" / "g.txt").write_text("still watched\n")
    sink.wait_paths({"d/sub/g.txt"})
    assert not [c for c in sink.items if c.kind == "rescan" and not c.path]


def test_overflow_asks_for_rescan_and_watching_goes_on(root, watch):
    sink = watch()
    source = watch.sources[0]
    # The kernel queues IN_Q_OVERFLOW with wd -1; inject one into the notifier's queue.
    source._notifier.append_event(pyinotify._RawEvent(-1, pyinotify.IN_Q_OVERFLOW, 0, ""))
    sink.wait_change(Change("rescan", ""))
    write(root / "after/f.txt")
    sink.wait_paths({"after/f.txt"})
    assert source.watch_count == 2


def test_root_removed_asks_for_rescan(root, watch):
    sink = watch()
    shutil.rmtree(root)
    sink.wait_change(Change("rescan", ""))


def test_stop_is_quick_idempotent_and_leaves_no_thread(root, watch):
    watch()
    source = watch.sources[0]
    assert source.watch_count == 1
    assert THREAD_NAME in {t.name for t in threading.enumerate()}
    began = time.monotonic()
    source.stop()
    source.stop()
    assert time.monotonic() - began < 1.0
    assert THREAD_NAME not in {t.name for t in threading.enumerate()}
    assert source.watch_count == 0


def test_watch_limit_error(root, monkeypatch):
    for i in range(5):
        (root / f"d{i}").mkdir()
    calls = []
    real = pyinotify._CtypesLibcINotifyWrapper._inotify_add_watch

    def add_watch_until_full(self, fd, pathname, mask):
        calls.append(pathname)
        if len(calls) > 3:
            ctypes.set_errno(errno.ENOSPC)
            return -1
        return real(self, fd, pathname, mask)

    monkeypatch.setattr(
        pyinotify._CtypesLibcINotifyWrapper, "_inotify_add_watch", add_watch_until_full
    )
    source = InotifySource(root, Collector())
    with pytest.raises(WatchLimitError) as info:
        source.start()
    assert isinstance(info.value, ChunkvaultError)
    assert info.value.exit_code == 1
    assert "max_user_watches" in str(info.value)
    assert "watch.mode: poll" in str(info.value)
    assert THREAD_NAME not in {t.name for t in threading.enumerate()}
    assert source.watch_count == 0
    source.stop()  # harmless after a failed start


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ChunkvaultError, match="cannot watch"):
        InotifySource(tmp_path / "nope", Collector()).start()
