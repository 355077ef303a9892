"""Chunks staged by ``PUT /chunks/{id}`` until a ``POST /upload`` names them: one file per
client id under ``<state_dir>/staging``, written atomically, removed once stored."""

from __future__ import annotations

import re
from pathlib import Path

from chunkvault.fsutil import atomic_write

CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class Staging:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, client_id: str) -> Path:
        # The pattern allows "." and "..": prefix every name so none is special.
        if not CLIENT_ID.match(client_id):
            raise ValueError(f"invalid chunk id {client_id!r}")
        return self.directory / f"c-{client_id}"

    def put(self, client_id: str, body: bytes) -> None:
        atomic_write(self._path(client_id), body)

    def get(self, client_id: str) -> bytes | None:
        try:
            return self._path(client_id).read_bytes()
        except FileNotFoundError:
            return None

    def discard(self, client_id: str) -> None:
        self._path(client_id).unlink(missing_ok=True)
