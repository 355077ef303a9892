import os

import pytest

from chunkvault.crypto.envelope import EnvelopeError, blob_generation, open_blob, seal_blob
from chunkvault.crypto.material import MasterKeys
from chunkvault.manifest import (
    KIND,
    ChunkRef,
    Manifest,
    ManifestError,
    new_manifest_name,
    path_key,
)


def keys() -> MasterKeys:
    return MasterKeys.generate(os.urandom(16))


def sample(k: MasterKeys) -> Manifest:
    return Manifest(
        path="photos/2024/holiday café.jpg",
        size=123,
        mtime_ns=1_700_000_000_123_456_789,
        mode=0o100644,
        sha256="ab" * 32,
        chunks=(ChunkRef("cd" * 32, 100, os.urandom(65)), ChunkRef("ef" * 32, 23, os.urandom(65))),
    )


def test_json_round_trip():
    m = sample(keys())
    assert Manifest.from_json(m.to_json()) == m


def test_names_are_opaque_and_stable_per_path():
    k = keys()
    m = sample(k)
    name = new_manifest_name("home", k, m)
    assert name.startswith(f"home/manifests/{path_key(k, m.path)}/")
    assert "photos" not in name and "holiday" not in name
    assert path_key(k, m.path) == path_key(k, m.path) != path_key(keys(), m.path)
    assert new_manifest_name("home", k, m) != name  # versions never collide


def test_sealed_manifest_hides_the_path_and_detects_tampering():
    k = keys()
    m = sample(k)
    blob = seal_blob(k, KIND, "n1", m.to_json())
    assert b"photos" not in blob and "café".encode() not in blob
    assert blob_generation(blob) == 1
    assert Manifest.from_json(open_blob(k, KIND, "n1", blob)) == m
    with pytest.raises(EnvelopeError):
        open_blob(k, KIND, "n2", blob)  # moved to another name
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    with pytest.raises(EnvelopeError):
        open_blob(k, KIND, "n1", bytes(tampered))


def test_rewrapped_changes_only_the_wrapping():
    k = keys()
    from chunkvault.crypto.envelope import seal_chunk

    sealed = seal_chunk(k, b"payload" * 100)
    m = Manifest(
        "f", 700, 0, 0o100600, "00" * 32, (ChunkRef(sealed.chunk_id, 700, sealed.wrapped_dek),)
    )
    gen = k.add_generation()
    again = m.rewrapped(k, gen)
    assert again.chunks[0].wrapped_dek != m.chunks[0].wrapped_dek
    assert (again.path, again.size, again.sha256) == (m.path, m.size, m.sha256)


def test_malformed_manifest_json():
    with pytest.raises(ManifestError):
        Manifest.from_json(b"{}")
    with pytest.raises(ManifestError, match="format"):
        Manifest.from_json(b'{"v": 9}')
