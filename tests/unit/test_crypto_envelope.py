"""Chunk and blob envelope formats: pinned test vectors, padding, tamper detection."""

import hashlib
import hmac
import os
import struct
import threading

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkvault.crypto import envelope, vault_seal
from chunkvault.crypto.envelope import (
    BLOB_FLOOR,
    CHUNK_FLOOR,
    FLAG_PADDED,
    FLAG_ZSTD,
    HEADER_BYTES,
    PLAIN_OFFSET,
    TAG_BYTES,
    EnvelopeError,
    blob_generation,
    checks_id,
    open_blob,
    open_chunk,
    open_chunk_into,
    rewrap_dek,
    seal_blob,
    seal_chunk,
    seal_chunk_into,
    seal_packed_blob,
    sealed_size_limit,
    unwrap_dek,
    wrap_dek,
    wrapped_generation,
)
from chunkvault.crypto.material import (
    SEALED_GENERATION,
    MasterKeys,
    MaterialError,
    TrustedWriter,
    WriterKeys,
    keys_from_bytes,
)

UUID = bytes(range(16))
PLAIN = b"chunkvault test vector\n" * 4
DEK, DATA_NONCE, WRAP_NONCE = b"\x03" * 32, b"\x04" * 12, b"\x05" * 12

# Fixed keys and nonces pin every byte of the unpadded chunk body (flags 0x00), written
# until padding arrived and still read (docs/format.md).
VECTOR_ID = "350ddbd3ae4631b4009f9eee462c053341ec0393dcc30abf1a32291619cd8fe3"
VECTOR_BODY = (
    "0100040404040404040404040404234f66a3c6e8666bf560a02a14274d50e719ec182cb14d81401d69fa55"
    "ef9c30d75940b93227c8317c51f4735fbe8ffedc3f7093a2d8a74cdea1cef123576eb6057a06fb657f8c2b"
    "0ca69f955de872b2790f2e77acee4c55f630dbe0e5f14db17c703e66bccb3cdcec238ec3"
)
VECTOR_WRAPPED = (
    "01000000010505050505050505050505052b536d0ea37e35486351dafb4ca235d5a88876dd08bdb7760ac2"
    "2e2e75bf0b0e290c4f8c6fe42e71b6fc8700ca24d8b4"
)


# The padded body (flags 0x02) of the same inputs: 14 + 1024 + 16 bytes.
PADDED_BODY_SHA256 = "d93cd2f767c9517ea7e8787cb757479f3dbc92cd54199a53d7ea06b8fa4bdf67"
PADDED_BODY_HEAD = "0102040404040404040404040404"
PADDED_BODY_TAG = "c3ca5176a0e1d496ac070d0562015757"

# Blobs (manifests). Version 1 was written by the unpadded writer (commit b814b99) with
# the fixed DEK and nonces above; version 2 seals the same zstd frame, padded.
BLOB_NAME = "home/manifests/00112233445566778899aabbccddeeff/00000001780000000000-0a0b0c0d"
BLOB_PAYLOAD = b'{"v":1,"path":"docs/test vector.txt","chunks":[]}'
BLOB_FRAME = (
    "28b52ffd20318901007b2276223a312c2270617468223a22646f63732f7465737420766563746f722e"
    "747874222c226368756e6b73223a5b5d7d"
)
BLOB_V1 = (
    "0101000000010505050505050505050505052b536d0ea37e35486351dafb4ca235d5a88876dd08bdb776"
    "0ac22e2e75bf0b0e8f69886a682a05113974e50fbc6779cc04040404040404040404040468923c308daf"
    "8e1f996fa228536e085cb30cee182be17dc04c0764e20cfa8c2fd75942b9222787353746f8680f98cef5"
    "c124758eb08ff163a3a8ff69cc95099a2ff031b65101f084ea0a"
)
BLOB_V2_SHA256 = "0631d8a20b8239a18492730150fdc739e6bce61eedec28e9202bf86f9ca373b7"


def fixed_keys() -> MasterKeys:
    return MasterKeys(UUID, b"\x01" * 32, {1: b"\x02" * 32}, 1)


