"""What a change source reports. Paths are POSIX, relative to ``watch.path``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ChangeKind = Literal["write", "closed", "delete", "move", "rescan"]


@dataclass(frozen=True)
class Change:
    """One observation about the tree.

    - ``write``: a file was created or written to (it may still be changing).
    - ``closed``: a writer closed the file (IN_CLOSE_WRITE): a strong hint it is complete.
    - ``delete``: a file or directory (``is_dir``) is gone from the tree (deleted, or moved
      out of it).
    - ``move``: a file or directory (``is_dir``) moved inside the tree from ``src`` to
      ``path``.
    - ``rescan``: events may have been lost (queue overflow): rescan ``path`` ("" = all); or
      the permissions of directory ``path`` may have changed (``is_dir``), so that a scan
      may now see more, or less, of it.
    """

    kind: ChangeKind
    path: str
    src: str | None = None
    is_dir: bool = False


ChangeSink = Callable[[Change], None]
