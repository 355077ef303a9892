"""Manifest batches: many file versions committed as ONE sealed object on R peers.

A per-file manifest object costs R PUTs per file version; a batch carries thousands of
versions in one object (docs/format.md, "Manifest batches"):

    <vault>/manifests/batch/<created ns, 20 digits, whole seconds>-<16 random hex>

    {"v": 1, "entries": [{"version": "<20 digits>-<8 hex>", <Manifest.to_obj() fields>}, ...]}

zstd-compressed and sealed as a blob of kind ``batch`` under its own object key, so a batch
opens neither as a manifest nor under another name. Each entry keeps the identity a version
always had, a manifest name (``manifest.new_manifest_name``), which is not an object: only
its version key is stored, and a reader rebuilds the name from the entry's own path, so a
batch can never make an entry claim another path's name.

Caps (a batch is read whole into memory; a peer's copy is never taken beyond them):

- :data:`MAX_BATCH_ENTRIES` = 10,000 versions. A batch of 10,000 small files is ~5.4 MB of
  JSON (~540 bytes an entry: path, hashes, a wrapped DEK and a pack location) and ~1.8 MB
  sealed; parsing it holds ~20 MiB of Python objects (measured, docs/format.md), so a
  reader that opens a few batches at once stays far below the push's memory budget. More
  entries per batch would save nothing that counts (one object per 10,000 files) and cost
  memory on every read.
- :data:`MAX_BATCH_BYTES` = 64 MiB, the manifest cap (what a hostile peer can make a reader
  download per copy stays what it was).
- :data:`MAX_BATCH_JSON` = 60 MiB: the JSON whose zstd frame (at worst 1/256 larger than its
  input), padded (Padmé adds under 1/32 at this size), still seals under MAX_BATCH_BYTES.
  So :class:`BatchBuilder` decides on the JSON size alone, and a batch it built is never
  refused at write time. One file's manifest alone may use it all: ~370,000 chunks
  (~170 JSON bytes each), a 720 GiB file at the default 2 MiB average chunk size.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from chunkvault.backends.base import Peer
from chunkvault.crypto import writer_blob
from chunkvault.crypto.envelope import EnvelopeError, open_blob, seal_blob
from chunkvault.crypto.material import MasterKeys, WriterKeys
from chunkvault.manifest import (
    BATCH_DIR,
    Manifest,
    ManifestError,
    SealedStore,
    manifests_prefix,
    parse_manifest_name,
    path_key,
    too_many_chunks,
)

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
KIND = "batch"
MiB = 1024 * 1024
#: Most file versions in one batch (see the module docstring).
MAX_BATCH_ENTRIES = 10_000
#: Largest batch JSON (before zstd) written or opened.
MAX_BATCH_JSON = 60 * MiB
#: Largest sealed batch read from or written to a peer.
MAX_BATCH_BYTES = 64 * MiB
# Used with fullmatch: "$" alone would also accept a trailing newline.
_BATCH_TAIL = re.compile(r"[0-9]{20}-[0-9a-f]{16}")
_VERSION = re.compile(r"[0-9]{20}-[0-9a-f]{8}")
# The JSON around the entries: {"v":1,"entries":[ ... ]}, commas between entries.
_HEAD = b'{"v":%d,"entries":[' % FORMAT_VERSION
_TAIL = b"]}"


def batch_prefix(vault_id: str) -> str:
    return manifests_prefix(vault_id) + BATCH_DIR


def new_batch_name(vault_id: str) -> str:
    # Whole seconds, as manifest names: sorts by time, no finer timing for peers.
    created = time.time_ns() // 10**9 * 10**9
    return f"{batch_prefix(vault_id)}{created:020d}-{os.urandom(8).hex()}"


def batch_time_ns(name: str) -> int:
    """When a batch name says it was written (whole seconds; whoever wrote it chose it)."""
    return int(name.rpartition("/")[2].partition("-")[0])


def parse_batch_name(vault_id: str, key: str) -> str | None:
    """``key`` if it is exactly a batch name of this vault, else None."""
    prefix = batch_prefix(vault_id)
    if key.startswith(prefix) and _BATCH_TAIL.fullmatch(key[len(prefix) :]):
        return key
    return None


@dataclass(frozen=True)
class BatchEntry:
    """One file version in a batch. ``name`` is its identity, of a manifest name's shape
    (``manifest.new_manifest_name``); no object has it."""

    name: str
    manifest: Manifest

    @cached_property
    def encoded(self) -> bytes:
        """The entry as it stands in a batch's JSON: encoded once, when the builder sizes
        it, and joined as it is when the batch is written."""
        version = self.name.rpartition("/")[2]
        return json.dumps(
            {"version": version, **self.manifest.to_obj()}, separators=(",", ":")
        ).encode()


def _json_size(entry_sizes: int, count: int) -> int:
    return len(_HEAD) + entry_sizes + max(0, count - 1) + len(_TAIL)


def _check_entry(vault_id: str, keys_path_key: str, entry: BatchEntry) -> None:
    """An entry whose name a reader would not rebuild from it could not be read back."""
    parsed = parse_manifest_name(vault_id, entry.name)
    if parsed is None or parsed.path_key != keys_path_key:
        raise ManifestError(
            f"batch entry {entry.name!r} is not a version name of its own path in vault {vault_id}"
        )


def batch_to_json(vault_id: str, keys: MasterKeys, entries: Sequence[BatchEntry]) -> bytes:
    """The batch JSON; ManifestError for what a reader would refuse (no entry, too many,
    a duplicate or foreign name, too large)."""
    if not entries:
        raise ManifestError("a manifest batch holds at least one entry (delete it instead)")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise ManifestError(f"a manifest batch holds at most {MAX_BATCH_ENTRIES} entries")
    seen: set[str] = set()
    parts = []
    for entry in entries:
        if entry.name in seen:
            raise ManifestError(f"batch holds {entry.name} twice")
        seen.add(entry.name)
        _check_entry(vault_id, path_key(keys, entry.manifest.path), entry)
        parts.append(entry.encoded)
    payload = _HEAD + b",".join(parts) + _TAIL
    if len(payload) > MAX_BATCH_JSON:
        if len(entries) == 1:
            raise too_many_chunks(entries[0].manifest, MAX_BATCH_JSON, "manifest batch")
        raise ManifestError(
            f"manifest batch of {len(entries)} entries is over the "
            f"{MAX_BATCH_JSON // MiB} MiB limit (cut batches with BatchBuilder)"
        )
    return payload


def batch_from_json(vault_id: str, keys: MasterKeys, data: bytes) -> list[BatchEntry]:
    """Parse and check a batch's JSON; raises only :class:`ManifestError`."""
    try:
        obj = json.loads(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ManifestError(f"manifest batch does not parse: {exc!r}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("entries"), list):
        raise ManifestError("manifest batch is not an object with a list of entries")
    version = obj.get("v")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ManifestError(
            f"manifest batch format {str(version)[:20]!r} is not supported",
            "a newer chunkvault wrote it: upgrade chunkvault",
        )
    raw = obj["entries"]
    if len(raw) > MAX_BATCH_ENTRIES:
        raise ManifestError(f"manifest batch holds {len(raw)} entries, over {MAX_BATCH_ENTRIES}")
    prefix = manifests_prefix(vault_id)
    entries: list[BatchEntry] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise ManifestError("manifest batch holds an entry that is not an object")
        item = dict(item)
        tail = item.pop("version", None)
        if not isinstance(tail, str) or not _VERSION.fullmatch(tail):
            raise ManifestError(f"manifest batch holds a bad version key {str(tail)[:40]!r}")
        manifest = Manifest.from_obj(item, allow_packed=True)
        name = f"{prefix}{path_key(keys, manifest.path)}/{tail}"
        if name in seen:
            raise ManifestError(f"manifest batch holds {name} twice")
        seen.add(name)
        entries.append(BatchEntry(name, manifest))
    return entries


@dataclass
class BatchBuilder:
    """Collects entries up to the caps, so a committer knows when to cut a batch. Pure:
    the JSON size it counts is exactly that of :func:`batch_to_json` of its entries."""

    entries: list[BatchEntry] = field(default_factory=list, init=False)
    _sizes: int = field(default=0, init=False)
    _names: set[str] = field(default_factory=set, init=False)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def json_size(self) -> int:
        return _json_size(self._sizes, len(self.entries))

    def add(self, entry: BatchEntry) -> bool:
        """Take ``entry`` if the batch stays within the caps; False (not taken) if it
        would not. ManifestError if it could not fit even alone (a manifest with too
        many chunks), or if the batch already holds its name."""
        if entry.name in self._names:
            raise ManifestError(f"batch already holds {entry.name}")
        size = len(entry.encoded)
        if _json_size(size, 1) > MAX_BATCH_JSON:
            raise too_many_chunks(entry.manifest, MAX_BATCH_JSON, "manifest batch")
        if self.entries and (
            len(self.entries) >= MAX_BATCH_ENTRIES
            or _json_size(self._sizes + size, len(self.entries) + 1) > MAX_BATCH_JSON
        ):
            return False
        self.entries.append(entry)
        self._names.add(entry.name)
        self._sizes += size
        return True


class JournalStore(SealedStore[list[BatchEntry]]):
    """Writes manifest batches to R peers (rendezvous-ranked on the batch name) and reads
    them back; a peer's bad copy is that peer's error (warned once, next holder)."""

    noun = "manifest batch"
    nouns = "manifest batches"

    def _prefix(self) -> str:
        return batch_prefix(self.vault_id)

    def _is_name(self, key: str) -> bool:
        return parse_batch_name(self.vault_id, key) is not None

    def _max_bytes(self) -> int:
        return MAX_BATCH_BYTES  # looked up per call: tests lower it

    def seal(self, name: str, entries: Sequence[BatchEntry]) -> bytes:
        """The sealed body; ManifestError for a batch a reader would refuse. Keys that only
        write seal it to the vault key and sign it as their writer (a writer blob)."""
        payload = batch_to_json(self.vault_id, self.keys, entries)
        keys = self.keys
        if isinstance(keys, WriterKeys):
            assert keys.seal_to is not None
            body = writer_blob.seal(keys.seal_to, keys.vault_uuid, keys.writer_id,
                                    keys.writer_key, KIND, name, payload)  # fmt: skip
        else:
            body = seal_blob(keys, KIND, name, payload)
        if len(body) > MAX_BATCH_BYTES:  # cannot happen under MAX_BATCH_JSON (docstring)
            raise ManifestError(f"manifest batch {name} is over the {MAX_BATCH_BYTES} bytes cap")
        return body

    def open(self, name: str, body: bytes) -> list[BatchEntry]:
        """Authenticate and parse a body fetched for ``name`` (EnvelopeError or
        ManifestError). A writer blob opens with the vault's private key, if its writer
        is one the keyring trusts for the time the batch's name gives."""
        if writer_blob.writer_of(body) is None:
            payload = open_blob(self.keys, KIND, name, body, MAX_BATCH_JSON)
        elif self.keys.vault_private is None:
            raise EnvelopeError(f"manifest batch {name} is sealed to the vault key, which "
                                "this host does not hold")  # fmt: skip
        else:
            dated = batch_time_ns(name)
            writer, payload = writer_blob.open_blob(
                self.keys.vault_private, self.keys.vault_uuid,
                lambda writer: self.keys.writer_key(writer, dated), KIND, name, body,
                MAX_BATCH_JSON,
            )  # fmt: skip
            entries = batch_from_json(self.vault_id, self.keys, payload)
            if any(e.manifest.writer != writer for e in entries):
                raise ManifestError(f"manifest batch {name} of writer {writer} holds a version "
                                    "it does not sign as its own")  # fmt: skip
            return entries
        return batch_from_json(self.vault_id, self.keys, payload)

    def read_copy(self, name: str, peer: Peer) -> bytes:
        """As :meth:`SealedStore.read_copy`; on a write-only host (which opens nothing) a
        copy is checked to be its own batch as it wrote it (the writer MAC)."""
        keys = self.keys
        if not isinstance(keys, WriterKeys):
            return super().read_copy(name, peer)
        body = peer.get(name, max_size=self._max_bytes())
        writer_blob.check_mac(keys.vault_uuid, keys.writer_id, keys.writer_key, KIND, name, body)
        return body

    def write(
        self, entries: Sequence[BatchEntry], name: str | None = None
    ) -> tuple[str, list[str]]:
        """Store on up to R peers, walking down the ranking past failures. Raises
        ManifestError if fewer than ``minimum`` copies were written (the caller decides
        what to delete)."""
        name = name or new_batch_name(self.vault_id)
        if parse_batch_name(self.vault_id, name) is None:
            raise ManifestError(f"{name!r} is not a manifest batch name of vault {self.vault_id}")
        body = self.seal(name, entries)
        what = f"manifest batch {name} ({len(entries)} entries)"
        return name, self._put_ranked(name, body, what)

    def rewrite(self, name: str, entries: Sequence[BatchEntry], holders: Sequence[str]) -> None:
        """Re-seal ``entries`` under the same name onto exactly ``holders`` (master-key
        rotation; purge, which drops a path's entries). ManifestError naming the holders
        that could not be written."""
        if parse_batch_name(self.vault_id, name) is None:
            raise ManifestError(f"{name!r} is not a manifest batch name of vault {self.vault_id}")
        self.put_to(name, self.seal(name, entries), holders)
