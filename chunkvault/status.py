"""What `status`, `GET /status` and the metrics report: peers, queue, replication."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chunkvault.catalog.jobs import JobQueue
from chunkvault.draining import rebalance_progress
from chunkvault.names import json_fields
from chunkvault.peerhealth import PROBE_MAX_AGE, PROBE_WAIT, check_peers, peer_row
from chunkvault.vault import Vault
from chunkvault.watcher import unreadable

MAX_LISTED = 50  # unreadable dirs named in a status (the count is exact)


@dataclass
class Status:
    peers: list[dict[str, Any]] = field(default_factory=list)  # name, up, last_error, ...
    queue_depth: int = 0
    in_flight: int = 0
    under_replicated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def peer_rows(vault: Vault) -> list[dict[str, Any]]:
    """One row per peer (:func:`chunkvault.peerhealth.peer_row`) with the chunks the
    catalog records there."""
    counts = vault.catalog.replica_counts()
    return [peer_row(placed) | {"chunks": counts.get(placed.name, 0)} for placed in vault.peers]


def vault_status(
    vault: Vault,
    in_flight: int = 0,
    last_errors: Sequence[str] = (),
    probe_max_age: float = PROBE_MAX_AGE,
    probe_budget: float | None = PROBE_WAIT,
) -> Status:
    """The durable queue lives in the catalog, so this is right from the CLI too. Peers
    whose health is older than ``probe_max_age`` are probed first, waiting at most
    ``probe_budget`` seconds (the CLI passes 0 and None: every peer, to the end)."""
    catalog = vault.catalog
    check_peers(vault.peers, probe_max_age, probe_budget)
    peers = peer_rows(vault)
    # Pieces per data object: copies, or an erasure-coded object's shares.
    scheme = vault.config.replication.scheme
    target = scheme.width if scheme is not None else vault.config.replication.replicas
    jobs = JobQueue(catalog)
    failing = [  # a name need not be UTF-8: json_fields keeps the JSON valid and lossless
        {**json_fields(j.path), "attempts": j.attempts, "error": j.last_error}
        for j in jobs.failing()
    ]
    pending = [
        {
            **json_fields(j.path),
            "kind": j.kind,
            "attempts": j.attempts,
            "waiting_s": round(time.time() - j.first_seen, 1),
        }
        for j in jobs.pending()
    ]
    blocked = unreadable.load(catalog)  # as the agent's (or push's) last scan found them
    return Status(
        peers=peers,
        queue_depth=jobs.depth(),
        in_flight=in_flight,
        # Replicas on peers that are not up now do not count: what is really below R.
        under_replicated=catalog.under_replicated(
            target, on_peers=[p["name"] for p in peers if p["up"]]
        ),
        extra={
            "vault": vault.config.vault.id,
            "chunks": catalog.chunk_count(),
            "packs": catalog.pack_count(),  # objects holding small chunks (some of `chunks`)
            "files": sum(1 for v in catalog.latest_all() if not v.deleted),
            "replicas_target": target,
            "pending": pending,
            "failing": failing,
            "last_errors": list(last_errors),
            "rebalance": rebalance_progress(catalog),
            "unreadable_dirs": len(blocked),
            "unreadable": blocked[:MAX_LISTED],
        },
    )
