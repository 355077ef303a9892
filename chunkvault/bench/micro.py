"""In-process benchmarks of the CPU stages, like ``kopia benchmark crypto|splitter|
compression``: each processes ``size`` bytes in ``block``-sized pieces and reports MB/s
(10^6 bytes per second, as every figure in chunkvault's benchmarks). No I/O, no peers."""

from __future__ import annotations

import io
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chunkvault.bench.data import MiB, text_block
from chunkvault.chunking import Chunker

Row = dict[str, Any]
MB = 1_000_000
ZSTD_LEVELS = (1, 22)


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MB / max(seconds, 1e-9)


def _timed(blocks: Iterable[bytes], op: Callable[[bytes], object]) -> tuple[int, float]:
    total, start = 0, time.perf_counter()
    for block in blocks:
        op(block)
        total += len(block)
    return total, time.perf_counter() - start


def _blocks(data: bytes, size: int, block: int) -> list[bytes]:
    """``size`` bytes as pieces of ``block``, cycling over ``data`` (one block of memory)."""
    count, rest = divmod(size, block)
    return [data] * count + ([data[:rest]] if rest else [])


def crypto(size: int, block: int = 4 * MiB, kdf: bool = True) -> list[Row]:
    """Chunk id (HMAC-SHA256), raw AES-256-GCM both ways, and a whole chunk envelope
    (id, zstd probe, padding, encryption, wrapped data key) sealed and opened."""
    from chunkvault.crypto.envelope import open_chunk, seal_chunk
    from chunkvault.crypto.material import MasterKeys

    _check_sizes(size, block)
    data = os.urandom(block)
    pieces = _blocks(data, size, block)
    keys = MasterKeys.generate(os.urandom(16))
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    distinct = {len(p): p for p in pieces}  # at most two lengths: block and the rest
    ciphertexts = {n: aead.encrypt(nonce, p, None) for n, p in distinct.items()}
    envelopes = {n: seal_chunk(keys, p) for n, p in distinct.items()}

    def open_one(piece: bytes) -> bytes:
        sealed = envelopes[len(piece)]
        return open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek)

    rows = []
    for name, op in (
        ("chunk id: HMAC-SHA256", keys.chunk_id),
        ("AES-256-GCM encrypt", lambda b: aead.encrypt(nonce, b, None)),
        ("AES-256-GCM decrypt", lambda b: aead.decrypt(nonce, ciphertexts[len(b)], None)),
        ("seal chunk (random data)", lambda b: seal_chunk(keys, b)),
        ("open chunk (random data)", open_one),
    ):  # fmt: skip
        total, seconds = _timed(pieces, op)
        rows.append(_row(name, total, seconds))
    rows += data_key_rows()
    if kdf:
        rows += kdf_rows()
    return rows


#: Data keys wrapped per timing: one each is ~3 us (KEK) or ~80 us (HPKE).
DATA_KEYS = 500


def data_key_rows() -> list[Row]:
    """One data key wrapped by the master KEK (the owner's), sealed to the vault key and
    opened with the private key (a write-only host's, HPKE X25519): per chunk, on top of
    its bytes, so it is what a small file costs more on a write-only host."""
    from chunkvault.crypto import vault_seal
    from chunkvault.crypto.envelope import wrap_dek
    from chunkvault.crypto.material import MasterKeys

    keys = MasterKeys.generate(os.urandom(16))
    private, public = vault_seal.new_key_pair()
    dek, chunk_id = os.urandom(32), "ab" * 32
    sealed = vault_seal.seal_dek(public, keys.vault_uuid, chunk_id, dek)
    rows = []
    for name, op in (
        ("data key: wrap (master KEK)", lambda: wrap_dek(keys, chunk_id, dek)),
        ("data key: seal (HPKE, write-only host)",
         lambda: vault_seal.seal_dek(public, keys.vault_uuid, chunk_id, dek)),
        ("data key: open sealed (HPKE)",
         lambda: vault_seal.open_dek(private, keys.vault_uuid, chunk_id, sealed)),
    ):  # fmt: skip
        start = time.perf_counter()
        for _ in range(DATA_KEYS):
            op()
        seconds = (time.perf_counter() - start) / DATA_KEYS
        rows.append({"operation": name, "bytes": 0, "seconds": seconds, "mb_per_s": None})
    return rows


def kdf_rows() -> list[Row]:
    """One passphrase derivation per KDF: the fixed cost of every command that unlocks."""
    from chunkvault.crypto.kdf import KdfParams

    rows = []
    for alg in ("argon2id", "scrypt"):
        params = KdfParams.new(alg)  # type: ignore[arg-type]
        start = time.perf_counter()
        params.derive("benchmark passphrase")
        rows.append({"operation": f"passphrase KDF: {alg}", "bytes": 0,
                     "seconds": time.perf_counter() - start, "mb_per_s": None})  # fmt: skip
    return rows


