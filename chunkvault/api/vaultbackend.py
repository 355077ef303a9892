"""The real :class:`ApiBackend`: staging on disk, the upload service, the chunk reader."""

from __future__ import annotations

from collections.abc import Iterable

from chunkvault.agent import Agent
from chunkvault.api.backend import (
    BackendUnavailable,
    ChunkTooLarge,
    ReadRefused,
    Status,
    UnknownChunk,
    UploadRequest,
    UploadResponse,
)
from chunkvault.reading import ChunkReader, ChunkUnavailable
from chunkvault.status import vault_status
from chunkvault.vault import Vault


class VaultBackend:
    def __init__(self, vault: Vault, agent: Agent | None = None) -> None:
        self.vault = vault
        self.agent = agent
        self.max_chunk_bytes = vault.config.api.max_chunk_bytes

    def start(self) -> None:
        self.vault.staging.start()  # expired chunks go now, then periodically

    def close(self) -> None:
        self.vault.staging.stop()

    def stage_chunk(self, chunk_id: str, body: Iterable[bytes], size_hint: int | None) -> int:
        limit = self.max_chunk_bytes
        if size_hint is not None and size_hint > limit:
            raise ChunkTooLarge(f"{size_hint} bytes, limit {limit}")
        with self.vault.staging.writer(chunk_id, size_hint) as writer:
            for piece in body:
                if writer.size + len(piece) > limit:
                    raise ChunkTooLarge(f"over {limit} bytes")
                writer.write(piece)
        return writer.size

    def upload(self, request: UploadRequest) -> UploadResponse:
        return self.vault.service.upload(request)

    def request_detail(self, request_id: str) -> UploadResponse:
        return self.vault.service.request_detail(request_id)

    def read_chunk(self, chunk_id: str) -> bytes:
        if self.vault.write_only:
            raise ReadRefused()
        stored = self.vault.catalog.client_chunk(chunk_id)
        if stored is None:
            raise UnknownChunk(chunk_id)
        # API chunks are named (and their ids checked) in their own id-key domain; those
        # uploaded by versions before it were named with the vault's id key.
        vault = self.vault
        keys = vault.service.api_keys
        reader = ChunkReader(vault.config.vault.id, vault.peers, keys, vault.catalog)
        try:
            return reader.read(stored)
        except ChunkUnavailable as exc:
            try:
                return vault.reader.read(stored)
            except ChunkUnavailable:
                raise BackendUnavailable(str(exc)) from None

    def status(self) -> Status:
        if self.agent is None:
            return vault_status(self.vault)
        stats = self.agent.stats
        with stats.lock:
            in_flight, errors = stats.in_flight, list(stats.last_errors)
        return vault_status(self.vault, in_flight, errors)
