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

Chunk locations: a chunk is either its own object (``[id, size, dek]``) or a sealed body
inside a pack object (``[id, size, dek, pack id, offset, length]``). Only manifest batches
(``journal.py``) hold packed chunks; a per-file manifest object never does (old vaults'
manifests are read as they always were, and one holding a packed ref is refused).

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
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from chunkvault import names
from chunkvault.backends.base import MalformedReply, NotFound, Peer, PeerError
from chunkvault.backends.listing import show_key
from chunkvault.backends.warn_once import WarnOnce
from chunkvault.crypto.envelope import (
    EnvelopeError,
    open_blob,
    rewrap_dek,
    seal_blob,
    sealed_size_limit,
    wrapped_generation,
)
from chunkvault.crypto.material import SEALED_GENERATION, MasterKeys
from chunkvault.crypto.writer_blob import UntrustedWriter
from chunkvault.errors import ChunkvaultError
from chunkvault.peerset import PlacedPeer
from chunkvault.placement import choose, rank

log = logging.getLogger(__name__)
T = TypeVar("T")
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
_WRITER_ID = re.compile(r"[0-9a-f]{8}")
_PACK_ID = _CHUNK_ID  # 64 random lower-case hex (packs.py)
#: Under ``manifests/``: where manifest batches live (journal.py), never a path key (hex).
BATCH_DIR = "batch/"
_INT64 = (-(2**63), 2**63 - 1)  # what SQLite (the catalog) can hold


class ManifestError(ChunkvaultError):
    pass


class RefusedBlob(ManifestError):
    """Every copy is a writer blob of a writer the keyring does not trust (revoked before
    the date it gives, or unknown): refused by the owner's decision, not damaged."""


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of a file: its id, plaintext size and wrapped DEK, and where its sealed
    body is: its own chunk object (``pack`` None), or ``length`` bytes at ``offset`` in the
    pack object ``pack``."""

    id: str
    size: int
    wrapped_dek: bytes
    pack: str | None = None
    offset: int = 0
    length: int = 0

    @property
    def packed(self) -> bool:
        return self.pack is not None

    def to_obj(self) -> list[Any]:
        dek = base64.b64encode(self.wrapped_dek).decode()
        if self.pack is None:
            return [self.id, self.size, dek]
        # A writer refuses what a reader would: nothing is stored that cannot be read back.
        _check_location(self.id, self.size, self.pack, self.offset, self.length)
        return [self.id, self.size, dek, self.pack, self.offset, self.length]


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
    # The write-only host (its writer id) that stored this version; None: the owner.
    writer: str | None = None

    def to_obj(self) -> dict[str, Any]:
        """The manifest's fields as JSON values (what a manifest object and a batch entry
        hold). Format 1 (``path``) whenever the path is UTF-8, 2 (``path_b64``) otherwise."""
        path: dict[str, Any] = (
            {"v": FORMAT_VERSION, "path": self.path}
            if names.is_utf8(self.path)
            else {"v": FORMAT_RAW_PATH, "path_b64": names.b64(self.path)}
        )
        return {
            **path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "mode": self.mode,
            "sha256": self.sha256,
            "deleted": self.deleted,
            "created_ns": self.created_ns,
            "chunks": [c.to_obj() for c in self.chunks],
            **({"writer": self.writer} if self.writer is not None else {}),
        }

    def to_json(self) -> bytes:
        """A per-file manifest object's JSON (byte for byte what older versions wrote).
        ManifestError if a chunk is packed: no reader of manifest objects accepts that."""
        if any(c.packed for c in self.chunks):
            raise ManifestError(
                f"manifest for {names.show(self.path)} holds packed chunks: only a manifest "
                "batch can hold them"
            )
        return json.dumps(self.to_obj(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest object (formats 1 and 2: never a packed chunk); raises only
        :class:`ManifestError`. (Manifests are authenticated, so a bad one is our bug or a
        broken key, never a peer's craft, but nothing in one may crash a reader either.)"""
        try:
            obj = json.loads(data)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ManifestError(f"manifest does not parse: {exc!r}") from None
        return cls.from_obj(obj, allow_packed=False)

    @classmethod
    def from_obj(cls, obj: Any, allow_packed: bool) -> Manifest:
        """Check every field of a parsed manifest (an object's, or a batch entry's with
        ``allow_packed``); raises only :class:`ManifestError`."""
        try:
            if not isinstance(obj, dict):
                raise ManifestError("manifest is not a JSON object")
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
                chunks=tuple(
                    _chunk_ref(entry, allow_packed) for entry in _field(obj, "chunks", list)
                ),
                writer=_writer(obj),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise ManifestError(f"manifest does not parse: {exc!r}") from None

    def rewrapped(self, keys: MasterKeys, generation: int) -> Manifest:
        """Every data key wrapped by KEK[``generation``]; one sealed to the vault key
        (a write-only host's) stays as it is: no KEK is involved."""
        chunks = tuple(
            c if wrapped_generation(c.wrapped_dek) in (generation, SEALED_GENERATION)
            else replace(c, wrapped_dek=rewrap_dek(keys, c.id, c.wrapped_dek, generation))
            for c in self.chunks
        )  # fmt: skip
        return replace(self, chunks=chunks)


