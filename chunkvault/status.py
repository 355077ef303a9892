"""What `status`, `GET /status` and the metrics report: peers, queue, replication."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chunkvault.catalog.jobs import JobQueue
from chunkvault.names import json_fields
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
    counts = vault.catalog.replica_counts()
    rows = []
    for placed in vault.peers:
        peer = placed.peer
        rows.append(
            {
                "name": peer.name,
                "kind": peer.kind,
                "location": peer.location,
                "weight": placed.weight,
                "zone": placed.zone,
                "up": peer.is_up,
                "consecutive_failures": peer.consecutive_failures,
                "last_error": peer.last_error,
                "latency_ms": None
                if peer.last_latency is None
                else round(peer.last_latency * 1000, 1),
                "chunks": counts.get(peer.name, 0),
            }
        )
    return rows


def vault_status(vault: Vault, in_flight: int = 0, last_errors: Sequence[str] = ()) -> Status:
    """The durable queue lives in the catalog, so this is right from the CLI too."""
    catalog = vault.catalog
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
        peers=peer_rows(vault),
        queue_depth=jobs.depth(),
        in_flight=in_flight,
        under_replicated=catalog.under_replicated(vault.config.replication.replicas),
        extra={
            "vault": vault.config.vault.id,
            "chunks": catalog.chunk_count(),
            "files": sum(1 for v in catalog.latest_all() if not v.deleted),
            "replicas_target": vault.config.replication.replicas,
            "pending": pending,
            "failing": failing,
            "last_errors": list(last_errors),
            "unreadable_dirs": len(blocked),
            "unreadable": blocked[:MAX_LISTED],
        },
    )
