"""The agent's Prometheus metrics as `GET /metrics` serves them (chunkvault.metrics)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from chunkvault.agent import Agent
from chunkvault.api.app import create_app
from chunkvault.api.vaultbackend import VaultBackend
from chunkvault.backends.stack import build_peers
from chunkvault.catalog import ChunkRow, PackRow
from chunkvault.config import parse_config
from chunkvault.crypto.material import MasterKeys
from chunkvault.metrics import AgentMetrics
from chunkvault.peerset import place
from chunkvault.vault import Vault

TOKEN = "metrics-token"


def open_vault(tmp_path: Path) -> Vault:
    config = parse_config(
        {
            "vault": {"id": "t", "state_dir": str(tmp_path / "state")},
            "watch": {"path": str(tmp_path)},
            "peers": [{"name": f"d{i}", "path": str(tmp_path / f"d{i}")} for i in range(2)],
        }
    )
    peers = build_peers(config)
    for peer in peers:
        peer.create_container()
    return Vault(config, place(config, peers), MasterKeys.generate(os.urandom(16)))


def gauge(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


def test_the_packs_gauge_counts_what_the_catalog_records(tmp_path):
    vault = open_vault(tmp_path)
    agent = Agent(vault)
    try:
        registry = CollectorRegistry()
        AgentMetrics(registry, agent)
        app = create_app(VaultBackend(vault, agent), TOKEN, registry=registry)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with TestClient(app) as client:
            assert gauge(client.get("/metrics", headers=auth).text, "chunkvault_packs") == 0
            chunks = [ChunkRow(f"{i:064x}", 10, 40, b"\x01" * 60, 1, "", None, i * 40)
                      for i in range(3)]  # fmt: skip
            vault.catalog.record_pack(PackRow("a" * 64, 125, "0" * 64), chunks, ["d0", "d1"])
            vault.catalog.record_pack(PackRow("b" * 64, 45, "0" * 64), chunks[:1], ["d0"])
            assert gauge(client.get("/metrics", headers=auth).text, "chunkvault_packs") == 2
    finally:
        agent.stop()
        vault.close()
