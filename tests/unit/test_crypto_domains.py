"""Chunk-id domains: API chunks get ids under their own key, with the vault's KEKs."""

import hashlib
import hmac
import os

import pytest

from chunkvault.crypto.domains import api_chunk_keys, domain_id_key
from chunkvault.crypto.envelope import EnvelopeError, open_chunk, rewrap_dek, seal_chunk
from chunkvault.crypto.material import MasterKeys

# docs/format.md: HKDF-SHA256(IKM = id_key, no salt, info = "chunkvault/id-key/api-chunks").
VECTOR_ID_KEY = bytes(range(32))
VECTOR_API_ID_KEY = "3a2d4e4a4bb621835a7b0f6fe66f6e91e9642d752b8ee218151c3c0350f39611"


def keys() -> MasterKeys:
    return MasterKeys.generate(os.urandom(16))


def test_domain_id_key_vector() -> None:
    assert domain_id_key(VECTOR_ID_KEY, "api-chunks").hex() == VECTOR_API_ID_KEY
    # RFC 5869 by hand: PRK = HMAC(zeros, IKM); OKM = HMAC(PRK, info | 0x01).
    prk = hmac.new(bytes(32), VECTOR_ID_KEY, hashlib.sha256).digest()
    okm = hmac.new(prk, b"chunkvault/id-key/api-chunks\x01", hashlib.sha256).hexdigest()
    assert okm == VECTOR_API_ID_KEY


def test_api_ids_are_unrelated_to_file_ids_and_stable() -> None:
    base = keys()
    api = api_chunk_keys(base)
    data = b"a file the vault holds"
    assert api.chunk_id(data) != base.chunk_id(data)
    assert api.chunk_id(data) == api_chunk_keys(base).chunk_id(data)  # dedup within the domain
    assert api.chunk_id(data) == hmac.new(api.id_key, data, hashlib.sha256).hexdigest()
    assert api.id_key != base.id_key and len(api.id_key) == 32


def test_a_chunk_opens_only_in_its_own_domain() -> None:
    base = keys()
    api = api_chunk_keys(base)
    data = os.urandom(3000)
    sealed = seal_chunk(api, data)
    assert sealed.chunk_id == api.chunk_id(data)
    assert open_chunk(api, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == data
    # Same KEKs, so the DEK unwraps, but the content check names the domain's id key.
    with pytest.raises(EnvelopeError, match="does not match its id"):
        open_chunk(base, sealed.chunk_id, sealed.body, sealed.wrapped_dek)


def test_the_view_follows_rotation_of_the_vault_keys() -> None:
    base = keys()
    api = api_chunk_keys(base)
    data = os.urandom(500)
    old = seal_chunk(api, data)
    new_gen = base.add_generation()  # what `key rotate-master` does to the loaded keys
    assert api.current == new_gen and api.kek(new_gen) == base.kek(new_gen)
    assert seal_chunk(api, data).generation == new_gen
    # Rotation re-wraps API chunks with the vault keys alone (it knows no domains).
    rewrapped = rewrap_dek(base, old.chunk_id, old.wrapped_dek, new_gen)
    base.drop_generations_except(new_gen)
    assert open_chunk(api, old.chunk_id, old.body, rewrapped) == data


def test_the_view_is_read_only_and_never_serialized() -> None:
    base = keys()
    api = api_chunk_keys(base)
    for change in (api.add_generation, lambda: api.drop_generations_except(1), api.to_bytes):
        with pytest.raises(TypeError):
            change()
    assert base.keks == {1: base.kek(1)} and base.current == 1
    assert api.id_key.hex() not in repr(api) and base.id_key.hex() not in repr(api)
