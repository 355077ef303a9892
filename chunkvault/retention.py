"""Which file versions `gc` keeps. Pure: :mod:`chunkvault.gc` does the I/O.

Per path, versions oldest first (``retention`` in docs/config.md):

- a file whose newest version is a tombstone older than ``deleted_days`` is gone: every
  version goes, the tombstone too (nothing is left to ``restore --deleted``);
- otherwise the newest version always stays (the file as it is, or its tombstone, so
  ``ls --deleted`` still shows it), and with ``versions: N`` so do the newest N versions
  that have content (a deleted file keeps the N it had, for ``restore --deleted``);
  older content versions go, and so does every tombstone older than the oldest content
  version kept (it says when a version no longer kept was deleted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chunkvault.catalog import VersionRow

NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class Policy:
    deleted_days: float
    versions: int | None = None  # None keeps every version


def expired(versions: Iterable[VersionRow], policy: Policy, now_ns: int) -> list[VersionRow]:
    """The versions ``policy`` no longer keeps at ``now_ns``, of any number of paths."""
    by_path: dict[str, list[VersionRow]] = {}
    for version in versions:
        by_path.setdefault(version.path, []).append(version)
    dropped: list[VersionRow] = []
    for rows in by_path.values():
        dropped += _expired_of_path(rows, policy, now_ns)
    return dropped


def _expired_of_path(rows: list[VersionRow], policy: Policy, now_ns: int) -> list[VersionRow]:
    rows = sorted(rows, key=lambda v: v.created_ns)  # ties keep the catalog's order
    newest = rows[-1]
    if newest.deleted and newest.created_ns <= now_ns - policy.deleted_days * NS_PER_DAY:
        return rows
    if policy.versions is None:
        return []
    content = [v for v in rows if not v.deleted]
    kept = {id(v) for v in content[-policy.versions :]} | {id(newest)}
    oldest_kept = min((v.created_ns for v in rows if id(v) in kept), default=newest.created_ns)
    return [v for v in rows if id(v) not in kept and (not v.deleted or v.created_ns < oldest_kept)]
