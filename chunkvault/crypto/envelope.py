"""Chunk envelopes: per-chunk data key (DEK), AES-256-GCM with associated data, and the
DEK wrapped by the current master KEK generation. Pure functions, no I/O.

Layouts (all integers big-endian; specified in docs/format.md):

    chunk body   = version:1 | flags:1 | nonce:12 | AES-GCM(DEK, nonce, inner, AAD_chunk)
    flags        = PADDED (0x02), written since padding exists:
                   inner = pad(encoding:1 | payload), encoding 0 = raw, 1 = zstd
                 = 0x00 or ZSTD (0x01), read only (bodies written before padding):
                   inner = payload
    (crypto/padding.py; the encoding moved inside so peers cannot tell which chunks
    compress, i.e. text from media)
    AAD_chunk    = b"chunkvault/chunk" | version:1 | flags:1 | vault_uuid:16 | chunk_id:64 ascii
    wrapped DEK  = version:1 | generation:4 | nonce:12 | AES-GCM(KEK[gen], nonce, DEK, AAD_dek)
    AAD_dek      = b"chunkvault/dek" | version:1 | generation:4 | vault_uuid:16 | chunk_id

Binding the chunk id into both AADs means an object swapped for another chunk's, or a
DEK copied from another chunk, fails authentication instead of decrypting to the wrong
data; binding the flags means nobody can toggle "compressed" or "padded".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
from dataclasses import dataclass, replace
from functools import cached_property

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chunkvault.crypto import vault_seal
from chunkvault.crypto.errors import EnvelopeError
from chunkvault.crypto.material import SEALED_GENERATION, MasterKeys, MaterialError
from chunkvault.crypto.padding import LENGTH_BYTES, PaddingError, pad, padded_size, unpad

# Chunk envelope version (also the `cv-v` object metadata). Padding arrived as a flag
# rather than a new version: the header layout is the same, and AAD_chunk binds flags.
VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
DEK_BYTES = 32
FLAG_ZSTD = 0x01  # unpadded bodies only; padded ones carry the encoding inside
FLAG_PADDED = 0x02  # every body written since padding exists, and alone
KNOWN_FLAGS = (0x00, FLAG_ZSTD, FLAG_PADDED)
ENCODING_RAW = 0
ENCODING_ZSTD = 1
# Padding floors, each about the smallest typical object of its kind (measured in
# docs/format.md): every chunk of a file under ~1 KiB and every manifest of a file of one
# or two chunks come out the same size.
CHUNK_FLOOR = 1024
BLOB_FLOOR = 512
HEADER_BYTES = 2 + NONCE_BYTES
WRAPPED_DEK_BYTES = 1 + 4 + NONCE_BYTES + DEK_BYTES + TAG_BYTES
# Keep zstd output only when it saves at least this fraction: decompressing costs time
# on restore, and incompressible data (media, archives) grows slightly when "compressed".
MIN_SAVING = 0.03
# Incompressible chunks are told by compressing this much of their start (see
# _sample_compresses).
SAMPLE_BYTES = 64 * 1024
# A chunk never decompresses beyond this; guards restore against decompression bombs.
MAX_PLAINTEXT = 1024 * 1024 * 1024
# zstd contexts are kept per thread for inputs under this size: making one per call
# doubled the cost of compressing a small file (~70 vs ~35 us for 8 KiB; decompressing
# 17 vs 12 us), the same bytes either way. Above it the setup is noise next to the work,
# and a context sized for a large chunk would stay allocated (~1 MiB at 512 KiB).
REUSE_CONTEXT_BELOW = 512 * 1024
_contexts = threading.local()


def _compressor(level: int, size: int) -> zstandard.ZstdCompressor:
    if size >= REUSE_CONTEXT_BELOW:
        return zstandard.ZstdCompressor(level=level, write_content_size=True)
    kept: dict[int, zstandard.ZstdCompressor] | None = getattr(_contexts, "compressors", None)
    if kept is None:
        kept = _contexts.compressors = {}
    if (compressor := kept.get(level)) is None:
        compressor = kept[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return compressor


def _decompressor(size: int) -> zstandard.ZstdDecompressor:
    if not 0 <= size < REUSE_CONTEXT_BELOW:
        return zstandard.ZstdDecompressor()
    kept: zstandard.ZstdDecompressor | None = getattr(_contexts, "decompressor", None)
    if kept is None:
        kept = _contexts.decompressor = zstandard.ZstdDecompressor()
    return kept


def sealed_size_limit(plain_size: int) -> int:
    """The largest body a chunk of ``plain_size`` plaintext bytes can seal to, in any
    format this module reads (padded or not): a cap for reading bodies from peers.
    Compression is kept only when it shrinks the payload, so the payload never exceeds
    the plaintext, and padding is monotonic in the payload size."""
    return HEADER_BYTES + padded_size(1 + plain_size, CHUNK_FLOOR) + TAG_BYTES  # 1: encoding


# Where a chunk's plaintext goes in the buffer :func:`seal_chunk_into` seals in place:
# after the header, the padding's length field and the encoding byte.
PLAIN_OFFSET = HEADER_BYTES + LENGTH_BYTES + 1


@dataclass(frozen=True)
class SealedChunk:
    chunk_id: str
    body: bytes | memoryview  # a view into the sealing buffer for seal_chunk_into
    wrapped_dek: bytes
    generation: int
    plain_size: int
    compressed: bool = False

    @property
    def nonce(self) -> bytes:
        return bytes(self.body[2:HEADER_BYTES])

    @cached_property
    def body_sha256(self) -> str:
        # Cached: the catalog and the object metadata both want it, and it is a full
        # pass over the body.
        return hashlib.sha256(self.body).hexdigest()


def chunk_aad(vault_uuid: bytes, chunk_id: str, flags: int, version: int = VERSION) -> bytes:
    return b"chunkvault/chunk" + bytes([version, flags]) + vault_uuid + chunk_id.encode("ascii")


def dek_aad(vault_uuid: bytes, chunk_id: str, generation: int, version: int = VERSION) -> bytes:
    return (
        b"chunkvault/dek"
        + bytes([version])
        + struct.pack(">I", generation)
        + vault_uuid
        + chunk_id.encode("ascii")
    )


def wrap_dek(
    keys: MasterKeys,
    chunk_id: str,
    dek: bytes,
    generation: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The DEK wrapped by KEK[``generation``] (default: the current one), or, by keys
    that only write (:class:`~chunkvault.crypto.material.WriterKeys`), sealed to the vault
    key (:func:`~chunkvault.crypto.vault_seal.seal_dek`)."""
    if keys.seal_to is not None and generation is None:
        return vault_seal.seal_dek(keys.seal_to, keys.vault_uuid, chunk_id, dek)
    gen = keys.current if generation is None else generation
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    sealed = AESGCM(keys.kek(gen)).encrypt(nonce, dek, dek_aad(keys.vault_uuid, chunk_id, gen))
    return bytes([VERSION]) + struct.pack(">I", gen) + nonce + sealed


