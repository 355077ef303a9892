"""The bookkeeping of unreadable directories, and what a scan concludes next to them."""

from __future__ import annotations

import pytest

from chunkvault.catalog import VersionRow
from chunkvault.watcher.scan import FileState, differences
from chunkvault.watcher.unreadable import UnreadableDirs, within


@pytest.mark.parametrize(
    ("path", "dirs", "expected"),
    [
        ("a/b/f.txt", {"a"}, True),
        ("a/b/f.txt", {"a/b"}, True),
        ("a/b/f.txt", {"a/b/f.txt"}, False),  # a dir is not below itself
        ("ab/f.txt", {"a"}, False),
        ("f.txt", {""}, True),  # the root itself is unreadable
        ("f.txt", set(), False),
    ],
)
def test_within(path, dirs, expected):
    assert within(path, dirs) is expected


def test_update_reports_each_directory_once_and_again_when_readable():
    dirs = UnreadableDirs()
    assert dirs.update({"a", "b/c"}) == (["a", "b/c"], [])
    assert dirs.update({"a", "b/c"}) == ([], [])  # the next rescan: nothing new to say
    assert dirs.update({"b/c", "d"}) == (["d"], ["a"])
    assert dirs.known == {"b/c", "d"}


def test_a_scan_of_one_directory_only_replaces_what_is_known_below_it():
    dirs = UnreadableDirs({"a/x", "a/y", "b"})
    assert dirs.update(set(), "a/x") == ([], ["a/x"])
    assert dirs.update({"a/z"}, "a") == (["a/z"], ["a/y"])
    assert dirs.known == {"a/z", "b"}
    assert len(dirs) == 2


def test_concerns_what_is_holds_or_lies_in_an_unreadable_dir():
    dirs = UnreadableDirs({"a/b"})
    assert dirs.concerns("a/b") and dirs.concerns("a") and dirs.concerns("a/b/c")
    assert not dirs.concerns("a/c") and not dirs.concerns("ab")
    assert UnreadableDirs({""}).concerns("anything")


def _row(path: str) -> VersionRow:
    return VersionRow(path, f"m-{path}", 1, 1, 0o100644, "00", False, 0, 1)


def test_files_below_an_unreadable_dir_are_not_gone():
    tree = {"top.txt": FileState(1, 1, 0o100644)}
    latest = [_row(p) for p in ("top.txt", "lost.txt", "priv/a.txt", "priv/deep/b.txt")]
    assert differences(tree, latest) == ([], ["lost.txt", "priv/a.txt", "priv/deep/b.txt"])
    assert differences(tree, latest, "", {"priv"}) == ([], ["lost.txt"])
    assert differences({}, latest, "", {""}) == ([], [])  # the root itself unreadable
