"""Objects written to fewer peers than they were meant for (a peer was down or refused the
write, and ``min_replicas`` let the write count): noted in the catalog as it happens, so
the agent's background repair (:mod:`chunkvault.healing`) knows what to top up, and to
how many copies (a flow's ``replicas`` is the target, not always the vault's).

    short:<object key> = {"target": N, "peers": [peers written], "at": seconds since epoch}

A note is taken when the write returns, before the caller records the object in the
catalog (or fails its file): an object not in the catalog yet is not healed, and its note
is dropped only once it is older than :data:`SETTLE` (its file failed: nothing to heal).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from chunkvault.catalog import Catalog

SHORT = "short:"
#: How long a note may wait for its object to reach the catalog.
SETTLE = 3600.0


@dataclass(frozen=True)
class Shortfall:
    key: str  # the object key
    target: int
    peers: tuple[str, ...]  # written when noted (batches; chunks and packs: see the catalog)
    at: float  # when noted

    def settled(self, now: float) -> bool:
        """Old enough that an object still not in the catalog never will be."""
        return now - self.at > SETTLE


def note(catalog: Catalog, key: str, target: int, written: Sequence[str]) -> None:
    catalog.set_meta(
        SHORT + key,
        json.dumps({"target": target, "peers": list(written), "at": round(time.time(), 3)}),
    )


def clear(catalog: Catalog, key: str) -> None:
    catalog.delete_meta(SHORT + key)


def noted(catalog: Catalog) -> list[Shortfall]:
    found = []
    for key, value in catalog.meta_with_prefix(SHORT).items():
        try:
            data = json.loads(value)
            found.append(Shortfall(key[len(SHORT) :], int(data["target"]),
                                   tuple(str(p) for p in data["peers"]),
                                   float(data.get("at", 0))))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            catalog.delete_meta(key)  # (our own record: an unreadable one is dropped)
    return found
