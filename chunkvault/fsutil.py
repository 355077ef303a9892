"""Durable local file writes: temp file in the same directory, fsync, rename, fsync dir.

A reader (or a crash) sees the old file or the new one, never a torn mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp_durably(
    directory: str | Path, data: bytes, mode: int | None = None
) -> tuple[str, os.stat_result]:
    """Write ``data`` to a new fsynced temp file (``.tmp-*``) in ``directory``."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return tmp, os.fstat(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = write_temp_durably(path.parent, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(path.parent)
