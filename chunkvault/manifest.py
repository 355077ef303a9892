"""File manifests: one encrypted manifest per file version, stored on R peers.

A manifest holds everything needed to restore one version without the local catalog:
path, size, mtime, mode, plaintext SHA-256, and the ordered chunk list with sizes and
wrapped DEKs. Object names are opaque:

    <vault>/manifests/<path key>/<version key>
    path key    = first 32 hex of HMAC-SHA256(id_key, b"path\\0" + utf-8 path)
    version key = <created ns, 20 digits, whole seconds>-<8 random hex>   (sorts by time)

so a peer learns how many versions a file has, never its name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from chunkvault.backends.base import NotFound, PeerError
from chunkvault.crypto.envelope import EnvelopeError, open_blob, rewrap_dek, seal_blob
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import rank

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
KIND = "manifest"


class ManifestError(ChunkvaultError):
    pass


@dataclass(frozen=True)
class ChunkRef:
    id: str
    size: int
    wrapped_dek: bytes


@dataclass(frozen=True)
class Manifest:
    path: str
    size: int
    mtime_ns: int
    mode: int
    sha256: str
    chunks: tuple[ChunkRef, ...] = ()
    deleted: bool = False
    created_ns: int = field(default_factory=time.time_ns)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "v": FORMAT_VERSION,
                "path": self.path,
                "size": self.size,
                "mtime_ns": self.mtime_ns,
                "mode": self.mode,
                "sha256": self.sha256,
                "deleted": self.deleted,
                "created_ns": self.created_ns,
                "chunks": [
                    [c.id, c.size, base64.b64encode(c.wrapped_dek).decode()] for c in self.chunks
                ],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            obj: dict[str, Any] = json.loads(data)
            if obj["v"] != FORMAT_VERSION:
                raise ManifestError(f"manifest format {obj['v']} is not supported")
            return cls(
                path=str(obj["path"]),
                size=int(obj["size"]),
                mtime_ns=int(obj["mtime_ns"]),
                mode=int(obj["mode"]),
                sha256=str(obj["sha256"]),
                deleted=bool(obj["deleted"]),
                created_ns=int(obj["created_ns"]),
                chunks=tuple(
                    ChunkRef(str(i), int(s), base64.b64decode(d, validate=True))
                    for i, s, d in obj["chunks"]
                ),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"manifest does not parse: {exc}") from None

    def rewrapped(self, keys: MasterKeys, generation: int) -> Manifest:
        chunks = tuple(
            replace(c, wrapped_dek=rewrap_dek(keys, c.id, c.wrapped_dek, generation))
            for c in self.chunks
        )
        return replace(self, chunks=chunks)


def path_key(keys: MasterKeys, path: str) -> str:
    return hmac.new(keys.id_key, b"path\0" + path.encode(), hashlib.sha256).hexdigest()[:32]


def manifests_prefix(vault_id: str) -> str:
    return f"{vault_id}/manifests/"


def new_manifest_name(vault_id: str, keys: MasterKeys, manifest: Manifest) -> str:
    # Whole seconds (S3's own LastModified resolution): the name keeps sorting by time
    # but carries no finer timing to peers that copy it later (docs/format.md).
    version = f"{manifest.created_ns // 10**9 * 10**9:020d}-{os.urandom(4).hex()}"
    return f"{manifests_prefix(vault_id)}{path_key(keys, manifest.path)}/{version}"


class ManifestStore:
    """Writes manifests to R peers (rendezvous-ranked on the name) and reads them back."""

    def __init__(
        self,
        vault_id: str,
        keys: MasterKeys,
        peers: Sequence[PlacedPeer],
        replicas: int,
        minimum: int,
    ) -> None:
        self.vault_id = vault_id
        self.keys = keys
        self.peers = list(peers)
        self.replicas = replicas
        self.minimum = minimum

    def _ranked(self, name: str) -> list[PlacedPeer]:
        return rank(name, self.peers)

    def seal(self, name: str, manifest: Manifest) -> bytes:
        return seal_blob(self.keys, KIND, name, manifest.to_json())

    def write(self, manifest: Manifest, name: str | None = None) -> tuple[str, list[str]]:
        """Store on up to R peers, walking down the ranking past failures. Raises
        ManifestError if fewer than min_replicas copies were written."""
        name = name or new_manifest_name(self.vault_id, self.keys, manifest)
        body = self.seal(name, manifest)
        written: list[str] = []
        errors: list[str] = []
        for placed in self._ranked(name):
            if len(written) >= self.replicas:
                break
            peer = placed.peer
            try:
                peer.put(name, body)
                written.append(peer.name)
            except PeerError as exc:
                errors.append(f"{peer.name}: {exc.message}")
        if len(written) < self.minimum:
            raise ManifestError(
                f"manifest for {manifest.path} stored on {len(written)} peer(s), need "
                f"{self.minimum}: {'; '.join(errors)}"
            )
        return name, written

    def read(self, name: str) -> Manifest:
        """From the best-ranked peer that has a good copy."""
        problems = []
        for placed in self._ranked(name):
            peer = placed.peer
            try:
                return Manifest.from_json(open_blob(self.keys, KIND, name, peer.get(name)))
            except NotFound:
                continue
            except (PeerError, EnvelopeError, ManifestError) as exc:
                problems.append(f"{peer.name}: {exc}")
        raise ManifestError(
            f"no readable copy of manifest {name}"
            + (f" ({'; '.join(problems)})" if problems else "")
        )

    def names(self) -> Iterator[tuple[str, list[str]]]:
        """Every manifest name on any reachable peer, with the peers holding it."""
        holders: dict[str, list[str]] = {}

        def listing(placed: PlacedPeer) -> list[str]:
            try:
                return [i.key for i in placed.peer.list(manifests_prefix(self.vault_id))]
            except PeerError as exc:
                log.warning("cannot list manifests on %s: %s", placed.name, exc.message)
                return []

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            for peer, keys in zip(self.peers, pool.map(listing, self.peers), strict=True):
                for key in keys:
                    holders.setdefault(key, []).append(peer.name)
        yield from sorted(holders.items())

    def delete(self, name: str) -> None:
        """Remove every copy (all peers: a copy may sit anywhere after failovers)."""
        for placed in self.peers:
            try:
                placed.peer.delete(name)
            except PeerError as exc:
                raise ManifestError(
                    f"cannot delete manifest on {placed.name}: {exc.message}"
                ) from None