def wrapped_generation(wrapped: bytes) -> int:
    """The KEK generation of a wrapped DEK; SEALED_GENERATION (0) for one sealed to the
    vault key. EnvelopeError for anything else."""
    if vault_seal.is_sealed_dek(wrapped):
        return SEALED_GENERATION
    if len(wrapped) != WRAPPED_DEK_BYTES or wrapped[0] != VERSION:
        raise EnvelopeError(f"wrapped data key: bad length {len(wrapped)} or version")
    return struct.unpack(">I", wrapped[1:5])[0]


def unwrap_dek(keys: MasterKeys, chunk_id: str, wrapped: bytes) -> bytes:
    gen = wrapped_generation(wrapped)
    if gen == SEALED_GENERATION:
        if keys.vault_private is None:
            raise EnvelopeError(
                f"chunk {chunk_id[:16]}: its data key is sealed to the vault key, which "
                + ("a write-only host does not hold" if keys.seal_to is not None
                   else "this keyring lacks")
            )  # fmt: skip
        return vault_seal.open_dek(keys.vault_private, keys.vault_uuid, chunk_id, wrapped)
    try:
        kek = keys.kek(gen)
    except MaterialError as exc:
        raise EnvelopeError(str(exc)) from None
    nonce = wrapped[5 : 5 + NONCE_BYTES]
    try:
        return AESGCM(kek).decrypt(
            nonce, wrapped[5 + NONCE_BYTES :], dek_aad(keys.vault_uuid, chunk_id, gen)
        )
    except InvalidTag:
        raise EnvelopeError(f"chunk {chunk_id[:16]}: data key failed authentication") from None


def rewrap_dek(keys: MasterKeys, chunk_id: str, wrapped: bytes, generation: int) -> bytes:
    """Re-wrap a data key under another generation (master-key rotation); no chunk data."""
    return wrap_dek(keys, chunk_id, unwrap_dek(keys, chunk_id, wrapped), generation)


