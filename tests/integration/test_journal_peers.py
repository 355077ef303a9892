"""Manifest batches on real HTTP S3 peers (moto_server): written once for many versions,
listed apart from manifest objects, read past peers that lie, and re-sealed by
`key rotate-master` (a CLI subprocess) without touching a pack."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.cli import run_cli, write_config
from support.hostile_proxy import HostileProxy, endless_listing, huge_body
from support.moto_peers import MotoPeers, unique_bucket

from chunkvault.config import load_config
from chunkvault.crypto.envelope import (
    blob_generation,
    open_chunk,
    seal_blob,
    seal_chunk,
    wrapped_generation,
)
from chunkvault.crypto.material import MasterKeys
from chunkvault.journal import KIND, BatchEntry, JournalStore, new_batch_name
from chunkvault.keystore import KeyStore
from chunkvault.layout import chunk_key, chunk_metadata
from chunkvault.manifest import ChunkRef, Manifest, ManifestStore, new_manifest_name
from chunkvault.peerset import PlacedPeer, open_peer_set

PW = {"CHUNKVAULT_PASSPHRASE": "journal passphrase"}
MiB = 1024 * 1024


def init(tmp_path: Path, endpoints: list[str]) -> Path:
    config = write_config(tmp_path / "cv.yaml", endpoints, unique_bucket())
    result = run_cli(config, "init", env=PW)
    assert result.returncode == 0, result.stderr
    return config


def unlock(config: Path) -> MasterKeys:
    cfg = load_config(config)
    return KeyStore(cfg.vault.state_dir, cfg.vault.id, []).open(PW["CHUNKVAULT_PASSPHRASE"]).keys


@contextmanager
def stores(config: Path, replicas: int = 2) -> Iterator[tuple[JournalStore, ManifestStore]]:
    cfg = load_config(config)
    keys = unlock(config)
    with open_peer_set(cfg) as placed:
        yield (
            JournalStore(cfg.vault.id, keys, placed, replicas, 1),
            ManifestStore(cfg.vault.id, keys, placed, replicas, 1),
        )


def small_entries(keys: MasterKeys, n: int, tag: str = "") -> list[BatchEntry]:
    out = []
    for i in range(n):
        chunk_id = os.urandom(32).hex()
        sealed = seal_chunk(keys, f"{tag} file {i}".encode())
        ref = ChunkRef(chunk_id, 10, sealed.wrapped_dek, "9f" * 32, 5 + 1054 * i, 1054)
        manifest = Manifest(f"{tag}dir/file {i}.txt", 10, 0, 0o100644, "ab" * 32, (ref,))
        out.append(BatchEntry(new_manifest_name("test", keys, manifest), manifest))
    return out


def first_holder(store: JournalStore, name: str, holders: list[str]) -> PlacedPeer:
    return next(p for p in store._ranked(name) if p.name in holders)


def test_many_versions_become_one_object_per_replica_listed_apart_from_manifests(
    tmp_path: Path, moto_peers: MotoPeers, caplog: pytest.LogCaptureFixture
) -> None:
    config = init(tmp_path, moto_peers.endpoints)
    with stores(config) as (journal, manifests):
        keys = journal.keys
        batches = {}
        for b in range(3):
            entries = small_entries(keys, 500, f"b{b}/")
            name, written = journal.write(entries)
            batches[name] = (entries, sorted(written))
        old_style = Manifest("old.txt", 0, 0, 0o100644, "00" * 32)
        manifest_name, _ = manifests.write(old_style)
        objects = [i.key for p in journal.peers for i in p.peer.list("test/manifests/")]
        assert len(objects) == 3 * 2 + 2  # 1,500 versions: 6 batch copies and one manifest's 2
        with caplog.at_level(logging.WARNING, "chunkvault"):
            listed = dict(journal.names())
            assert [n for n, _ in manifests.names()] == [manifest_name]
        assert caplog.records == []  # neither store warns about the other's objects
        assert listed == {name: holders for name, (_, holders) in batches.items()}
        for name, (entries, holders) in batches.items():
            assert journal.read(name, holders) == entries
        assert manifests.read(manifest_name) == old_style


def crafted_bodies(keys: MasterKeys, name: str, good: list[BatchEntry]) -> list[bytes]:
    from chunkvault.journal import batch_to_json

    raw = batch_to_json("test", keys, good)
    return [
        os.urandom(900),  # not a blob
        seal_blob(keys, "manifest", name, raw),  # a manifest, not a batch
        seal_blob(keys, KIND, new_batch_name("test"), raw),  # another batch's copy
        seal_blob(keys, KIND, name, b'{"v":1,"entries":[{"version":"x"}]}'),
        seal_blob(keys, KIND, name, raw.replace(b'"size":10', b'"size":-10', 1)),
    ]


def test_crafted_copies_on_a_peer_are_skipped_with_one_warning_and_the_next_holder_serves(
    tmp_path: Path, moto_peers: MotoPeers, caplog: pytest.LogCaptureFixture
) -> None:
    config = init(tmp_path, moto_peers.endpoints)
    with stores(config) as (journal, _):
        keys = journal.keys
        written = []
        for i in range(5):
            entries = small_entries(keys, 20, f"{i}/")
            name, holders = journal.write(entries)
            written.append((name, holders, entries))
        liars = set()
        for i, (name, holders, entries) in enumerate(written):
            liar = first_holder(journal, name, holders)
            liar.peer.put(name, crafted_bodies(keys, name, entries)[i])  # over HTTP
            liars.add(liar.name)
        with caplog.at_level(logging.WARNING, "chunkvault"):
            for name, holders, entries in written:
                assert journal.read(name, holders) == entries
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == len(liars) and all("bad copy" in w for w in warned), warned


def test_a_peer_serving_huge_bodies_or_an_endless_listing_neither_hangs_nor_fills_memory(
    tmp_path: Path,
    moto_peers: MotoPeers,
    hostile_proxy_factory: Callable[[str], HostileProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = hostile_proxy_factory(moto_peers[2].endpoint)
    config = init(tmp_path, [moto_peers[0].endpoint, moto_peers[1].endpoint, proxy.endpoint])
    with stores(config, replicas=3) as (journal, _):
        entries = small_entries(journal.keys, 50)
        name, holders = journal.write(entries)
        assert sorted(holders) == ["p0", "p1", "p2"]
        proxy.add(huge_body(r"/manifests/batch/", 1536 * MiB))
        with caplog.at_level(logging.WARNING, "chunkvault"):
            assert journal.read(name, ["p2"]) == entries  # p2 asked first, refused
        assert proxy.hits("huge_body") == 1
        assert any("p2" in r.getMessage() and "bad copy" in r.getMessage() for r in caplog.records)
        proxy.clear()
        proxy.add(endless_listing("repeat"))
        unlisted: list[str] = []
        assert dict(journal.names(unlisted)) == {name: ["p0", "p1"]}
        assert unlisted == ["p2"]


# -- key rotate-master -------------------------------------------------------------------------


def test_rotate_master_reseals_every_batch_and_every_data_key_inside_without_touching_packs(
    tmp_path: Path, moto_peers: MotoPeers
) -> None:
    config = init(tmp_path, moto_peers.endpoints)
    cfg = load_config(config)
    keys = unlock(config)
    plain: dict[str, bytes] = {}
    with open_peer_set(cfg) as placed:
        peers = [p.peer for p in placed]
        # Chunk objects, stored as the upload path stores them (2 replicas, metadata).
        object_refs = []
        for i in range(4):
            data = f"object chunk {i} ".encode() * 40
            sealed = seal_chunk(keys, data)
            plain[sealed.chunk_id] = data
            for peer in (peers[i % 3], peers[(i + 1) % 3]):
                peer.put(chunk_key("test", sealed.chunk_id), sealed.body, chunk_metadata(sealed))
            object_refs.append(ChunkRef(sealed.chunk_id, len(data), sealed.wrapped_dek))
        # A pack: "CVPK", version 1, sealed bodies back to back; locations only in entries.
        pack_id = os.urandom(32).hex()
        pack, packed_refs = bytearray(b"CVPK\x01"), []
        for i in range(6):
            data = f"packed chunk {i}".encode()
            sealed = seal_chunk(keys, data)
            plain[sealed.chunk_id] = data
            packed_refs.append(
                ChunkRef(sealed.chunk_id, len(data), sealed.wrapped_dek, pack_id, len(pack),
                         len(sealed.body))
            )  # fmt: skip
            pack += sealed.body
        pack_key = f"test/packs/{pack_id[:2]}/{pack_id}"
        for peer in peers[:2]:
            peer.put(pack_key, bytes(pack))
        pack_before = {p.name: (p.get(pack_key), p.stat(pack_key).etag) for p in peers[:2]}

        journal = JournalStore("test", keys, placed, 2, 1)
        refs = object_refs + packed_refs
        batches = {}
        for b in range(2):
            entries = []
            for i, ref in enumerate(refs[b::2]):
                m = Manifest(f"b{b}/f{i}", ref.size, 0, 0o100644, "00" * 32, (ref,))
                entries.append(BatchEntry(new_manifest_name("test", keys, m), m))
            name, holders = journal.write(entries)
            batches[name] = (entries, holders)

    rotated = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    assert rotated.returncode == 0, rotated.stderr
    assert "2 manifest batch(es) re-sealed" in rotated.stdout

    new = unlock(config)
    assert sorted(new.keks) == [2]  # the old generation is gone: nothing may need it
    with open_peer_set(cfg) as placed:
        by_name = {p.name: p.peer for p in placed}
        journal = JournalStore("test", new, placed, 2, 1)
        assert {n: h for n, h in journal.names()} == {n: sorted(h) for n, (_, h) in batches.items()}
        for name, (entries, holders) in batches.items():
            for holder in holders:  # every copy, not only the one a read would pick
                body = by_name[holder].get(name)
                assert blob_generation(body) == 2
                opened = journal.open(name, body)
                assert [(e.name, e.manifest.path) for e in opened] == [
                    (e.name, e.manifest.path) for e in entries
                ]
                for e in opened:
                    for ref in e.manifest.chunks:
                        assert wrapped_generation(ref.wrapped_dek) == 2
                        if ref.packed:
                            pack_body = pack_before["p0"][0]
                            chunk_body = pack_body[ref.offset : ref.offset + ref.length]
                        else:
                            chunk_body = next(
                                p.get(chunk_key("test", ref.id))
                                for p in by_name.values()
                                if any(True for _ in p.list(chunk_key("test", ref.id)))
                            )
                        assert open_chunk(new, ref.id, chunk_body, ref.wrapped_dek) == plain[ref.id]
        for holder, (body, etag) in pack_before.items():  # packs hold no key: untouched
            assert by_name[holder].get(pack_key) == body
            assert by_name[holder].stat(pack_key).etag == etag

    again = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    assert again.returncode == 0 and "2 manifest batch(es) re-sealed" in again.stdout