def _writer(obj: dict[str, Any]) -> str | None:
    writer = obj.get("writer")
    if writer is None:
        return None
    if not isinstance(writer, str) or not _WRITER_ID.fullmatch(writer):
        raise ManifestError(f"manifest: bad writer {str(writer)[:20]!r}")
    return writer


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


def _chunk_ref(entry: Any, allow_packed: bool) -> ChunkRef:
    if not isinstance(entry, list) or len(entry) not in ((3, 6) if allow_packed else (3,)):
        raise ManifestError(
            f"manifest holds a bad chunk entry of {len(entry) if isinstance(entry, list) else 0}"
            " fields" + ("" if allow_packed else " (a manifest object holds no packed chunk)")
        )
    chunk_id, size, dek = entry[:3]
    if not isinstance(chunk_id, str) or not _CHUNK_ID.fullmatch(chunk_id):
        raise ManifestError(f"manifest holds a bad chunk id {str(chunk_id)[:70]!r}")
    if not _is_int(size) or not 0 <= size <= _INT64[1]:
        raise ManifestError(f"manifest holds a bad chunk size for {chunk_id[:16]}")
    wrapped = base64.b64decode(dek, validate=True)
    try:
        wrapped_generation(wrapped)  # the shape of a wrapped data key
    except EnvelopeError as exc:
        raise ManifestError(f"manifest chunk {chunk_id[:16]}: {exc}") from None
    if len(entry) == 3:
        return ChunkRef(chunk_id, size, wrapped)
    pack, offset, length = entry[3:]
    _check_location(chunk_id, size, pack, offset, length)
    return ChunkRef(chunk_id, size, wrapped, pack, offset, length)


def _check_location(chunk_id: str, size: int, pack: Any, offset: Any, length: Any) -> None:
    if not isinstance(pack, str) or not _PACK_ID.fullmatch(pack):
        raise ManifestError(f"manifest chunk {chunk_id[:16]} names a bad pack {str(pack)[:70]!r}")
    if not _is_int(offset) or not 0 <= offset <= _INT64[1]:
        raise ManifestError(f"manifest chunk {chunk_id[:16]} has a bad pack offset")
    # A body is never longer than its plaintext can seal to: a reader caps its ranged GET.
    if not _is_int(length) or not 1 <= length <= sealed_size_limit(size):
        raise ManifestError(f"manifest chunk {chunk_id[:16]} has a bad length in its pack")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


