"""Test helpers around :mod:`chunkvault.localpeers` (which starts the moto_server peers)."""

from __future__ import annotations

import uuid
from typing import Any

from chunkvault.config import PeerConfig
from chunkvault.localpeers import (
    DUMMY_CREDENTIALS,
    HOST,
    MotoPeers,
    MotoServer,
    shutdown_all,
    start_servers,
)

__all__ = [
    "HOST",
    "MotoPeers",
    "MotoServer",
    "s3_peer_config",
    "shutdown_all",
    "start_servers",
    "unique_bucket",
]


def unique_bucket(prefix: str = "cv") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def s3_peer_config(endpoint: str, bucket: str, name: str = "s3", **fields: Any) -> PeerConfig:
    """A PeerConfig for a moto endpoint (moto accepts any credentials)."""
    return PeerConfig(name=name, endpoint=endpoint, bucket=bucket, **DUMMY_CREDENTIALS, **fields)