def test_unpadded_vector_still_opens():
    """Vaults hold bodies written before padding: they must keep opening."""
    keys = fixed_keys()
    assert hmac.new(b"\x01" * 32, PLAIN, hashlib.sha256).hexdigest() == VECTOR_ID
    body = bytes.fromhex(VECTOR_BODY)
    assert body[1] == 0 and len(body) == HEADER_BYTES + len(PLAIN) + TAG_BYTES
    assert open_chunk(keys, VECTOR_ID, body, bytes.fromhex(VECTOR_WRAPPED)) == PLAIN
    assert len(body) <= sealed_size_limit(len(PLAIN))


def test_padded_vector_pins_the_format():
    keys = fixed_keys()
    sealed = seal_chunk(keys, PLAIN, compress=False, dek=DEK, _nonces=(DATA_NONCE, WRAP_NONCE))
    assert sealed.chunk_id == VECTOR_ID
    assert sealed.wrapped_dek.hex() == VECTOR_WRAPPED  # wrapping did not change
    body = sealed.body
    assert (body[:HEADER_BYTES].hex(), body[-TAG_BYTES:].hex()) == (
        PADDED_BODY_HEAD,
        PADDED_BODY_TAG,
    )
    assert hashlib.sha256(body).hexdigest() == PADDED_BODY_SHA256
    assert len(body) == HEADER_BYTES + CHUNK_FLOOR + TAG_BYTES == 1054
    # docs/format.md, written out with the primitive itself: the spec and the code agree.
    # inner = length:4 | encoding:1 (0 = raw) | payload | zeros, length = 1 + len(payload)
    inner = struct.pack(">I", 1 + len(PLAIN)) + b"\0" + PLAIN + bytes(CHUNK_FLOOR - 5 - len(PLAIN))
    aad = b"chunkvault/chunk" + bytes([1, FLAG_PADDED]) + UUID + VECTOR_ID.encode()
    assert body == bytes([1, FLAG_PADDED]) + DATA_NONCE + AESGCM(DEK).encrypt(
        DATA_NONCE, inner, aad
    )
    assert open_chunk(keys, VECTOR_ID, body, sealed.wrapped_dek) == PLAIN


def test_blob_vectors_v1_opens_and_v2_pins_the_format():
    keys = fixed_keys()
    v1 = bytes.fromhex(BLOB_V1)
    assert open_blob(keys, "manifest", BLOB_NAME, v1) == BLOB_PAYLOAD
    assert blob_generation(v1) == 1
    frame = bytes.fromhex(BLOB_FRAME)
    assert zstandard.ZstdDecompressor().decompress(frame) == BLOB_PAYLOAD
    v2 = seal_packed_blob(
        keys, "manifest", BLOB_NAME, frame, _secrets=(DEK, DATA_NONCE, WRAP_NONCE)
    )
    assert hashlib.sha256(v2).hexdigest() == BLOB_V2_SHA256
    assert len(v2) == 1 + 65 + 12 + BLOB_FLOOR + 16 == 606
    assert v2[0] == 2 and v2[1:66] == v1[1:66]  # same wrapped DEK, new version byte
    inner = struct.pack(">I", len(frame)) + frame + bytes(BLOB_FLOOR - 4 - len(frame))
    aad = b"chunkvault/blob/manifest" + bytes([2]) + UUID + BLOB_NAME.encode()
    assert v2[66:] == DATA_NONCE + AESGCM(DEK).encrypt(DATA_NONCE, inner, aad)
    assert open_blob(keys, "manifest", BLOB_NAME, v2) == BLOB_PAYLOAD
    assert blob_generation(v2) == 1


def test_blob_version_is_bound_and_unknown_versions_are_refused():
    keys = fixed_keys()
    v1, v2 = bytes.fromhex(BLOB_V1), seal_blob(keys, "manifest", BLOB_NAME, BLOB_PAYLOAD)
    for blob, other in ((v1, 2), (v2, 1)):  # relabelled: the AAD differs, so it fails
        with pytest.raises(EnvelopeError, match="failed authentication"):
            open_blob(keys, "manifest", BLOB_NAME, bytes([other]) + blob[1:])
    for version in (0, 3, 255):
        with pytest.raises(EnvelopeError, match="not a blob of version"):
            open_blob(keys, "manifest", BLOB_NAME, bytes([version]) + v2[1:])
    with pytest.raises(EnvelopeError):
        open_blob(keys, "manifest", BLOB_NAME, v2[:-1])