def _maybe_compress(plaintext: bytes | memoryview, level: int) -> tuple[int, bytes | memoryview]:
    if len(plaintext) < 64:
        return ENCODING_RAW, plaintext
    if len(plaintext) > SAMPLE_BYTES and not _sample_compresses(plaintext):
        return ENCODING_RAW, plaintext
    packed = _compressor(level, len(plaintext)).compress(plaintext)
    if len(packed) <= len(plaintext) * (1 - MIN_SAVING):
        return ENCODING_ZSTD, packed
    return ENCODING_RAW, plaintext


def _sample_compresses(plaintext: bytes | memoryview) -> bool:
    """Whether the first SAMPLE_BYTES shrink by MIN_SAVING at zstd's fastest level: a
    chunk of media or ciphertext is then stored raw after compressing 64 KiB, not all of
    it. Only the choice is made here; a chunk that passes is still kept compressed only if
    the whole of it saves MIN_SAVING, so the stored format is the same either way."""
    sample = memoryview(plaintext)[:SAMPLE_BYTES]
    packed = zstandard.ZstdCompressor(level=1).compress(sample)
    return len(packed) <= len(sample) * (1 - MIN_SAVING)


def bounded_decompress(frame: bytes | memoryview, max_size: int) -> bytes:
    """zstd-decompress at most ``max_size`` bytes. python-zstandard honours
    ``max_output_size`` only for frames that do not declare their size: a frame that
    declares 1 GiB is decompressed into 1 GiB whatever the cap (measured). So the declared
    size is checked first; a frame whose output differs from what it declares is an
    error in zstd itself."""
    declared = zstandard.frame_content_size(frame)
    if declared > max_size:  # -1: not declared, and then max_output_size applies
        raise zstandard.ZstdError(f"declares {declared} bytes, more than the {max_size} allowed")
    return _decompressor(declared).decompress(frame, max_output_size=max_size)


def seal_chunk(
    keys: MasterKeys,
    plaintext: bytes | memoryview,
    *,
    compress: bool = True,
    level: int = 3,
    dek: bytes | None = None,
    chunk_id: str | None = None,
    _nonces: tuple[bytes, bytes] | None = None,
) -> SealedChunk:
    """Encrypt one chunk under a fresh random DEK, or under ``dek`` when re-replicating a
    chunk whose wrapped DEK manifests already hold (a fresh nonce keeps GCM safe).
    ``chunk_id``: ``keys.chunk_id(plaintext)`` when the caller has it already (one keyed
    hash of the chunk, not two). ``_nonces`` exists only for the format's test vectors;
    never pass it otherwise. The body is bytes of its own: the push pipeline seals in a
    reused buffer instead (:func:`seal_chunk_into`)."""
    size = len(plaintext)
    buf = bytearray(sealed_size_limit(size))
    buf[PLAIN_OFFSET : PLAIN_OFFSET + size] = plaintext
    sealed = seal_chunk_into(
        keys, buf, size, compress=compress, level=level, dek=dek, chunk_id=chunk_id,
        _nonces=_nonces,
    )  # fmt: skip
    return replace(sealed, body=bytes(sealed.body))


def seal_chunk_into(
    keys: MasterKeys,
    buf: bytearray,
    size: int,
    *,
    compress: bool = True,
    level: int = 3,
    dek: bytes | None = None,
    chunk_id: str | None = None,
    _nonces: tuple[bytes, bytes] | None = None,
) -> SealedChunk:
    """:func:`seal_chunk` of the ``size`` plaintext bytes at ``buf[PLAIN_OFFSET:]``, in
    place: the body is a view of ``buf`` (valid while ``buf`` is not reused), which must
    hold at least ``sealed_size_limit(size)`` bytes. No copy of the chunk is made unless
    it compresses: one buffer carries it from the file to the peers."""
    if len(buf) < sealed_size_limit(size):
        raise ValueError(f"a buffer of {len(buf)} bytes cannot seal {size} bytes in place")
    view = memoryview(buf)
    plaintext = view[PLAIN_OFFSET : PLAIN_OFFSET + size]
    chunk_id = chunk_id or keys.chunk_id(plaintext)
    encoding, payload = _maybe_compress(plaintext, level) if compress else (ENCODING_RAW, plaintext)
    payload_size = len(payload)
    if encoding == ENCODING_ZSTD:  # smaller than the plaintext: it fits where that was
        view[PLAIN_OFFSET : PLAIN_OFFSET + payload_size] = payload
    del payload, plaintext
    # The padded inner = length:4 | encoding:1 | payload | zeros (crypto/padding.py),
    # written around the payload already in place.
    inner = padded_size(1 + payload_size, CHUNK_FLOOR)
    struct.pack_into(">IB", buf, HEADER_BYTES, 1 + payload_size, encoding)
    view[PLAIN_OFFSET + payload_size : HEADER_BYTES + inner] = bytes(
        HEADER_BYTES + inner - PLAIN_OFFSET - payload_size
    )
    dek = dek or os.urandom(DEK_BYTES)
    data_nonce, wrap_nonce = _nonces or (os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES))
    buf[0:2] = bytes([VERSION, FLAG_PADDED])
    buf[2:HEADER_BYTES] = data_nonce
    aad = chunk_aad(keys.vault_uuid, chunk_id, FLAG_PADDED)
    end = HEADER_BYTES + inner + TAG_BYTES
    # In place (OpenSSL's GCM allows input == output): no second chunk-sized buffer.
    AESGCM(dek).encrypt_into(
        data_nonce, view[HEADER_BYTES : HEADER_BYTES + inner], aad, view[HEADER_BYTES:end]
    )
    wrapped = wrap_dek(keys, chunk_id, dek, nonce=wrap_nonce)
    return SealedChunk(chunk_id, view[:end], wrapped, keys.current, size, encoding == ENCODING_ZSTD)


