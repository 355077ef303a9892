"""File manifests: one encrypted manifest per file version, stored on R peers.

A manifest holds everything needed to restore one version without the local catalog:
path, size, mtime, mode, plaintext SHA-256, and the ordered chunk list with sizes and
wrapped DEKs. Object names are opaque:

    <vault>/manifests/<path key>/<version key>
    path key    = first 32 hex of HMAC-SHA256(id_key, b"path\\0" + the path's bytes)
    version key = <created ns, 20 digits, whole seconds>-<8 random hex>   (sorts by time)

so a peer learns how many versions a file has, never its name. :func:`parse_manifest_name`
accepts exactly this shape; anything else a peer lists under ``manifests/`` is not ours and
is skipped (one warning per peer per listing).

Size cap: a sealed manifest takes about 110 bytes per chunk (JSON ~170 bytes, zstd, AES-GCM),
so :data:`MAX_MANIFEST_BYTES` (64 MiB) holds ~600k chunks: a 1.2 TiB file at the default
2 MiB average chunk size, 2.4 TiB at 4 MiB. Reads never take more from a peer; writes refuse
a manifest over it (or over :data:`MAX_MANIFEST_JSON` before compression), so nothing is
stored that could not be read back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from chunkvault import names
from chunkvault.backends.base import MalformedReply, NotFound, PeerError
from chunkvault.backends.listing import show_key
from chunkvault.backends.warn_once import WarnOnce
from chunkvault.crypto.envelope import (
    EnvelopeError,
    open_blob,
    rewrap_dek,
    seal_blob,
    wrapped_generation,
)
from chunkvault.crypto.material import MasterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import rank

log = logging.getLogger(__name__)
#: Written for every manifest whose path is UTF-8 (``"path"``), so older versions read them.
FORMAT_VERSION = 1
#: Written only when the path's bytes are not UTF-8: ``"path_b64"`` holds them instead.
FORMAT_RAW_PATH = 2
KIND = "manifest"
MiB = 1024 * 1024
#: Largest sealed manifest read from or written to a peer (see the module docstring).
MAX_MANIFEST_BYTES = 64 * MiB
#: Largest manifest JSON (before zstd) written or opened.
MAX_MANIFEST_JSON = 256 * MiB
# Used with fullmatch: "$" alone would also accept a trailing newline.
_NAME_TAIL = re.compile(r"(?P<path_key>[0-9a-f]{32})/(?P<created_ns>[0-9]{20})-[0-9a-f]{8}")
_CHUNK_ID = re.compile(r"[0-9a-f]{64}")
_INT64 = (-(2**63), 2**63 - 1)  # what SQLite (the catalog) can hold


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
        path: dict[str, Any] = (
            {"v": FORMAT_VERSION, "path": self.path}
            if names.is_utf8(self.path)
            else {"v": FORMAT_RAW_PATH, "path_b64": names.b64(self.path)}
        )
        return json.dumps(
            {
                **path,
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
        """Parse and check every field; raises only :class:`ManifestError`. (Manifests are
        authenticated, so a bad one is our bug or a broken key, never a peer's craft, but
        nothing in one may crash a reader either.)"""
        try:
            obj: dict[str, Any] = json.loads(data)
            if obj["v"] not in (FORMAT_VERSION, FORMAT_RAW_PATH) or isinstance(obj["v"], bool):
                raise ManifestError(
                    f"manifest format {obj['v']!r} is not supported",
                    "a newer chunkvault wrote it: upgrade chunkvault",
                )
            return cls(
                path=_path(obj),
                size=_int(obj, "size", 0),
                mtime_ns=_int(obj, "mtime_ns"),
                mode=_int(obj, "mode", 0),
                sha256=_field(obj, "sha256", str),
                deleted=_field(obj, "deleted", bool),
                created_ns=_int(obj, "created_ns"),
                chunks=tuple(_chunk_ref(entry) for entry in _field(obj, "chunks", list)),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise ManifestError(f"manifest does not parse: {exc!r}") from None

    def rewrapped(self, keys: MasterKeys, generation: int) -> Manifest:
        chunks = tuple(
            replace(c, wrapped_dek=rewrap_dek(keys, c.id, c.wrapped_dek, generation))
            for c in self.chunks
        )
        return replace(self, chunks=chunks)


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ManifestError(f"manifest field {name} is not a {kind.__name__}")
    return value


def _path(obj: dict[str, Any]) -> str:
    """Format 1 has ``path``; format 2 has ``path`` or, for a name that is not UTF-8,
    ``path_b64`` (its bytes), never both."""
    if obj["v"] == FORMAT_VERSION or "path_b64" not in obj:
        return str(_field(obj, "path", str))
    if "path" in obj:
        raise ManifestError("manifest has both path and path_b64")
    try:
        return names.from_b64(_field(obj, "path_b64", str))
    except ValueError:
        raise ManifestError("manifest field path_b64 is not base64") from None


def _int(obj: dict[str, Any], name: str, minimum: int = _INT64[0]) -> int:
    value = _field(obj, name, int)
    if not minimum <= value <= _INT64[1]:
        raise ManifestError(f"manifest field {name} is out of range")
    return int(value)


def _chunk_ref(entry: Any) -> ChunkRef:
    chunk_id, size, dek = entry
    if not isinstance(chunk_id, str) or not _CHUNK_ID.fullmatch(chunk_id):
        raise ManifestError(f"manifest holds a bad chunk id {str(chunk_id)[:70]!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _INT64[1]:
        raise ManifestError(f"manifest holds a bad chunk size for {chunk_id[:16]}")
    wrapped = base64.b64decode(dek, validate=True)
    try:
        wrapped_generation(wrapped)  # the shape of a wrapped data key
    except EnvelopeError as exc:
        raise ManifestError(f"manifest chunk {chunk_id[:16]}: {exc}") from None
    return ChunkRef(chunk_id, size, wrapped)


def path_key(keys: MasterKeys, path: str) -> str:
    """Over the path's bytes: a UTF-8 name keeps the key it always had."""
    return hmac.new(keys.id_key, b"path\0" + names.raw(path), hashlib.sha256).hexdigest()[:32]