def test_compression_only_when_it_pays_and_peers_cannot_tell():
    keys = MasterKeys.generate(UUID)
    text = seal_chunk(keys, b"abc" * 10000)
    assert text.compressed and len(text.body) == HEADER_BYTES + CHUNK_FLOOR + TAG_BYTES
    noise = seal_chunk(keys, os.urandom(100_000))
    assert not noise.compressed
    # The encoding is inside the ciphertext: the clear header is the same for both.
    assert text.body[:2] == noise.body[:2] == bytes([1, FLAG_PADDED])
    off = seal_chunk(keys, b"abc" * 10000, compress=False)
    assert not off.compressed
    for sealed, plain in ((text, b"abc" * 10000), (off, b"abc" * 10000)):
        assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == plain


def test_each_seal_uses_a_fresh_data_key_and_nonce():
    keys = MasterKeys.generate(UUID)
    a, b = seal_chunk(keys, PLAIN), seal_chunk(keys, PLAIN)
    assert a.chunk_id == b.chunk_id  # dedup works on ids...
    assert a.body != b.body and a.wrapped_dek != b.wrapped_dek  # ...not on ciphertexts


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000), st.booleans())
def test_round_trip_any_bytes(data, compress):
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, data, compress=compress)
    assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == data


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("index", [0, 1, 2, 13, 14, 40, -1])
def test_flipped_body_byte_is_detected(index):
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN * 10)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, sealed.chunk_id, flip(sealed.body, index), sealed.wrapped_dek)


@pytest.mark.parametrize("index", [0, 4, 5, 16, 17, 40, -1])
def test_flipped_wrapped_dek_byte_is_detected(index):
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, sealed.chunk_id, sealed.body, flip(sealed.wrapped_dek, index))


def test_swapped_objects_and_foreign_keys_are_detected():
    keys = MasterKeys.generate(UUID)
    a, b = seal_chunk(keys, b"first chunk" * 50), seal_chunk(keys, b"second chunk" * 50)
    # b's object (body + DEK) stored under a's id: AAD binds the id, so it fails.
    with pytest.raises(EnvelopeError):
        open_chunk(keys, a.chunk_id, b.body, b.wrapped_dek)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, a.chunk_id, a.body, b.wrapped_dek)
    # Another vault with the same KEK bytes (uuid differs) cannot open it either.
    other = MasterKeys(os.urandom(16), keys.id_key, dict(keys.keks), keys.current)
    with pytest.raises(EnvelopeError):
        open_chunk(other, a.chunk_id, a.body, a.wrapped_dek)
    # A padded body never carries the compressed flag...
    body = bytearray(a.body)
    body[1] ^= FLAG_ZSTD
    with pytest.raises(EnvelopeError, match="unknown flags 0x03"):
        open_chunk(keys, a.chunk_id, bytes(body), a.wrapped_dek)


@pytest.mark.parametrize("flags", [FLAG_ZSTD, FLAG_PADDED])
def test_flags_of_an_unpadded_body_are_bound_by_the_aad(flags):
    # ...and on bodies from before padding, flags are in the AAD: toggling fails.
    body = bytearray.fromhex(VECTOR_BODY)
    body[1] = flags
    with pytest.raises(EnvelopeError, match="authentication"):
        open_chunk(fixed_keys(), VECTOR_ID, bytes(body), bytes.fromhex(VECTOR_WRAPPED))


def test_truncated_and_unknown_versions_are_rejected():
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    with pytest.raises(EnvelopeError, match="too short"):
        open_chunk(keys, sealed.chunk_id, sealed.body[:20], sealed.wrapped_dek)
    with pytest.raises(EnvelopeError, match="version"):
        open_chunk(keys, sealed.chunk_id, b"\x09" + sealed.body[1:], sealed.wrapped_dek)
    with pytest.raises(EnvelopeError, match="flags"):
        open_chunk(keys, sealed.chunk_id, b"\x01\x80" + sealed.body[2:], sealed.wrapped_dek)
    with pytest.raises(EnvelopeError):
        open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek[:-1])


