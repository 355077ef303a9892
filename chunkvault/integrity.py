"""What `check` concludes from what it found: the problems, each once, with the files it
affects. Pure: :mod:`chunkvault.check` does the listing and reading.

An object (chunk, pack, manifest batch, per-file manifest) should sit on R peers. Compared
with what the peers that could be listed hold:

- on none of them: **lost** (when every peer was listed; else **unseen**: it may be on a
  peer that could not be listed);
- on fewer than R: **under-replicated** (saying which recorded copies are gone);
- on R or more, but the catalog records a copy on a listed peer that does not hold it:
  **missing**;
- a replica that was read and does not authenticate: **damaged** (``--read-data``);
- a batch or manifest that no holder serves readable: **unreadable**.

An erasure-coded object (chunk object or pack, ``k + m`` shares) counts distinct share
indices instead of copies: fewer than ``k`` is **lost** (nothing can rebuild it), fewer
than ``k + m`` **under-replicated**, and a share that does not fit the object rebuilt from
the others is **damaged**.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from chunkvault.erasure import Scheme

#: Files named in a problem's line; the rest are counted.
SHOWN_FILES = 5


@dataclass(frozen=True)
class Problem:
    kind: str  # lost, unseen, under-replicated, missing, damaged, unrebuildable, unreadable,
    # keyring, peer
    subject: str  # "pack 1a2b3c4d5e6f7a8b", "peer p1", "keyring on peer p2"
    detail: str
    files: tuple[str, ...] = ()


@dataclass
class Holdings:
    """One object: where it should be and where it was found."""

    kind: str  # chunk, pack, manifest batch, manifest
    name: str  # the id or object name
    files: set[str] = field(default_factory=set)  # the paths of the versions that need it
    found_on: set[str] = field(default_factory=set)  # listed peers that hold it
    recorded_on: set[str] = field(default_factory=set)  # peers the catalog says hold it
    # Erasure-coded: its scheme, and the index of the share each listed peer holds.
    scheme: Scheme | None = None
    shares: dict[str, int] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        short = self.name if self.kind.startswith("manifest") else self.name[:16]
        return f"{self.kind} {short}"


def placement_problems(
    held: Holdings, replicas: int, listed: Collection[str], every_peer_listed: bool
) -> list[Problem]:
    """What is wrong with where one object is (at most one problem: lost or unseen,
    under-replicated, or a recorded copy missing)."""
    files = tuple(sorted(held.files))
    if held.scheme is not None:
        return _share_problems(held, listed, every_peer_listed, files)
    if not held.found_on:
        kind = "lost" if every_peer_listed else "unseen"
        detail = "on no peer" if every_peer_listed else "on no peer that could be listed"
        return [Problem(kind, held.subject, detail, files)]
    missing = sorted(p for p in held.recorded_on - held.found_on if p in listed)
    gone = f"recorded on {', '.join(missing)}, not there" if missing else ""
    if len(held.found_on) < replicas:
        where = f"on {len(held.found_on)} of {replicas} peers ({', '.join(sorted(held.found_on))})"
        return [Problem("under-replicated", held.subject, f"{where}; {gone}" if gone else where,
                        files)]  # fmt: skip
    if gone:
        return [Problem("missing", held.subject, gone, files)]
    return []


def _share_problems(
    held: Holdings, listed: Collection[str], every_peer_listed: bool, files: tuple[str, ...]
) -> list[Problem]:
    assert held.scheme is not None
    scheme = held.scheme
    indices = set(held.shares.values())
    where = ", ".join(f"{i} on {p}" for p, i in sorted(held.shares.items(), key=lambda x: x[1]))
    if len(indices) < scheme.data:
        kind = "lost" if every_peer_listed else "unseen"
        detail = f"{len(indices)} of its {scheme.width} shares found, {scheme.data} rebuild it"
        return [Problem(kind, held.subject, f"{detail} ({where})" if where else detail, files)]
    missing = sorted(p for p in held.recorded_on - set(held.shares) if p in listed)
    gone = f"recorded on {', '.join(missing)}, not there" if missing else ""
    if len(indices) < scheme.width:
        detail = f"{len(indices)} of {scheme.width} shares ({where})"
        return [Problem("under-replicated", held.subject, f"{detail}; {gone}" if gone else detail,
                        files)]  # fmt: skip
    if gone:
        return [Problem("missing", held.subject, gone, files)]
    return []


def describe(problem: Problem) -> str:
    """One line: what is wrong with what, and which files it affects."""
    line = f"{problem.kind}: {problem.subject}: {problem.detail}"
    if problem.files:
        shown = ", ".join(problem.files[:SHOWN_FILES])
        more = len(problem.files) - SHOWN_FILES
        line += f" (affects {len(problem.files)} file(s): {shown}"
        line += f" and {more} more)" if more > 0 else ")"
    return line


def sampled(name: str, fraction: float, seed: bytes) -> bool:
    """Whether ``--read-data-subset`` reads this object: a fraction of them, spread
    evenly, different from run to run (the seed), so repeated runs cover everything."""
    if fraction >= 1.0:
        return True
    value = int.from_bytes(hashlib.sha256(seed + name.encode()).digest()[:8], "big")
    return value < fraction * 2**64


def affected(problems: Iterable[Problem]) -> set[str]:
    return {f for p in problems for f in p.files}
