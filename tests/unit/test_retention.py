"""Which versions gc keeps (chunkvault.retention), from catalog rows alone."""

from __future__ import annotations

from chunkvault.catalog import VersionRow
from chunkvault.retention import NS_PER_DAY, Policy, expired

NOW = 1_000 * NS_PER_DAY


def version(path: str, day: float, deleted: bool = False, tag: str = "") -> VersionRow:
    created = int(NOW - day * NS_PER_DAY)
    return VersionRow(path, f"{path}@{day}{tag}", 1, 0, 0o644, "", deleted, created, 1)


def dropped(rows: list[VersionRow], policy: Policy) -> set[str]:
    return {v.manifest for v in expired(rows, policy, NOW)}


def test_a_deleted_file_goes_whole_once_its_tombstone_is_older_than_deleted_days() -> None:
    rows = [version("a", 50), version("a", 40), version("a", 31, deleted=True)]
    assert dropped(rows, Policy(deleted_days=30)) == {"a@50", "a@40", "a@31"}
    assert dropped(rows, Policy(deleted_days=32)) == set()  # restore --deleted still works
    assert dropped(rows, Policy(deleted_days=0)) == {"a@50", "a@40", "a@31"}


def test_a_live_file_is_never_dropped_whatever_its_age_without_a_versions_limit() -> None:
    rows = [version("a", 900), version("a", 800, deleted=True), version("a", 700)]
    assert dropped(rows, Policy(deleted_days=0)) == set()


def test_versions_keeps_the_newest_n_contents_and_the_tombstones_after_them() -> None:
    rows = [
        version("a", 9), version("a", 8, deleted=True), version("a", 7), version("a", 6),
        version("a", 5, deleted=True), version("a", 4),
    ]  # fmt: skip
    assert dropped(rows, Policy(30, versions=2)) == {"a@9", "a@8", "a@7"}
    assert dropped(rows, Policy(30, versions=1)) == {"a@9", "a@8", "a@7", "a@6", "a@5"}
    assert dropped(rows, Policy(30, versions=10)) == set()


def test_a_recently_deleted_file_keeps_its_newest_n_contents_for_restore_deleted() -> None:
    rows = [version("a", 9), version("a", 8), version("a", 7), version("a", 1, deleted=True)]
    assert dropped(rows, Policy(30, versions=2)) == {"a@9"}


def test_paths_are_judged_apart() -> None:
    rows = [version("a", 40, deleted=True), version("b", 40), version("b", 39)]
    assert dropped(rows, Policy(30, versions=1)) == {"a@40", "b@40"}
