"""Which peers are being drained (`chunkvault peers drain`), kept in the catalog so every
writer on this machine leaves them out of new copies until `peers undrain` (or until they
are removed from the config); reads from them go on as before. And how far the last
rebalance got, for `status`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from chunkvault.catalog import Catalog
from chunkvault.peerset import PlacedPeer

DRAINING = "draining_peers"
#: The last rebalance's (or drain's) progress, for `status` (chunkvault.rebalance).
PROGRESS = "rebalance"


def draining(catalog: Catalog) -> set[str]:
    text = catalog.get_meta(DRAINING)
    try:
        names = json.loads(text) if text else []
    except ValueError:
        names = []  # (our own record; unreadable means none)
    return {str(n) for n in names} if isinstance(names, list) else set()


def set_draining(catalog: Catalog, names: Iterable[str]) -> None:
    catalog.set_meta(DRAINING, json.dumps(sorted(set(names))))


def marked(peers: Sequence[PlacedPeer], names: set[str]) -> list[PlacedPeer]:
    """``peers`` with ``draining`` set for those named."""
    return [replace(p, draining=p.name in names) for p in peers]


def rebalance_progress(catalog: Catalog) -> dict[str, Any] | None:
    """The last rebalance's progress (state, objects, done, draining, updated), or None."""
    text = catalog.get_meta(PROGRESS)
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