class SealedStore(ABC, Generic[T]):
    """Sealed blobs of one kind on R peers, rendezvous-ranked on the name, read back from
    the best holder with a good copy. Subclasses say what a name is, how large a copy
    may be, and how a body opens: :class:`ManifestStore` and ``journal.JournalStore``."""

    #: In messages and warnings: "manifest", "manifest batch", and their plurals.
    noun = "object"
    nouns = "objects"

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

    # What a subclass defines.
    @abstractmethod
    def _prefix(self) -> str:
        """(See the class docstring.)"""

    @abstractmethod
    def _is_name(self, key: str) -> bool:
        """(See the class docstring.)"""

    @abstractmethod
    def _max_bytes(self) -> int:
        """(See the class docstring.)"""

    @abstractmethod
    def open(self, name: str, body: bytes) -> T:
        """(See the class docstring.)"""

    def _skipped(self, key: str) -> bool:
        """Keys under the prefix that are another store's, left out without a warning."""
        return False

    # Shared I/O.
    def _ranked(self, name: str) -> list[PlacedPeer]:
        return rank(name, self.peers)

    def _put_ranked(self, name: str, body: bytes, what: str) -> list[str]:
        """Store on up to R peers, walking down the ranking past failures. Raises
        ManifestError if fewer than ``minimum`` copies were written."""
        written: list[str] = []
        errors: list[str] = []
        # Zone-aware, as chunks are placed (the best peer of each zone first).
        for placed in choose(name, self.peers, len(self.peers)):
            if len(written) >= self.replicas:
                break
            if placed.draining:
                continue
            peer = placed.peer
            try:
                peer.put(name, body)
                written.append(peer.name)
            except PeerError as exc:
                errors.append(f"{peer.name}: {exc.message}")
        if len(written) < self.minimum:
            raise ManifestError(
                f"{what} stored on {len(written)} peer(s), need {self.minimum}: {'; '.join(errors)}"
            )
        return written

    def fetch(self, name: str, holders: Sequence[str] = ()) -> tuple[bytes, T]:
        """The sealed body as stored and what it opens to, from the best-ranked peer that
        has a good copy (``holders``, peers known to hold one, first). Raises only
        :class:`ManifestError`, whatever peers send; a peer's bad copy is warned about
        once per peer and the next holder is tried."""
        if not self._is_name(name):
            raise ManifestError(f"{name!r} is not a {self.noun} name of vault {self.vault_id}")
        problems = []
        refused = 0
        ranked = self._ranked(name)
        for placed in sorted(ranked, key=lambda p: p.name not in holders):
            peer = placed.peer
            try:
                body = peer.get(name, max_size=self._max_bytes())
                return body, self.open(name, body)
            except NotFound:
                continue
            except UntrustedWriter as exc:  # the keyring's decision, not the peer's fault
                refused += 1
                problems.append(f"{peer.name}: {exc}")
            except (MalformedReply, EnvelopeError, ManifestError) as exc:
                self._warnings.warn(
                    peer.name, f"bad {self.nouns}", "peer %s: bad copy of %s: %s",
                    peer.name, name, exc,
                )  # fmt: skip
                problems.append(f"{peer.name}: {exc}")
            except PeerError as exc:
                problems.append(f"{peer.name}: {exc}")
        if problems and refused == len(problems):
            raise RefusedBlob(problems[0].partition(": ")[2])
        raise ManifestError(
            f"no readable copy of {self.noun} {name}"
            + (f" ({'; '.join(problems)})" if problems else "")
        )

    def read(self, name: str, holders: Sequence[str] = ()) -> T:
        """:meth:`fetch` without the body."""
        return self.fetch(name, holders)[1]

    def read_copy(self, name: str, peer: Peer) -> bytes:
        """The sealed copy ``peer`` holds, checked to open (``check --read-data`` reads
        every copy, ``repair`` copies a good one). Raises PeerError (NotFound among them),
        or ManifestError / EnvelopeError for a copy that does not open."""
        body = peer.get(name, max_size=self._max_bytes())
        self.open(name, body)
        return body

    def names(self, unlisted: list[str] | None = None) -> Iterator[tuple[str, list[str]]]:
        """Every name of this kind on any reachable peer, with the peers holding it. A
        peer that cannot be listed (down, or its listing breaks the contract) is warned
        about, added to ``unlisted`` and left out; keys under the prefix that are not
        such names are skipped, one warning per peer."""
        holders: dict[str, list[str]] = {}
        prefix = self._prefix()

        def listing(placed: PlacedPeer) -> list[str]:
            found, foreign = [], None
            try:
                for info in placed.peer.list(prefix):
                    if self._is_name(info.key):
                        found.append(info.key)
                    elif foreign is None and not self._skipped(info.key):
                        foreign = info.key
            except PeerError as exc:
                log.warning("cannot list %s on %s: %s", self.nouns, placed.name, exc.message)
                if unlisted is not None:
                    unlisted.append(placed.name)
                return []
            if foreign is not None:
                log.warning(
                    "peer %s: skipped %s and any other object under %r that is not a "
                    "%s name (not written by chunkvault)",
                    placed.name,
                    show_key(foreign),
                    prefix,
                    self.noun,
                )
            return found

        with ThreadPoolExecutor(max_workers=max(1, len(self.peers))) as pool:
            for peer, keys in zip(self.peers, pool.map(listing, self.peers), strict=True):
                for key in keys:
                    holders.setdefault(key, []).append(peer.name)
        yield from sorted(holders.items())

    def put_to(self, name: str, body: bytes, holders: Sequence[str]) -> None:
        """Replace the copies on exactly ``holders`` (every one tried); ManifestError
        naming those that failed."""
        by_name = {p.name: p.peer for p in self.peers}
        errors = []
        for holder in holders:
            peer = by_name.get(holder)
            if peer is None:
                errors.append(f"{holder}: not a configured peer")
                continue
            try:
                peer.put(name, body)
            except PeerError as exc:
                errors.append(f"{holder}: {exc.message}")
        if errors:
            raise ManifestError(f"cannot store {self.noun} {name} on {'; '.join(errors)}")

    def delete(self, name: str) -> None:
        """Remove every copy (all peers: a copy may sit anywhere after failovers)."""
        for placed in self.peers:
            try:
                placed.peer.delete(name)
            except PeerError as exc:
                raise ManifestError(
                    f"cannot delete {self.noun} on {placed.name}: {exc.message}"
                ) from None