def test_rewrap_moves_a_data_key_to_a_new_generation_without_touching_the_body():
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    new_gen = keys.add_generation()
    rewrapped = rewrap_dek(keys, sealed.chunk_id, sealed.wrapped_dek, new_gen)
    assert wrapped_generation(rewrapped) == new_gen == 2
    keys.drop_generations_except(new_gen)
    assert open_chunk(keys, sealed.chunk_id, sealed.body, rewrapped) == PLAIN
    with pytest.raises(EnvelopeError, match="generation 1"):
        open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek)


# --- padding inside the AEAD ----------------------------------------------------------------


def test_small_chunks_all_seal_to_the_floor_size():
    keys = MasterKeys.generate(UUID)
    sizes = {len(seal_chunk(keys, os.urandom(n)).body) for n in (0, 1, 49, 200, 1000, 1019)}
    assert sizes == {HEADER_BYTES + CHUNK_FLOOR + TAG_BYTES}
    assert len(seal_chunk(keys, os.urandom(1020)).body) == HEADER_BYTES + 1088 + TAG_BYTES


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=70_000), st.booleans())
def test_sealed_size_limit_bounds_every_body(data, compress):
    keys = MasterKeys.generate(UUID)
    body = seal_chunk(keys, data, compress=compress).body
    assert len(body) <= sealed_size_limit(len(data))
    if not compress:
        assert len(body) == sealed_size_limit(len(data))  # the bound is tight
    # Within Padmé's bound of the unpadded body (above the floor).
    if len(data) > CHUNK_FLOOR:
        assert len(body) < (HEADER_BYTES + 5 + len(data) + TAG_BYTES) * 1.0625


def test_padded_flag_is_bound_by_the_aad():
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN)
    assert sealed.body[1] & FLAG_PADDED
    body = bytearray(sealed.body)
    body[1] ^= FLAG_PADDED
    with pytest.raises(EnvelopeError, match="authentication"):
        open_chunk(keys, sealed.chunk_id, bytes(body), sealed.wrapped_dek)


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (struct.pack(">I", len(PLAIN) + 2) + b"\0" + PLAIN, "exceeds"),
        (struct.pack(">I", len(PLAIN) + 1) + b"\0" + PLAIN + b"\0\x01" + bytes(99), "not zero"),
        (b"\0\0", "too short"),
        (struct.pack(">I", 0) + bytes(1019), "unknown payload encoding"),
        (struct.pack(">I", len(PLAIN) + 1) + b"\x02" + PLAIN + bytes(100), "unknown payload"),
    ],
)
def test_malformed_padding_under_a_valid_tag_is_refused(inner, message):
    # Only a key holder can produce these (the tag is valid); still never mis-decoded.
    keys = fixed_keys()
    sealed = seal_chunk(keys, PLAIN, compress=False, dek=DEK)
    aad = b"chunkvault/chunk" + bytes([1, FLAG_PADDED]) + UUID + sealed.chunk_id.encode()
    body = bytes([1, FLAG_PADDED]) + DATA_NONCE + AESGCM(DEK).encrypt(DATA_NONCE, inner, aad)
    with pytest.raises(EnvelopeError, match=message):
        open_chunk(keys, sealed.chunk_id, body, sealed.wrapped_dek)


def test_blobs_are_padded_and_small_ones_look_alike():
    keys = MasterKeys.generate(UUID)
    sizes = {len(seal_blob(keys, "manifest", "n", os.urandom(n))) for n in (0, 10, 300, 480)}
    assert sizes == {1 + 65 + 12 + BLOB_FLOOR + 16}
    big = os.urandom(50_000)
    blob = seal_blob(keys, "manifest", "n", big)
    assert open_blob(keys, "manifest", "n", blob) == big
    assert len(blob) < (1 + 65 + 12 + 4 + 50_020 + 16) * 1.0625


