"""What a peer sees of object sizes and names: small files are indistinguishable by size,
manifest names carry whole seconds only. CLI subprocesses, real HTTP S3 peers (moto)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.crypto.envelope import BLOB_FLOOR, CHUNK_FLOOR, SealedChunk, chunk_aad, wrap_dek
from chunkvault.crypto.material import MasterKeys
from chunkvault.crypto.padding import padme
from chunkvault.keystore import KeyStore
from chunkvault.layout import chunk_key, chunk_metadata
from chunkvault.manifest import KIND, ChunkRef, Manifest, path_key

PW_VALUE = "object sizes passphrase"
PW = {"CHUNKVAULT_PASSPHRASE": PW_VALUE}
SIZES = (1, 49, 200, 1000)


def object_sizes(config: Path, kind: str) -> dict[str, set[int]]:
    """key -> sizes of its copies on every peer, for chunks or manifests."""
    found: dict[str, set[int]] = {}
    for peer in build_peers(load_config(config)):
        try:
            for info in peer.list(f"test/{kind}/"):
                found.setdefault(info.key, set()).add(info.size)
        finally:
            peer.close()
    return found


def test_small_files_are_indistinguishable_by_size_and_restore_exactly(tmp_path, moto_peers):
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        chunking={"pack_threshold": 0},  # chunk objects: what a peer sees of each chunk
    )  # fmt: skip
    # Random bytes do not compress: the sizes a peer would see without padding are exact.
    files = {f"dir/file-{n}.bin": os.urandom(n) for n in SIZES}
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(exist_ok=True)
        (inbox / rel).write_bytes(data)
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr
    assert f"{len(SIZES)} stored" in pushed.stdout

    chunks = object_sizes(config, "chunks")
    assert len(chunks) == len(SIZES)  # one chunk per file, no dedup among random data
    # Every chunk object, on every peer, has the floor size: 2 + 12 + 1024 + 16 bytes.
    assert {size for sizes in chunks.values() for size in sizes} == {2 + 12 + CHUNK_FLOOR + 16}
    # The versions are committed together: one manifest batch, padded like every blob,
    # named by its time (whole seconds in ns units) and 16 random hex, not by any path.
    manifests = object_sizes(config, "manifests")
    assert len(manifests) == 1
    (name,) = manifests
    assert re.fullmatch(r"test/manifests/batch/\d{11}000000000-[0-9a-f]{16}", name)
    (size,) = manifests[name]  # the same on every peer holding it
    inner = size - (1 + 65 + 12 + 16)
    assert inner >= BLOB_FLOOR and padme(inner) == inner

    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW)
    assert restored.returncode == 0, restored.stderr
    assert {
        p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files


# --- vaults written before padding keep working ---------------------------------------------


def seal_unpadded_chunk(keys: MasterKeys, data: bytes, compress: bool) -> SealedChunk:
    """A chunk object exactly as written before padding (docs/format.md, flags 0x00/0x01)."""
    chunk_id = keys.chunk_id(data)
    flags, payload = (1, zstandard.compress(data)) if compress else (0, data)
    dek, nonce = os.urandom(32), os.urandom(12)
    sealed = AESGCM(dek).encrypt(nonce, payload, chunk_aad(keys.vault_uuid, chunk_id, flags))
    body = bytes([1, flags]) + nonce + sealed
    return SealedChunk(chunk_id, body, wrap_dek(keys, chunk_id, dek), keys.current, len(data))


def seal_v1_blob(keys: MasterKeys, name: str, payload: bytes) -> bytes:
    """A manifest exactly as written before padding (blob version 1)."""
    dek, nonce = os.urandom(32), os.urandom(12)
    aad = f"chunkvault/blob/{KIND}".encode() + b"\x01" + keys.vault_uuid + name.encode()
    sealed = AESGCM(dek).encrypt(nonce, zstandard.compress(payload), aad)
    return b"\x01" + wrap_dek(keys, f"{KIND}:{name}", dek) + nonce + sealed


def plant_unpadded_files(config: Path, files: dict[str, list[bytes]]) -> None:
    """Old-format chunks (2 replicas) and v1 manifests under old ns-precision names."""
    cfg = load_config(config)
    keys = KeyStore(cfg.vault.state_dir, cfg.vault.id, []).open(PW_VALUE).keys
    peers = build_peers(cfg)
    for i, (rel, chunks) in enumerate(files.items()):
        refs = []
        for j, data in enumerate(chunks):
            sealed = seal_unpadded_chunk(keys, data, compress=data.startswith(b"text"))
            refs.append(ChunkRef(sealed.chunk_id, len(data), sealed.wrapped_dek))
            for peer in (peers[(i + j) % 3], peers[(i + j + 1) % 3]):
                peer.put(chunk_key("test", sealed.chunk_id), sealed.body, chunk_metadata(sealed))
        content = b"".join(chunks)
        manifest = Manifest(
            rel, len(content), 1_700_000_000_123_456_789, 0o100644,
            hashlib.sha256(content).hexdigest(), tuple(refs),
        )  # fmt: skip
        name = f"test/manifests/{path_key(keys, rel)}/{time.time_ns():020d}-{os.urandom(4).hex()}"
        for peer in peers[:2]:
            peer.put(name, seal_v1_blob(keys, name, manifest.to_json()))
    for peer in peers:
        peer.close()


def restore_fresh(config: Path, tmp_path: Path, out: str) -> dict[str, bytes]:
    """Restore everything on a "fresh machine" (empty state dir): all from the peers."""
    shutil.rmtree(tmp_path / "state")
    target = tmp_path / out
    restored = run_cli(config, "restore", "--to", str(target), env=PW)
    assert restored.returncode == 0, restored.stderr
    return {
        p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()
    }


def test_a_vault_written_before_padding_restores_and_rotates(tmp_path, moto_peers):
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        chunking={"pack_threshold": 0},  # chunk objects: what a peer sees of each chunk
    )  # fmt: skip
    old = {
        "old/text.txt": [b"text compresses " * 400],
        "old/noise.bin": [os.urandom(3000)],
        "old/two-chunks.bin": [os.urandom(5000), b"text again " * 300],
    }
    plant_unpadded_files(config, old)
    (inbox / "new.bin").write_bytes(new := os.urandom(70_000))
    # Only this path: a full push would (rightly) mark the planted files deleted.
    pushed = run_cli(config, "push", str(inbox / "new.bin"), env=PW)
    assert pushed.returncode == 0, pushed.stderr
    expected = {rel: b"".join(chunks) for rel, chunks in old.items()} | {"new.bin": new}
    assert restore_fresh(config, tmp_path, "before") == expected

    # Rotation reads both formats (blob_generation, open_blob, chunk metadata), re-seals
    # every manifest (so they become version 2) and leaves chunk bodies as they are.
    rotated = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    assert rotated.returncode == 0, rotated.stderr
    headers: dict[str, set[bytes]] = {"chunks": set(), "manifests": set()}
    for peer in build_peers(load_config(config)):
        for kind in headers:
            for info in peer.list(f"test/{kind}/"):
                headers[kind].add(peer.get(info.key)[: 2 if kind == "chunks" else 1])
        peer.close()
    assert headers["manifests"] == {b"\x02"}
    assert headers["chunks"] == {b"\x01\x00", b"\x01\x01", b"\x01\x02"}  # old and padded
    assert restore_fresh(config, tmp_path, "after") == expected
