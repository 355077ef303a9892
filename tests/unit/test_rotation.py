"""Master-key rotation of manifest batches (rotation.rewrap_batches), copy by copy, against
in-memory peers; the CLI path is in tests/integration/test_journal_peers.py."""

from __future__ import annotations

import os

from chunkvault.backends import MemoryPeer, wrap_peer
from chunkvault.config import TransferConfig
from chunkvault.crypto.envelope import blob_generation, wrap_dek, wrapped_generation
from chunkvault.crypto.material import MasterKeys
from chunkvault.journal import BatchEntry, JournalStore
from chunkvault.manifest import ChunkRef, Manifest, ManifestStore, new_manifest_name
from chunkvault.peerset import PlacedPeer
from chunkvault.rotation import rewrap_batches, rewrap_manifests


def setup() -> tuple[list[MemoryPeer], JournalStore]:
    keys = MasterKeys.generate(os.urandom(16))
    mems = [MemoryPeer(f"p{i}") for i in range(3)]
    placed = [PlacedPeer(wrap_peer(m, TransferConfig(retries=0)), 1.0, None) for m in mems]
    return mems, JournalStore("home", keys, placed, replicas=2, minimum=1)


def entries(keys: MasterKeys, n: int) -> list[BatchEntry]:
    out = []
    for i in range(n):
        chunk_id = os.urandom(32).hex()
        packed = ("9f" * 32, 5 + i * 1054, 1054) if i % 2 else ()
        ref = ChunkRef(chunk_id, 700, wrap_dek(keys, chunk_id, os.urandom(32)), *packed)
        m = Manifest(f"f{i}", 700, 0, 0o100644, "00" * 32, (ref,))
        out.append(BatchEntry(new_manifest_name("home", keys, m), m))
    return out


def copies(mems: list[MemoryPeer], name: str) -> dict[str, bytes]:
    return {m.name: m._objects[name].body for m in mems if name in m._objects}


def test_every_copy_is_checked_on_its_own_so_an_interrupted_run_leaves_none_behind():
    mems, store = setup()
    keys = store.keys
    interrupted, damaged, untouched = (store.write(entries(keys, 4)) for _ in range(3))
    generation = keys.add_generation()
    # A run that stopped after re-sealing the best-ranked copy of one batch only: a
    # reader (and a rotation that looks at one copy) sees that batch as done.
    name, holders = interrupted
    best = next(p.name for p in store._ranked(name) if p.name in holders)
    store.rewrite(
        name, [BatchEntry(e.name, e.manifest.rewrapped(keys, generation))
               for e in store.read(name)], [best],
    )  # fmt: skip
    done_before = copies(mems, name)[best]
    bad_name, bad_holders = damaged
    mems[int(bad_holders[0][1])].plant(bad_name, os.urandom(800))

    report = rewrap_batches(store, keys, generation)
    assert report.complete and report.examined == 3 and report.rewrapped == 3
    assert copies(mems, name)[best] == done_before  # a copy already done is not redone
    for name, holders in (interrupted, damaged, untouched):
        assert sorted(copies(mems, name)) == sorted(holders)  # no copy added or lost
        for holder, body in copies(mems, name).items():
            assert blob_generation(body) == generation, (name, holder)
            opened = store.open(name, body)
            assert all(
                wrapped_generation(c.wrapped_dek) == generation
                for e in opened
                for c in e.manifest.chunks
            )
            assert [e.manifest.chunks[0].pack for e in opened][1] == "9f" * 32
    again = rewrap_batches(store, keys, generation)
    assert again.complete and again.rewrapped == 0


def test_a_peer_that_cannot_be_listed_leaves_the_rotation_incomplete():
    mems, store = setup()
    store.write(entries(store.keys, 2))
    generation = store.keys.add_generation()
    mems[1].down = True
    report = rewrap_batches(store, store.keys, generation)
    assert not report.complete and any("p1: cannot list manifest batches" in f
                                       for f in report.failures)  # fmt: skip
    manifests = ManifestStore("home", store.keys, store.peers, 2, 1)
    m_report = rewrap_manifests(manifests, store.keys, generation)
    assert any("p1: cannot list manifests" in f for f in m_report.failures)