def test_incompressible_chunk_skips_zstd_after_a_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Random (media-like) data is stored raw after compressing only a 64 KiB sample, not
    the whole chunk; compressible data is still compressed, in the same format."""
    from chunkvault.crypto import envelope

    compressed: list[int] = []
    real = zstandard.ZstdCompressor

    class Counting:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._inner = real(*args, **kwargs)

        def compress(self, data: bytes | memoryview) -> bytes:
            compressed.append(len(data))
            return self._inner.compress(data)

    monkeypatch.setattr(envelope.zstandard, "ZstdCompressor", Counting)
    keys = MasterKeys.generate(UUID)
    noise = os.urandom(4 * 1024 * 1024)
    sealed = seal_chunk(keys, noise)
    assert not sealed.compressed
    assert compressed == [envelope.SAMPLE_BYTES]  # the sample only
    assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == noise

    compressed.clear()
    text = b"the same line of text, again and again\n" * 100_000
    sealed = seal_chunk(keys, text)
    assert sealed.compressed
    assert compressed == [envelope.SAMPLE_BYTES, len(text)]
    assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == text


@pytest.mark.parametrize(
    "plain", [PLAIN, b"abc" * 20_000, os.urandom(70_000)], ids=["floor", "zstd", "raw"]
)
def test_sealing_in_a_reused_buffer_is_byte_identical_to_sealing_afresh(plain):
    """The push pipeline seals in slabs that held other chunks: stale bytes in the
    padding or past the body must never reach the output."""
    keys = fixed_keys()
    fresh = seal_chunk(keys, plain, dek=DEK, _nonces=(DATA_NONCE, WRAP_NONCE))
    buf = bytearray(b"\xee" * (sealed_size_limit(len(plain)) + 4096))  # a dirty slab
    buf[PLAIN_OFFSET : PLAIN_OFFSET + len(plain)] = plain
    sealed = seal_chunk_into(keys, buf, len(plain), dek=DEK, _nonces=(DATA_NONCE, WRAP_NONCE))
    assert bytes(sealed.body) == fresh.body
    assert sealed.body_sha256 == hashlib.sha256(fresh.body).hexdigest()
    assert open_chunk(keys, sealed.chunk_id, bytes(sealed.body), sealed.wrapped_dek) == plain


def test_sealing_in_place_refuses_a_buffer_too_small():
    keys = fixed_keys()
    with pytest.raises(ValueError, match="cannot seal"):
        seal_chunk_into(keys, bytearray(100), 100)


# -- opening in place (restore: one buffer per chunk from GET to write) ---------------------


def body_in_slab(body: bytes, slack: int = 100) -> tuple[bytearray, memoryview]:
    slab = bytearray(body) + bytearray(b"\x77" * slack)
    return slab, memoryview(slab)[: len(body)]


@pytest.mark.parametrize("size", [0, 10, 5000, 300_000])
def test_open_chunk_into_decrypts_in_place_and_returns_a_view_of_the_body(size):
    keys = MasterKeys.generate(UUID)
    data = os.urandom(size)
    sealed = seal_chunk(keys, data)
    assert not sealed.compressed
    slab, body = body_in_slab(sealed.body)
    dek = unwrap_dek(keys, sealed.chunk_id, sealed.wrapped_dek)
    plain = open_chunk_into(keys, sealed.chunk_id, body, dek)
    assert plain == data
    assert plain.obj is slab  # no copy: the plaintext is where the ciphertext was
    start = HEADER_BYTES + 4 + 1  # length field and encoding byte
    assert slab[start : start + size] == data and slab[-100:] == b"\x77" * 100


def test_open_chunk_into_decompresses_a_zstd_chunk_into_a_buffer_of_its_own():
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN * 200)
    assert sealed.compressed
    slab, body = body_in_slab(sealed.body)
    dek = unwrap_dek(keys, sealed.chunk_id, sealed.wrapped_dek)
    plain = open_chunk_into(keys, sealed.chunk_id, body, dek)
    assert plain == PLAIN * 200 and plain.obj is not slab


def test_open_chunk_into_opens_the_unpadded_format_too():
    keys = fixed_keys()
    body = memoryview(bytearray.fromhex(VECTOR_BODY))
    dek = unwrap_dek(keys, VECTOR_ID, bytes.fromhex(VECTOR_WRAPPED))
    assert open_chunk_into(keys, VECTOR_ID, body, dek) == PLAIN


def test_a_wrong_data_key_fails_and_spends_the_body():
    """The reader relies on this: after a failed key the body must be read again."""
    keys = MasterKeys.generate(UUID)
    sealed = seal_chunk(keys, PLAIN * 10, compress=False)
    _, body = body_in_slab(sealed.body)
    with pytest.raises(EnvelopeError, match="failed authentication"):
        open_chunk_into(keys, sealed.chunk_id, body, os.urandom(32))
    assert bytes(body[:HEADER_BYTES]) == sealed.body[:HEADER_BYTES]  # header untouched
    assert bytes(body) != sealed.body
    dek = unwrap_dek(keys, sealed.chunk_id, sealed.wrapped_dek)
    with pytest.raises(EnvelopeError):
        open_chunk_into(keys, sealed.chunk_id, body, dek)  # the right key, too late


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (struct.pack(">I", len(PLAIN) + 2) + b"\0" + PLAIN, "exceeds"),
        (struct.pack(">I", len(PLAIN) + 1) + b"\0" + PLAIN + b"\0\x01" + bytes(99), "not zero"),
        (b"\0\0", "too short"),
    ],
)
def test_open_chunk_into_refuses_malformed_padding_like_open_chunk(inner, message):
    keys = fixed_keys()
    sealed = seal_chunk(keys, PLAIN, compress=False, dek=DEK)
    aad = b"chunkvault/chunk" + bytes([1, FLAG_PADDED]) + UUID + sealed.chunk_id.encode()
    body = bytes([1, FLAG_PADDED]) + DATA_NONCE + AESGCM(DEK).encrypt(DATA_NONCE, inner, aad)
    with pytest.raises(EnvelopeError, match=message):
        open_chunk_into(keys, sealed.chunk_id, memoryview(bytearray(body)), DEK)


def test_a_frame_declaring_more_than_the_cap_is_refused_before_it_is_inflated():
    """python-zstandard ignores max_output_size for frames that declare their size, so a
    2 MiB frame opened with a 1 MiB cap used to come back whole (a key holder's bomb)."""
    keys = MasterKeys.generate(UUID)
    data = b"a" * (2 << 20)
    sealed = seal_chunk(keys, data)
    assert sealed.compressed
    assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == data
    with pytest.raises(EnvelopeError, match="declares"):
        open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek, max_size=1 << 20)
    blob = seal_blob(keys, "manifest", "m", data)
    assert open_blob(keys, "manifest", "m", blob) == data
    with pytest.raises(EnvelopeError, match="declares"):
        open_blob(keys, "manifest", "m", blob, max_size=1 << 20)