def chunker(size: int, min_size: int, avg_size: int, max_size: int, seed: int = 21) -> list[Row]:
    """FastCDC with the given sizes and fixed-size at ``avg_size``, over random data."""
    data = random.Random(seed).randbytes(size)
    rows = []
    for mode in ("cdc", "fixed"):
        cut = Chunker(mode, min_size, avg_size, max_size)  # type: ignore[arg-type]
        lengths: list[int] = []
        start = time.perf_counter()
        for piece in cut.split(io.BytesIO(data)):
            lengths.append(len(piece))
        seconds = time.perf_counter() - start
        row = _row(f"{mode} {_sizes(mode, min_size, avg_size, max_size)}", size, seconds)
        row.update(chunks=len(lengths), mean_chunk=size // max(1, len(lengths)))
        rows.append(row)
    return rows


def compression(size: int, levels: list[int], block: int = 4 * MiB) -> list[Row]:
    """zstd at each level on the text corpus and on random data: ratio, compress and
    decompress MB/s, per ``block`` (as chunks are compressed one at a time)."""
    _check_sizes(size, block)
    low, high = ZSTD_LEVELS
    for level in levels:
        if not low <= level <= high:
            raise ValueError(f"zstd level {level} is out of range {low}..{high}")
    samples = {
        "text": text_block(random.Random(22), block),
        "random": random.Random(23).randbytes(block),
    }
    rows = []
    for kind, data in samples.items():
        pieces = _blocks(data, size, block)
        for level in levels:
            compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
            packed = {len(p): compressor.compress(p) for p in pieces}
            total, c_seconds = _timed(pieces, compressor.compress)
            dec = zstandard.ZstdDecompressor()
            _, d_seconds = _timed(pieces, lambda b, dec=dec, packed=packed: dec.decompress(
                packed[len(b)]))  # fmt: skip
            stored = sum(len(packed[len(p)]) for p in pieces)
            rows.append({
                "operation": f"zstd-{level} {kind}", "bytes": total,
                "ratio": total / max(1, stored),
                "seconds": c_seconds, "mb_per_s": mb_per_s(total, c_seconds),
                "decompress_mb_per_s": mb_per_s(total, d_seconds),
            })  # fmt: skip
    return rows


def erasure(size: int, block: int, data: int, parity: int) -> list[Row]:
    """Reed-Solomon shares of ``block``-sized objects (a pack or a big chunk): encode,
    the healthy read (the data shares joined, nothing decoded), the rebuild with
    ``min(parity, data)`` data shares lost; and what is stored per byte, beside whole
    copies surviving as many lost peers (R = parity + 1)."""
    from chunkvault.erasure import Scheme, decode, encode, parse_header

    _check_sizes(size, block)
    scheme = Scheme(data, parity)
    label = f"{data}+{parity}"
    obj = os.urandom(block)
    pieces = _blocks(obj, size, block)
    shares = {n: encode(p, scheme) for n, p in {len(p): p for p in pieces}.items()}
    lost = min(parity, data)
    healthy = list(range(data))
    rebuilt = list(range(lost, data + lost))

    def read(piece: bytes, indices: list[int]) -> bytes:
        got = shares[len(piece)]
        return decode({i: got[i] for i in indices}, parse_header(got[indices[0]]))

    rows = []
    for name, op in (
        (f"erasure {label}: encode", lambda b: encode(b, scheme)),
        (f"erasure {label}: read, data shares (no decoding)", lambda b: read(b, healthy)),
        (f"erasure {label}: rebuild, {lost} data share(s) lost", lambda b: read(b, rebuilt)),
    ):  # fmt: skip
        total, seconds = _timed(pieces, op)
        rows.append(_row(name, total, seconds))
    stored = sum(map(len, shares[len(obj)]))
    for name, per_byte in (
        (f"stored per byte: erasure {label} (survives {parity} lost peers)", stored / block),
        (f"stored per byte: R={parity + 1} whole copies (survives {parity})", parity + 1.0),
    ):  # fmt: skip
        rows.append({"operation": name, "bytes": 0, "seconds": 0.0, "mb_per_s": None,
                     "stored_per_byte": per_byte})  # fmt: skip
    return rows


def _row(name: str, nbytes: int, seconds: float) -> Row:
    return {"operation": name, "bytes": nbytes, "seconds": seconds,
            "mb_per_s": mb_per_s(nbytes, seconds)}  # fmt: skip


def _sizes(mode: str, min_size: int, avg_size: int, max_size: int) -> str:
    mib = lambda n: f"{n / MiB:g}M"  # noqa: E731
    return mib(avg_size) if mode == "fixed" else f"{mib(min_size)}/{mib(avg_size)}/{mib(max_size)}"


def _check_sizes(size: int, block: int) -> None:
    if size < 1:
        raise ValueError(f"size must be at least 1 byte, got {size}")
    if block < 1:
        raise ValueError(f"block must be at least 1 byte, got {block}")
