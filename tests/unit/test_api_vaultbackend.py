"""The real API backend over directory peers: reading API chunks back by client id."""

from __future__ import annotations

import os
from pathlib import Path

from chunkvault.api.vaultbackend import VaultBackend
from chunkvault.backends.stack import build_peers
from chunkvault.config import parse_config
from chunkvault.crypto.material import MasterKeys
from chunkvault.peerset import place
from chunkvault.vault import Vault


def open_vault(tmp_path: Path) -> Vault:
    config = parse_config(
        {
            "vault": {"id": "t", "state_dir": str(tmp_path / "state")},
            "peers": [{"name": f"d{i}", "path": str(tmp_path / f"d{i}")} for i in range(2)],
        }
    )
    peers = build_peers(config)
    for peer in peers:
        peer.create_container()
    return Vault(config, place(config, peers), MasterKeys.generate(os.urandom(16)))


def test_api_chunks_of_either_id_domain_read_back(tmp_path):
    vault = open_vault(tmp_path)
    try:
        backend = VaultBackend(vault)
        current = vault.service.store_chunk(b"uploaded now", keys=vault.service.api_keys)
        # Uploaded by a version before API chunks had their own id key.
        legacy = vault.service.store_chunk(b"uploaded long ago")
        assert current.chunk_id != vault.keys.chunk_id(b"uploaded now")
        vault.catalog.record_api_request(
            "r1", "c", {"chunks": []}, {"new": current.chunk_id, "old": legacy.chunk_id}
        )
        assert backend.read_chunk("new") == b"uploaded now"
        assert backend.read_chunk("old") == b"uploaded long ago"
    finally:
        vault.close()


def test_a_reused_request_id_is_a_409_that_says_it_once(tmp_path):
    from fastapi.testclient import TestClient

    from chunkvault.api.app import create_app

    vault = open_vault(tmp_path)
    auth = {"Authorization": "Bearer token-for-409"}
    try:
        with TestClient(create_app(VaultBackend(vault), "token-for-409")) as client:
            assert client.put("/chunks/c1", content=b"x" * 2048, headers=auth).status_code == 201
            first = {"chunks": [{"id": "c1", "size_in_KB": 2}], "request_id": "1234"}
            assert client.post("/upload", json=first, headers=auth).status_code == 200
            other = {"chunks": [{"id": "c1", "size_in_KB": 3}], "request_id": "1234"}
            r = client.post("/upload", json=other, headers=auth)
        assert r.status_code == 409
        assert r.json() == {"error": "request_id already used with another body: 1234"}
    finally:
        vault.close()