def manifests_prefix(vault_id: str) -> str:
    return f"{vault_id}/manifests/"


def new_manifest_name(vault_id: str, keys: MasterKeys, manifest: Manifest) -> str:
    # Whole seconds (S3's own LastModified resolution): the name keeps sorting by time
    # but carries no finer timing to peers that copy it later (docs/format.md).
    version = f"{manifest.created_ns // 10**9 * 10**9:020d}-{os.urandom(4).hex()}"
    return f"{manifests_prefix(vault_id)}{path_key(keys, manifest.path)}/{version}"


@dataclass(frozen=True)
class ManifestName:
    """The parts of a manifest's object name (what a peer can see of a version)."""

    name: str
    path_key: str
    created_ns: int


def parse_manifest_name(vault_id: str, key: str) -> ManifestName | None:
    """The parts of ``key`` if it is exactly a manifest name of this vault, else None."""
    prefix = manifests_prefix(vault_id)
    if not key.startswith(prefix):
        return None
    match = _NAME_TAIL.fullmatch(key[len(prefix) :])
    if match is None:
        return None
    return ManifestName(key, match["path_key"], int(match["created_ns"]))


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
        self._warnings = WarnOnce(log)

    def _ranked(self, name: str) -> list[PlacedPeer]:
        return rank(name, self.peers)

    def seal(self, name: str, manifest: Manifest) -> bytes:
        """The sealed body; ManifestError if it would be over the size a reader accepts."""
        payload = manifest.to_json()
        fits = len(payload) <= MAX_MANIFEST_JSON
        body = seal_blob(self.keys, KIND, name, payload) if fits else b""
        if not fits or len(body) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest for {names.show(manifest.path)} ({len(manifest.chunks)} chunks) is "
                f"over the {MAX_MANIFEST_BYTES // MiB} MiB manifest limit",
                "raise chunking.avg_size and chunking.max_size so large files have fewer chunks",
            )
        return body

    def open(self, name: str, body: bytes) -> Manifest:
        """Authenticate and parse a body fetched for ``name``."""
        return Manifest.from_json(open_blob(self.keys, KIND, name, body, MAX_MANIFEST_JSON))

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
                f"manifest for {names.show(manifest.path)} stored on {len(written)} peer(s), need "
                f"{self.minimum}: {'; '.join(errors)}"
            )
        return name, written

    def read(self, name: str, holders: Sequence[str] = ()) -> Manifest:
        """From the best-ranked peer that has a good copy (``holders``, peers known to hold
        one, first). Raises only :class:`ManifestError`, whatever peers send; a peer's bad
        copy is warned about once per peer."""
        return self.fetch(name, holders)[1]

    def fetch(self, name: str, holders: Sequence[str] = ()) -> tuple[bytes, Manifest]:
        """Like :meth:`read`, with the sealed body as stored."""
        if parse_manifest_name(self.vault_id, name) is None:
            raise ManifestError(f"{name!r} is not a manifest name of vault {self.vault_id}")
        problems = []
        ranked = self._ranked(name)
        for placed in sorted(ranked, key=lambda p: p.name not in holders):
            peer = placed.peer
            try:
                body = peer.get(name, max_size=MAX_MANIFEST_BYTES)
                return body, self.open(name, body)
            except NotFound:
                continue
            except (MalformedReply, EnvelopeError, ManifestError) as exc:
                self._warnings.warn(
                    peer.name, "bad manifests", "peer %s: bad copy of %s: %s", peer.name, name, exc
                )
                problems.append(f"{peer.name}: {exc}")
            except PeerError as exc:
                problems.append(f"{peer.name}: {exc}")
        raise ManifestError(
            f"no readable copy of manifest {name}"
            + (f" ({'; '.join(problems)})" if problems else "")
        )

    def names(self, unlisted: list[str] | None = None) -> Iterator[tuple[str, list[str]]]:
        """Every manifest name on any reachable peer, with the peers holding it. A peer
        that cannot be listed (down, or its listing breaks the contract) is warned about,
        added to ``unlisted`` and left out; keys that are not manifest names are skipped,
        one warning per peer."""
        holders: dict[str, list[str]] = {}
        prefix = manifests_prefix(self.vault_id)

        def listing(placed: PlacedPeer) -> list[str]:
            found, foreign = [], None
            try:
                for info in placed.peer.list(prefix):
                    if parse_manifest_name(self.vault_id, info.key) is not None:
                        found.append(info.key)
                    elif foreign is None:
                        foreign = info.key
            except PeerError as exc:
                log.warning("cannot list manifests on %s: %s", placed.name, exc.message)
                if unlisted is not None:
                    unlisted.append(placed.name)
                return []
            if foreign is not None:
                log.warning(
                    "peer %s: skipped %s and any other object under %r that is not a "
                    "manifest name (not written by chunkvault)",
                    placed.name,
                    show_key(foreign),
                    prefix,
                )
            return found

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
