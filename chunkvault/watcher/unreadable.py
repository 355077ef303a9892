"""Directories of the tree that cannot be listed (no read or search permission for us).

A scan skips such a directory with everything below it; what the catalog holds there is
neither re-stored nor marked deleted, since we cannot know. The agent rescans often, so it
keeps the set it knows and warns when a directory appears in it and again when one leaves
it, never once per scan. The set is kept in the catalog so that `status` shows it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable

from chunkvault.catalog import Catalog

log = logging.getLogger(__name__)
META_KEY = "unreadable_dirs"


def within(path: str, dirs: Collection[str]) -> bool:
    """Whether ``path`` lies below one of ``dirs`` ("" is the whole tree)."""
    if not dirs:
        return False
    if "" in dirs:
        return True
    parts = path.split("/")
    return any("/".join(parts[:i]) in dirs for i in range(1, len(parts)))


def _in_scope(path: str, under: str) -> bool:
    return not under or path == under or path.startswith(under + "/")


def describe(path: str) -> str:
    return path or "(the watched directory itself)"


def count(n: int) -> str:
    return f"{n} director{'y' if n == 1 else 'ies'}"


class UnreadableDirs:
    """The unreadable directories known now, updated by each scan of the tree or a part."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known = set(known)

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def update(self, found: Iterable[str], under: str = "") -> tuple[list[str], list[str]]:
        """A scan of ``under`` found these unreadable dirs: replace what was known there.
        Returns (dirs newly unreadable, dirs readable again), sorted."""
        found = set(found)
        before = {d for d in self._known if _in_scope(d, under)}
        self._known = (self._known - before) | found
        return sorted(found - before), sorted(before - found)

    def add(self, dirs: Iterable[str]) -> None:
        self._known = self._known | set(dirs)  # a new set: readers in other threads

    def concerns(self, directory: str) -> bool:
        """Whether ``directory`` is, holds or lies in a known unreadable dir: a change of its
        permissions may change what a scan can see."""
        return within(directory, self._known) or any(_in_scope(d, directory) for d in self._known)


def report(new: Iterable[str], readable: Iterable[str]) -> None:
    for path in new:
        log.warning(
            "cannot read directory %s (permission denied): its files are not stored until it "
            "is readable", describe(path)
        )  # fmt: skip
    for path in readable:
        log.info("directory %s is readable again: storing its files", describe(path))


def load(catalog: Catalog) -> list[str]:
    """The unreadable dirs the last agent scan or push recorded."""
    raw = catalog.get_meta(META_KEY)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return sorted(p for p in value if isinstance(p, str)) if isinstance(value, list) else []


def save(catalog: Catalog, dirs: Iterable[str]) -> None:
    # ensure_ascii keeps undecodable names (surrogate escapes) storable as SQLite text.
    catalog.set_meta(META_KEY, json.dumps(sorted(dirs), ensure_ascii=True))
