"""The agent's Prometheus metrics, registered next to the HTTP layer's on one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chunkvault.agent import Agent
from chunkvault.ingest import IngestResult

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 7200)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry, agent: Agent) -> None:
        self.files = Counter(
            "chunkvault_files_total", "Files processed, by outcome", ["action"], registry=registry
        )
        self.file_bytes = Counter(
            "chunkvault_file_bytes_total", "Plain bytes of files stored", registry=registry
        )
        self.sent_bytes = Counter(
            "chunkvault_sent_bytes_total", "Encrypted bytes written to peers", registry=registry
        )
        self.chunk_writes = Counter(
            "chunkvault_chunk_writes_total", "Chunk replicas written, by peer", ["peer"],
            registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "chunkvault_errors_total", "Errors, by kind", ["kind"], registry=registry
        )
        self.latency = Histogram(
            "chunkvault_change_to_durable_seconds",
            "From a change being seen to its version being stored on the peers",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        depth = Gauge("chunkvault_queue_depth", "Paths with pending work", registry=registry)
        depth.set_function(agent.jobs.depth)
        in_flight = Gauge("chunkvault_in_flight", "Files being processed now", registry=registry)
        in_flight.set_function(lambda: agent.stats.in_flight)
        healed = Counter(
            "chunkvault_repaired_copies_total",
            "Copies the background repair wrote for objects stored on fewer than R peers",
            registry=registry,
        )
        agent.on_healed = healed.inc
        packs = Gauge("chunkvault_packs", "Pack objects the vault holds", registry=registry)
        packs.set_function(agent.vault.catalog.pack_count)
        up = Gauge("chunkvault_peer_up", "1 if the peer is up", ["peer"], registry=registry)
        for placed in agent.vault.peers:
            up.labels(placed.name).set_function(lambda p=placed.peer: float(p.is_up))
        service = agent.vault.service
        service.on_write = lambda peer, n: self.chunk_writes.labels(peer).inc()
        service.on_write_error = lambda peer: self.errors.labels("replica_write").inc()

    def observe(self, result: IngestResult, latency: float) -> None:
        self.files.labels(result.action).inc()
        if result.action == "stored":
            self.file_bytes.inc(result.size)
            self.sent_bytes.inc(result.sent_bytes)
        if result.action in ("stored", "deleted", "moved", "purged"):
            self.latency.observe(latency)
