"""Storage peers: the contract, the backends, and the wrappers that compose them.

Use :func:`build_peers` / :func:`build_peer`; they return ``HealthPeer(RetryPeer(
LimitPeer(backend)))`` (see ``stack.py`` for why in that order).

Names are resolved lazily (PEP 562) so that importing the error classes does not import
boto3: commands that never talk to a peer start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_MAX_GET": "base",
    "MAX_LISTING": "base",
    "METADATA_LIMIT": "base",
    "MalformedReply": "base",
    "NotFound": "base",
    "ObjectInfo": "base",
    "Peer": "base",
    "PeerDown": "base",
    "PeerError": "base",
    "PermanentError": "base",
    "TransientError": "base",
    "validate_key": "base",
    "validate_max_size": "base",
    "validate_metadata": "base",
    "validate_prefix": "base",
    "validate_range": "base",
    "FilesystemPeer": "filesystem",
    "HealthPeer": "health",
    "LimitPeer": "limit",
    "MemoryPeer": "memory",
    "RetryPeer": "retry",
    "S3Peer": "s3",
    "WrappingPeer": "wrapper",
    "checked_listing": "listing",
    "build_peer": "stack",
    "build_peers": "stack",
    "open_backend": "stack",
    "wrap_peer": "stack",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return __all__
