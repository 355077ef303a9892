"""Full scans: what is in the tree now, and how it differs from the catalog.

Used at startup (changes made while the agent was down), every ``rescan_seconds`` (events
inotify missed: bind mounts, network filesystems, overflows) and as the whole mechanism of
``watch.mode: poll``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from chunkvault.catalog import VersionRow
from chunkvault.fsutil import open_dir, open_subdir


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    mode: int


def scan_tree(root: Path, ignored: Callable[[str], bool], under: str = "") -> dict[str, FileState]:
    """Regular files under ``root/under``, minus ignored ones. No symlink is followed, not
    even a directory swapped for one during the scan: the walk goes by directory fds
    (``os.fwalk``), starting from ``under`` opened component by component."""
    found: dict[str, FileState] = {}
    try:
        root_fd = open_dir(root)
    except OSError:
        return found  # the tree itself is gone: nothing in it
    try:
        top_fd = open_subdir(root_fd, under.split("/")) if under else os.dup(root_fd)
    except OSError:
        return found  # ``under`` is gone, or not a directory in the tree
    finally:
        os.close(root_fd)
    try:
        # A directory vanished mid-walk (onerror): skip it.
        walk = os.fwalk(".", dir_fd=top_fd, onerror=lambda exc: None, follow_symlinks=False)
        for dirpath, _dirs, files, dir_fd in walk:
            base = "/".join(p for p in (under, dirpath[2:]) if p)
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
    tree: dict[str, FileState], latest: Iterable[VersionRow], under: str = ""
) -> tuple[list[str], list[str]]:
    """(paths to store, paths gone) comparing the tree with the catalog's latest versions."""
    known = {v.path: v for v in latest if not v.deleted}
    changed = [
        path
        for path, st in sorted(tree.items())
        if (v := known.get(path)) is None
        or (v.size, v.mtime_ns, v.mode) != (st.size, st.mtime_ns, st.mode)
    ]
    prefix = under.rstrip("/") + "/" if under else ""
    gone = sorted(p for p in known if p not in tree and p.startswith(prefix))
    return changed, gone
