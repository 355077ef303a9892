"""The unlocked master material: what every key slot wraps.

- ``id_key`` (32 bytes): keys the chunk-id HMAC, so ids reveal nothing about content to
  anyone without the keyring. It never changes: a new id key would rename every chunk.
- ``keks`` (generation -> 32 bytes): the master key-encryption keys that wrap per-chunk
  data keys. ``key rotate-master`` adds a generation, re-wraps every data key, then drops
  the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field

KEY_BYTES = 32
MATERIAL_VERSION = 1


class MaterialError(ValueError):
    """Decrypted master material that does not parse: the keyring is corrupted."""


@dataclass
class MasterKeys:
    vault_uuid: bytes
    id_key: bytes
    keks: dict[int, bytes] = field(default_factory=dict)
    current: int = 1

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
