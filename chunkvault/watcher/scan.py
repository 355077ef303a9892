"""Full scans: what is in the tree now, and how it differs from the catalog.

Used at startup (changes made while the agent was down), every ``rescan_seconds`` (events
inotify missed: bind mounts, network filesystems, overflows) and as the whole mechanism of
``watch.mode: poll``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from chunkvault.catalog import VersionRow
from chunkvault.fsutil import open_dir, open_subdir
from chunkvault.watcher.unreadable import within


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    mode: int


def listable(rel: str, dir_fd: int) -> bool:
    """Whether we may list the directory ``rel`` (relative to ``dir_fd``) and stat what is in
    it: read and search permission, as the kernel decides it (root may, whatever the mode)."""
    return os.access(
        rel, os.R_OK | os.X_OK, dir_fd=dir_fd, effective_ids=True, follow_symlinks=False
    )


def blocked_at(root_fd: int, rel: str) -> str:
    """The first directory on the way from the root to ``rel`` that we may not list (the
    directory of ``rel`` if none is found: it changed meanwhile)."""
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        prefix = "/".join(parts[:depth])
        if not listable(prefix, root_fd):
            return prefix
    return "/".join(parts[:-1])


def scan_tree(
    root: Path, ignored: Callable[[str], bool], under: str = "", unreadable: set[str] | None = None
) -> dict[str, FileState]:
    """Regular files under ``root/under``, minus ignored ones. No symlink is followed, not
    even a directory swapped for one during the scan: the walk goes by directory fds
    (``os.fwalk``), starting from ``under`` opened component by component.

    A directory we may not list is skipped with everything below it and added to
    ``unreadable`` (paths relative to ``root``; "" is the root itself)."""
    found: dict[str, FileState] = {}
    blocked = unreadable if unreadable is not None else set()
    try:
        root_fd = open_dir(root)
    except PermissionError:
        blocked.add("")
        return found
    except OSError:
        return found  # the tree itself is gone: nothing in it
    try:
        top_fd = open_subdir(root_fd, under.split("/")) if under else os.dup(root_fd)
    except PermissionError:
        blocked.add(blocked_at(root_fd, under + "/."))
        return found
    except OSError:
        return found  # ``under`` is gone, or not a directory in the tree
    finally:
        os.close(root_fd)
    try:
        if not listable(".", top_fd):  # readable but not searchable: names without files
            blocked.add(under)
            return found
        # A directory vanished mid-walk (onerror): skip it.
        walk = os.fwalk(".", dir_fd=top_fd, onerror=lambda exc: None, follow_symlinks=False)
        for dirpath, dirs, files, dir_fd in walk:
            base = "/".join(p for p in (under, dirpath[2:]) if p)
            for name in [d for d in dirs if not listable(d, dir_fd)]:
                dirs.remove(name)  # topdown: fwalk does not enter it
                blocked.add(f"{base}/{name}" if base else name)
            for name in files:
                rel = f"{base}/{name}" if base else name
                if ignored(rel):
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found[rel] = FileState(st.st_size, st.st_mtime_ns, st.st_mode)
    finally:
        os.close(top_fd)
    return found


def differences(
    tree: dict[str, FileState],
    latest: Iterable[VersionRow],
    under: str = "",
    unreadable: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """(paths to store, paths gone) comparing the tree with the catalog's latest versions.
    A file below an ``unreadable`` dir is not gone: the scan could not look."""
    known = {v.path: v for v in latest if not v.deleted}
    changed = [
        path
        for path, st in sorted(tree.items())
        if (v := known.get(path)) is None
        or (v.size, v.mtime_ns, v.mode) != (st.size, st.mtime_ns, st.mode)
    ]
    prefix = under.rstrip("/") + "/" if under else ""
    gone = sorted(
        p for p in known if p not in tree and p.startswith(prefix) and not within(p, unreadable)
    )
    return changed, gone
