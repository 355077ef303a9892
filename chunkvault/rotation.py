"""Master-key rotation: a new KEK generation, and every wrapped data key re-wrapped under
it. No chunk body is re-sent: object metadata is replaced by server-side copy.

Crash-safe and resumable because the state lives in the keyring itself:

1. start: the master material gets generation N+1 (old ones kept) and the keyring is
   re-made over it (only the slot used; other slots cannot be re-wrapped without their
   passphrases, like LUKS2's reencrypt);
2. re-wrap: every object whose data key is not at generation N+1 is re-wrapped; objects
   already done are skipped, so a rerun continues where a crash stopped;
3. finish: once nothing references an old generation, the old KEKs are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chunkvault.backends.base import Peer, PeerError
from chunkvault.crypto.envelope import EnvelopeError, rewrap_dek
from chunkvault.crypto.material import MasterKeys
from chunkvault.layout import LayoutError, chunk_id_from_key, chunks_prefix, parse_chunk_metadata

log = logging.getLogger(__name__)


@dataclass
class RewrapReport:
    examined: int = 0
    rewrapped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failures


def rewrap_chunk_objects(
    peers: Sequence[Peer],
    vault_id: str,
    keys: MasterKeys,
    generation: int,
    workers: int = 8,
    progress: Callable[[int], None] | None = None,
) -> RewrapReport:
    """Re-wrap the data key in the metadata of every chunk object on every peer."""
    report = RewrapReport()

    def one(peer: Peer, key: str) -> bool | str:
        try:
            chunk_id = chunk_id_from_key(vault_id, key)
            info = peer.stat(key)
            meta = parse_chunk_metadata(info.metadata)
            if meta.generation == generation:
                return False
            wrapped = rewrap_dek(keys, chunk_id, meta.wrapped_dek, generation)
            peer.replace_metadata(key, meta.with_wrapped_dek(wrapped, info.metadata))
            return True
        except (PeerError, LayoutError, EnvelopeError) as exc:
            return f"{peer.name}:{key}: {exc}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for peer in peers:
            try:
                keys_on_peer = [info.key for info in peer.list(chunks_prefix(vault_id))]
            except PeerError as exc:
                report.failures.append(f"{peer.name}: cannot list chunks: {exc.message}")
                continue
            for outcome in pool.map(lambda k, p=peer: one(p, k), keys_on_peer):
                report.examined += 1
                if isinstance(outcome, str):
                    report.failures.append(outcome)
                    log.warning("re-wrap failed: %s", outcome)
                elif outcome:
                    report.rewrapped += 1
                if progress:
                    progress(1)
    return report
