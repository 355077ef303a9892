"""The unlocked master material: what every key slot wraps.

- ``id_key`` (32 bytes): keys the chunk-id HMAC, so ids reveal nothing about content to
  anyone without the keyring. It never changes: a new id key would rename every chunk.
- ``keks`` (generation -> 32 bytes): the master key-encryption keys that wrap per-chunk
  data keys. ``key rotate-master`` adds a generation, re-wraps every data key, then drops
  the old one.

Beside them, once unlocked, the owner's keys carry what the keyring holds for write-only
hosts (not part of the material: the keyring wraps them on their own): the vault's private
key, which opens data keys and batches sealed to the vault key, and the writers it trusts.
A write-only host holds :class:`WriterKeys` instead: no KEK, no private key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field

KEY_BYTES = 32
MATERIAL_VERSION = 1
#: The generation of data keys sealed to the vault key (by a write-only host): no KEK's.
SEALED_GENERATION = 0


class MaterialError(ValueError):
    """Decrypted master material that does not parse: the keyring is corrupted."""


class WriteOnlyKeys(MaterialError):
    """A write-only host asked for a key it does not hold (a KEK, the private key)."""


@dataclass(frozen=True)
class TrustedWriter:
    """A writer the keyring lists: its key (which authenticates its batches) and when it
    was revoked, if it was (ns since the epoch: batches it dates from then on are
    refused)."""

    key: bytes = field(repr=False)
    revoked_ns: int | None = None

    def trusts_at(self, when_ns: int) -> bool:
        return self.revoked_ns is None or when_ns < self.revoked_ns


@dataclass
class MasterKeys:
    vault_uuid: bytes
    id_key: bytes
    keks: dict[int, bytes] = field(default_factory=dict)
    current: int = 1
    # Set at unlock from the keyring (crypto.keyring), never serialized with the material.
    vault_private: bytes | None = field(default=None, repr=False, compare=False)
    writers: dict[str, TrustedWriter] = field(default_factory=dict, repr=False, compare=False)

    #: The vault's public key when these keys only write: data keys are sealed to it.
    seal_to: bytes | None = None

    @classmethod
    def generate(cls, vault_uuid: bytes) -> MasterKeys:
        return cls(vault_uuid, os.urandom(KEY_BYTES), {1: os.urandom(KEY_BYTES)}, 1)

    def __repr__(self) -> str:  # never print key bytes, even in a traceback
        return f"MasterKeys(generations={sorted(self.keks)}, current={self.current})"

    @property
    def current_kek(self) -> bytes:
        return self.keks[self.current]

    def kek(self, generation: int) -> bytes:
        try:
            return self.keks[generation]
        except KeyError:
            raise MaterialError(
                f"data is wrapped with key generation {generation}, which this keyring does "
                f"not hold (it has {sorted(self.keks)})"
            ) from None

    def writer_key(self, writer_id: str, when_ns: int) -> bytes | None:
        """The key of writer ``writer_id`` if the keyring trusts what it dated
        ``when_ns``; None if it lists no such writer or revoked it before then."""
        trusted = self.writers.get(writer_id)
        return trusted.key if trusted is not None and trusted.trusts_at(when_ns) else None

    def chunk_id(self, plaintext: bytes) -> str:
        """Keyed content address: equal plaintexts dedupe, but ids leak nothing."""
        return hmac.new(self.id_key, plaintext, hashlib.sha256).hexdigest()

    def add_generation(self) -> int:
        new = max(self.keks) + 1
        self.keks[new] = os.urandom(KEY_BYTES)
        self.current = new
        return new

    def drop_generations_except(self, keep: int) -> None:
        self.keks = {keep: self.keks[keep]}
        self.current = keep

    def to_bytes(self) -> bytes:
        """Serialized for wrapping. JSON of hex strings: small, versioned, easy to audit."""
        return json.dumps(
            {
                "v": MATERIAL_VERSION,
                "id_key": self.id_key.hex(),
                "keks": {str(g): k.hex() for g, k in sorted(self.keks.items())},
                "current": self.current,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, vault_uuid: bytes, data: bytes) -> MasterKeys:
        try:
            obj = json.loads(data)
            if obj["v"] != MATERIAL_VERSION:
                raise MaterialError(f"unsupported master material version {obj['v']}")
            keys = cls(
                vault_uuid=vault_uuid,
                id_key=bytes.fromhex(obj["id_key"]),
                keks={int(g): bytes.fromhex(k) for g, k in obj["keks"].items()},
                current=int(obj["current"]),
            )
        except MaterialError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MaterialError(f"master material does not parse: {exc}") from None
        sizes_ok = len(keys.id_key) == KEY_BYTES and all(
            len(k) == KEY_BYTES for k in keys.keks.values()
        )
        if not sizes_ok or keys.current not in keys.keks:
            raise MaterialError("master material has wrong key sizes or generations")
        return keys


WRITER_MATERIAL = "writer"


@dataclass
class WriterKeys(MasterKeys):
    """What a write-only host seals with (from its credential): the chunk-id key of its
    own domain, the vault's public key, and its writer id and key (which authenticate its
    batches). No KEK: asking for one raises :class:`WriteOnlyKeys`."""

    writer_id: str = ""
    writer_key: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:  # never print key bytes
        return f"WriterKeys(writer={self.writer_id})"

    def kek(self, generation: int) -> bytes:
        raise WriteOnlyKeys("this host holds a write-only credential: it has no master key")

    @property
    def current_kek(self) -> bytes:
        return self.kek(self.current)

    def add_generation(self) -> int:
        raise WriteOnlyKeys("this host holds a write-only credential: it has no master key")

    def to_bytes(self) -> bytes:
        """For a seal worker (``seal_workers.py``), as the owner's material is."""
        assert self.seal_to is not None
        return json.dumps(
            {
                "v": MATERIAL_VERSION,
                WRITER_MATERIAL: self.writer_id,
                "writer_key": self.writer_key.hex(),
                "id_key": self.id_key.hex(),
                "seal_to": self.seal_to.hex(),
            },
            separators=(",", ":"),
        ).encode()


def keys_from_bytes(vault_uuid: bytes, data: bytes) -> MasterKeys:
    """The owner's material or a writer's, as ``to_bytes`` wrote it."""
    try:
        obj = json.loads(data)
        if isinstance(obj, dict) and WRITER_MATERIAL in obj:
            return WriterKeys(
                vault_uuid, bytes.fromhex(obj["id_key"]), {}, SEALED_GENERATION,
                seal_to=bytes.fromhex(obj["seal_to"]), writer_id=str(obj[WRITER_MATERIAL]),
                writer_key=bytes.fromhex(obj["writer_key"]),
            )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise MaterialError(f"writer material does not parse: {exc}") from None
    return MasterKeys.from_bytes(vault_uuid, data)
