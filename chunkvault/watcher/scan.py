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


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    mode: int


def scan_tree(root: Path, ignored: Callable[[str], bool], under: str = "") -> dict[str, FileState]:
    """Regular files under ``root/under`` (symlinks are not followed), minus ignored ones."""
    found: dict[str, FileState] = {}
    start = root / under if under else root

    def on_error(exc: OSError) -> None:  # a directory vanished mid-walk: skip it
        return None

    for dirpath, _dirs, files in os.walk(start, onerror=on_error):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = Path(full).relative_to(root).as_posix()
            if ignored(rel):
                continue
            try:
                st = os.stat(full, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = FileState(st.st_size, st.st_mtime_ns, st.st_mode)
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