class ManifestStore(SealedStore[Manifest]):
    """Writes manifests to R peers (rendezvous-ranked on the name) and reads them back."""

    noun = "manifest"
    nouns = "manifests"

    def _prefix(self) -> str:
        return manifests_prefix(self.vault_id)

    def _is_name(self, key: str) -> bool:
        return parse_manifest_name(self.vault_id, key) is not None

    def _max_bytes(self) -> int:
        return MAX_MANIFEST_BYTES  # looked up per call: tests lower it

    def _skipped(self, key: str) -> bool:
        # Manifest batches share the prefix: journal.JournalStore lists (and warns about)
        # what is under batch/.
        return key.startswith(self._prefix() + BATCH_DIR)

    def seal(self, name: str, manifest: Manifest) -> bytes:
        """The sealed body; ManifestError if it would be over the size a reader accepts
        (or holds a packed chunk, which no reader of manifest objects accepts)."""
        payload = manifest.to_json()
        fits = len(payload) <= MAX_MANIFEST_JSON
        body = seal_blob(self.keys, KIND, name, payload) if fits else b""
        if not fits or len(body) > MAX_MANIFEST_BYTES:
            raise too_many_chunks(manifest, MAX_MANIFEST_BYTES, "manifest")
        return body

    def open(self, name: str, body: bytes) -> Manifest:
        """Authenticate and parse a body fetched for ``name``."""
        return Manifest.from_json(open_blob(self.keys, KIND, name, body, MAX_MANIFEST_JSON))

    def write(self, manifest: Manifest, name: str | None = None) -> tuple[str, list[str]]:
        """Store on up to R peers, walking down the ranking past failures. Raises
        ManifestError if fewer than min_replicas copies were written."""
        name = name or new_manifest_name(self.vault_id, self.keys, manifest)
        body = self.seal(name, manifest)
        return name, self._put_ranked(name, body, f"manifest for {names.show(manifest.path)}")


def too_many_chunks(manifest: Manifest, limit: int, what: str) -> ManifestError:
    """The error for a manifest too large to store (in a manifest object or a batch)."""
    return ManifestError(
        f"manifest for {names.show(manifest.path)} ({len(manifest.chunks)} chunks) is "
        f"over the {limit // MiB} MiB {what} limit",
        "raise chunking.avg_size and chunking.max_size so large files have fewer chunks",
    )
