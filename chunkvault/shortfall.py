"""Objects written to fewer peers than they were meant for (a peer was down or refused the
write, and ``min_replicas`` let the write count): noted in the catalog as it happens, so
the agent's background repair (:mod:`chunkvault.healing`) knows what to top up, and to
how many copies (a flow's ``replicas`` is the target, not always the vault's).

    short:<object key> = {"target": N, "peers": [peers written]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from chunkvault.catalog import Catalog

SHORT = "short:"


@dataclass(frozen=True)
class Shortfall:
    key: str  # the object key
    target: int
    peers: tuple[str, ...]  # written when noted (batches; chunks and packs: see the catalog)


def note(catalog: Catalog, key: str, target: int, written: Sequence[str]) -> None:
    catalog.set_meta(SHORT + key, json.dumps({"target": target, "peers": list(written)}))


def clear(catalog: Catalog, key: str) -> None:
    catalog.delete_meta(SHORT + key)


def noted(catalog: Catalog) -> list[Shortfall]:
    found = []
    for key, value in catalog.meta_with_prefix(SHORT).items():
        try:
            data = json.loads(value)
            found.append(Shortfall(key[len(SHORT) :], int(data["target"]),
                                   tuple(str(p) for p in data["peers"])))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            catalog.delete_meta(key)  # (our own record: an unreadable one is dropped)
    return found