def test_zstd_contexts_are_kept_per_thread_for_small_inputs_and_change_no_byte() -> None:
    """A context per thread (not per call) for what is under REUSE_CONTEXT_BELOW: the same
    frames as a fresh context, none shared between threads, none kept for a large chunk."""
    small = b"small and compressible " * 300
    assert envelope._compressor(3, len(small)) is envelope._compressor(3, len(small))
    assert envelope._compressor(3, len(small)) is not envelope._compressor(1, len(small))
    big = envelope.REUSE_CONTEXT_BELOW
    assert envelope._compressor(3, big) is not envelope._compressor(3, big)
    fresh = zstandard.ZstdCompressor(level=3, write_content_size=True)
    for data in (small, os.urandom(2000) + small, small[:100]):
        kept = envelope._compressor(3, len(data)).compress(data)
        assert kept == fresh.compress(data)
        assert envelope.bounded_decompress(kept, len(data)) == data
        # A frame that fails leaves the kept context fit for the next one.
        with pytest.raises(zstandard.ZstdError):
            envelope.bounded_decompress(kept[: len(kept) // 2] + bytes(8), len(data))
        assert envelope.bounded_decompress(kept, len(data)) == data
    here = envelope._compressor(3, 10), envelope._decompressor(10)
    there: list[object] = []
    thread = threading.Thread(
        target=lambda: there.extend((envelope._compressor(3, 10), envelope._decompressor(10)))
    )
    thread.start()
    thread.join()
    assert here[0] is not there[0] and here[1] is not there[1]
    assert envelope._decompressor(10) is here[1]
    assert envelope._decompressor(-1) is not envelope._decompressor(-1)  # size not declared


# -- keys that only write (a writer credential's, issue 14) -----------------------------------


def _writer_and_owner() -> tuple[WriterKeys, MasterKeys]:
    private, public = vault_seal.new_key_pair()
    owner = MasterKeys.generate(os.urandom(16))
    owner.vault_private = private
    writer = WriterKeys(owner.vault_uuid, os.urandom(32), {}, SEALED_GENERATION, seal_to=public,
                        writer_id="01020304", writer_key=os.urandom(32))  # fmt: skip
    return writer, owner


def test_a_writer_seals_chunks_the_owner_opens_and_it_cannot() -> None:
    writer, owner = _writer_and_owner()
    plaintext = b"what a write-only host stores " * 100
    sealed = seal_chunk(writer, plaintext)
    assert sealed.generation == SEALED_GENERATION == wrapped_generation(sealed.wrapped_dek)
    assert vault_seal.is_sealed_dek(sealed.wrapped_dek) and not checks_id(sealed.wrapped_dek)
    # The owner opens it; the content is not hashed to its id (the writer's own id key).
    assert open_chunk(owner, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == plaintext
    with pytest.raises(EnvelopeError, match="write-only host does not hold"):
        open_chunk(writer, sealed.chunk_id, sealed.body, sealed.wrapped_dek)
    with pytest.raises(EnvelopeError, match="this keyring lacks"):
        open_chunk(MasterKeys.generate(owner.vault_uuid), sealed.chunk_id, sealed.body,
                   sealed.wrapped_dek)  # fmt: skip
    # Bound to its chunk: a sealed DEK copied to another id does not open.
    with pytest.raises(EnvelopeError):
        unwrap_dek(owner, "cd" * 32, sealed.wrapped_dek)
    # Re-wrapping under a KEK (rotation) is the owner's, never the writer's.
    assert unwrap_dek(owner, sealed.chunk_id, rewrap_dek(owner, sealed.chunk_id,
                                                         sealed.wrapped_dek, 1)) == unwrap_dek(
        owner, sealed.chunk_id, sealed.wrapped_dek)  # fmt: skip
    with pytest.raises(MaterialError):
        wrap_dek(writer, sealed.chunk_id, b"k" * 32, generation=1)


def test_writer_keys_reach_a_seal_worker_as_they_are_and_never_print() -> None:
    writer, _ = _writer_and_owner()
    again = keys_from_bytes(writer.vault_uuid, writer.to_bytes())
    assert isinstance(again, WriterKeys)
    assert (again.id_key, again.seal_to, again.writer_id, again.writer_key) == (
        writer.id_key, writer.seal_to, writer.writer_id, writer.writer_key)  # fmt: skip
    assert writer.writer_key.hex() not in repr(writer) and writer.id_key.hex() not in repr(writer)
    owner = MasterKeys.generate(writer.vault_uuid)
    assert keys_from_bytes(owner.vault_uuid, owner.to_bytes()).keks == owner.keks
    # A domain view over writer keys seals to the vault key too (POST /upload chunks).
    from chunkvault.crypto.domains import api_chunk_keys

    api = api_chunk_keys(writer)
    assert api.seal_to == writer.seal_to and api.id_key != writer.id_key
    assert vault_seal.is_sealed_dek(seal_chunk(api, b"api chunk").wrapped_dek)


def test_a_revocation_trusts_what_was_dated_before_it() -> None:
    at = 1_796_040_000 * 10**9  # 2026-11-30T12:00:00Z
    trusted = TrustedWriter(b"k" * 32, at)
    assert trusted.trusts_at(at - 1) and not trusted.trusts_at(at)
    assert TrustedWriter(b"k" * 32).trusts_at(at * 2)