def _encoded_payload(chunk_id: str, flags: int, decrypted: memoryview) -> tuple[int, memoryview]:
    """``(encoding, payload)`` of a decrypted body, padded or from before padding."""
    if flags != FLAG_PADDED:
        return (ENCODING_ZSTD if flags == FLAG_ZSTD else ENCODING_RAW), decrypted
    try:
        inner = unpad(decrypted)
    except PaddingError as exc:
        raise EnvelopeError(f"chunk {chunk_id[:16]}: {exc}") from None
    if not inner or inner[0] not in (ENCODING_RAW, ENCODING_ZSTD):
        raise EnvelopeError(f"chunk {chunk_id[:16]}: unknown payload encoding")
    return inner[0], inner[1:]


def _header_flags(chunk_id: str, body: bytes | memoryview) -> int:
    """The flags of a chunk body whose header is valid; :class:`EnvelopeError` otherwise."""
    if len(body) < HEADER_BYTES + TAG_BYTES:
        raise EnvelopeError(f"chunk {chunk_id[:16]}: object too short ({len(body)} bytes)")
    version, flags = body[0], body[1]
    if version != VERSION:
        raise EnvelopeError(f"chunk {chunk_id[:16]}: unsupported format version {version}")
    if flags not in KNOWN_FLAGS:
        raise EnvelopeError(f"chunk {chunk_id[:16]}: unknown flags {flags:#04x}")
    return flags


def open_chunk_into(
    keys: MasterKeys,
    chunk_id: str,
    body: memoryview,
    dek: bytes,
    max_size: int = MAX_PLAINTEXT,
    *,
    check_id: bool = True,
) -> memoryview:
    """Authenticate and decrypt a chunk *in place*; the plaintext, verified against its
    id, as a view of ``body`` (of a new buffer for a zstd chunk). ``dek``: the unwrapped
    data key (:func:`unwrap_dek`). Restore reads each body into a reused slab and writes
    the file from this view: no fresh chunk-sized buffer on the way.

    On :class:`EnvelopeError` the body may be overwritten with garbage (GCM decrypts
    before the tag is known to be bad): read it again before trying another data key.

    ``check_id``: hash the plaintext to its id under these keys' id key. Not for a chunk
    whose DEK is sealed to the vault key (:func:`checks_id`): a write-only host names its
    chunks in an id domain of its own, which the owner does not hold. The AEAD tag (the
    AAD binds the id) and the file's SHA-256 at restore still authenticate it."""
    flags = _header_flags(chunk_id, body)
    sealed = body[HEADER_BYTES:]
    decrypted = sealed[: len(sealed) - TAG_BYTES]
    try:
        AESGCM(dek).decrypt_into(
            body[2:HEADER_BYTES].tobytes(),
            sealed,
            chunk_aad(keys.vault_uuid, chunk_id, flags),
            decrypted,
        )
    except InvalidTag:
        raise EnvelopeError(f"chunk {chunk_id[:16]}: ciphertext failed authentication") from None
    encoding, packed = _encoded_payload(chunk_id, flags, decrypted)
    payload = packed
    if encoding == ENCODING_ZSTD:
        try:
            payload = memoryview(bounded_decompress(packed, max_size))
        except zstandard.ZstdError as exc:
            raise EnvelopeError(f"chunk {chunk_id[:16]}: bad compressed payload: {exc}") from None
    # Defence in depth: the content must hash to its id (catches our own bugs, too).
    if check_id and not hmac.compare_digest(keys.chunk_id(payload), chunk_id):  # type: ignore[arg-type]
        raise EnvelopeError(f"chunk {chunk_id[:16]}: content does not match its id")
    return payload


