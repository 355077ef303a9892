"""Trees of files whose names are bytes (not UTF-8, newlines, 255 bytes long)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_bytes(root: Path) -> dict[bytes, bytes]:
    """Every regular file under ``root`` by its name as bytes, with its content."""
    top = os.fsencode(root)
    out = {}
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, top)] = f.read()
    return out


def write_tree(root: Path, tree: dict[bytes, bytes]) -> None:
    """Create every file of ``tree`` (name as bytes -> content) under ``root``."""
    for rel, data in tree.items():
        path = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(data)
