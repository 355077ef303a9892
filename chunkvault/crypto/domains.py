"""Chunk-id domains: chunks whose ids must never equal those of the watched tree's chunks.

A client of ``POST /upload`` could otherwise stage a guessed plaintext and learn from the
dedup (or its timing) whether the vault already holds it. Chunks of another domain get
ids under their own id key, derived from the vault's:

    domain id key = HKDF-SHA256(IKM = id_key, salt = none, info = b"chunkvault/id-key/" | name)

so equal plaintexts in two domains get unrelated ids (no cross-domain dedup) while dedup
within a domain stays. Specified in docs/format.md.
"""

from __future__ import annotations

from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chunkvault.crypto.material import KEY_BYTES, MasterKeys, TrustedWriter

API_CHUNKS = "api-chunks"  # chunks stored through POST /upload


def domain_id_key(id_key: bytes, domain: str) -> bytes:
    info = b"chunkvault/id-key/" + domain.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(id_key)


class DomainKeys(MasterKeys):
    """A read-only view of ``base`` with the domain's id key. KEKs, generations and the vault
    uuid are read from ``base`` on every use, so a rotation of ``base`` applies at once;
    envelopes sealed through the view are ordinary chunks (same format, same KEKs)."""

    def __init__(self, base: MasterKeys, domain: str) -> None:  # no dataclass __init__
        self.base = base
        self.domain = domain
        self._id_key = domain_id_key(base.id_key, domain)

    def __repr__(self) -> str:  # never print key bytes
        return f"DomainKeys({self.domain!r}, {self.base!r})"

    @property  # type: ignore[override]
    def vault_uuid(self) -> bytes:
        return self.base.vault_uuid

    @property  # type: ignore[override]
    def id_key(self) -> bytes:
        return self._id_key

    @property  # type: ignore[override]
    def keks(self) -> dict[int, bytes]:
        return self.base.keks

    @property  # type: ignore[override]
    def current(self) -> int:
        return self.base.current

    @property  # type: ignore[override]
    def seal_to(self) -> bytes | None:
        return self.base.seal_to

    @property  # type: ignore[override]
    def vault_private(self) -> bytes | None:
        return self.base.vault_private

    @property  # type: ignore[override]
    def writers(self) -> dict[str, TrustedWriter]:
        return self.base.writers

    def kek(self, generation: int) -> bytes:
        return self.base.kek(generation)

    def add_generation(self) -> NoReturn:
        raise TypeError("a domain view is read-only: rotate the vault's master keys")

    def drop_generations_except(self, keep: int) -> NoReturn:
        raise TypeError("a domain view is read-only: rotate the vault's master keys")

    def to_bytes(self) -> NoReturn:
        raise TypeError("a domain view is never stored: store the vault's master keys")


def writer_id_key(id_key: bytes, writer_id: str) -> bytes:
    """The chunk-id key a writer credential holds: its own domain, so the credential tells
    nothing about the owner's chunks or another writer's."""
    return domain_id_key(id_key, f"writer-{writer_id}")


def api_chunk_keys(keys: MasterKeys) -> DomainKeys:
    """The keys chunks of ``POST /upload`` are sealed, named and opened with."""
    return DomainKeys(keys, API_CHUNKS)