def open_chunk(
    keys: MasterKeys, chunk_id: str, body: bytes, wrapped_dek: bytes, max_size: int = MAX_PLAINTEXT
) -> bytes:
    """Authenticate and decrypt a chunk; raise :class:`EnvelopeError` on any mismatch.
    Copies: for callers holding a ``bytes`` body (restore uses :func:`open_chunk_into`)."""
    _header_flags(chunk_id, body)
    dek = unwrap_dek(keys, chunk_id, wrapped_dek)
    view = memoryview(bytearray(body))
    return bytes(open_chunk_into(keys, chunk_id, view, dek, max_size,
                                 check_id=checks_id(wrapped_dek)))  # fmt: skip


def checks_id(wrapped_dek: bytes) -> bool:
    """Whether opening a chunk with this wrapped DEK can check its content against its id:
    not when the DEK is sealed to the vault key (a write-only host's id domain)."""
    return not vault_seal.is_sealed_dek(wrapped_dek)


# --- blobs: manifests and other small named objects --------------------------------------
#
#   blob  = version:1 | wrapped DEK:65 | nonce:12 | AES-GCM(DEK, nonce, inner, AAD_b)
#   inner = pad(zstd(payload)) in version 2 (written), zstd(payload) in version 1 (read)
#   AAD_b = b"chunkvault/blob/" kind | version:1 | vault_uuid:16 | name (utf-8)
# The DEK is wrapped like a chunk's, with "<kind>:<name>" in place of the chunk id, so a
# blob can never be opened as a chunk (or as another blob) and rotation re-wraps it alike.
# The version is in AAD_b, so a padded blob cannot be passed off as an unpadded one.

BLOB_VERSION = 2
BLOB_VERSIONS = (1, 2)
BLOB_OVERHEAD = 1 + WRAPPED_DEK_BYTES + NONCE_BYTES + TAG_BYTES


def _blob_aad(keys: MasterKeys, kind: str, name: str, version: int) -> bytes:
    return f"chunkvault/blob/{kind}".encode() + bytes([version]) + keys.vault_uuid + name.encode()


def seal_blob(keys: MasterKeys, kind: str, name: str, payload: bytes) -> bytes:
    packed = _compressor(3, len(payload)).compress(payload)
    return seal_packed_blob(keys, kind, name, packed)


def seal_packed_blob(
    keys: MasterKeys,
    kind: str,
    name: str,
    packed: bytes,
    *,
    _secrets: tuple[bytes, bytes, bytes] | None = None,
) -> bytes:
    """Seal an already zstd-compressed payload. ``_secrets`` (DEK, data nonce, wrap nonce)
    exists only for the format's test vectors; never pass it otherwise."""
    dek, nonce, wrap_nonce = _secrets or (
        os.urandom(DEK_BYTES),
        os.urandom(NONCE_BYTES),
        os.urandom(NONCE_BYTES),
    )
    aad = _blob_aad(keys, kind, name, BLOB_VERSION)
    sealed = AESGCM(dek).encrypt(nonce, pad(packed, floor=BLOB_FLOOR), aad)
    wrapped = wrap_dek(keys, f"{kind}:{name}", dek, nonce=wrap_nonce)
    return bytes([BLOB_VERSION]) + wrapped + nonce + sealed


def blob_generation(blob: bytes) -> int:
    """The KEK generation of a blob's data key (same place in every blob version)."""
    return wrapped_generation(blob[1 : 1 + WRAPPED_DEK_BYTES])


def open_blob(
    keys: MasterKeys, kind: str, name: str, blob: bytes, max_size: int = 256 << 20
) -> bytes:
    if len(blob) < BLOB_OVERHEAD or blob[0] not in BLOB_VERSIONS:
        raise EnvelopeError(f"{kind} {name}: not a blob of version {BLOB_VERSIONS}")
    version = blob[0]
    wrapped = blob[1 : 1 + WRAPPED_DEK_BYTES]
    dek = unwrap_dek(keys, f"{kind}:{name}", wrapped)
    start = 1 + WRAPPED_DEK_BYTES
    try:
        decrypted = AESGCM(dek).decrypt(
            blob[start : start + NONCE_BYTES],
            blob[start + NONCE_BYTES :],
            _blob_aad(keys, kind, name, version),
        )
        frame = unpad(decrypted) if version >= 2 else decrypted
        return bounded_decompress(frame, max_size)
    except InvalidTag:
        raise EnvelopeError(f"{kind} {name}: failed authentication") from None
    except PaddingError as exc:
        raise EnvelopeError(f"{kind} {name}: {exc}") from None
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"{kind} {name}: bad compressed payload: {exc}") from None
