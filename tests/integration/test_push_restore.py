"""push / ls / restore end to end: CLI subprocesses, real files, real HTTP S3 peers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
from pathlib import Path

import pytest
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.layout import parse_chunk_metadata

PW = {"CHUNKVAULT_PASSPHRASE": "pipeline passphrase"}
MiB = 1024 * 1024


def make_tree(root: Path, seed: int = 1) -> dict[str, bytes]:
    """A nested tree: 4+ levels, random and text files, one 20 MiB file."""
    rng = random.Random(seed)
    files = {
        "top.txt": b"hello chunkvault\n" * 100,
        "docs/readme-secret-name.md": "\n".join(
            f"line {i} of a text" for i in range(5000)
        ).encode(),
        "a/b/c/d/deep-file.bin": rng.randbytes(300_000),
        "a/b/c/d/e/deeper.txt": b"the deepest text " * 3000,
        "a/b/sibling.bin": rng.randbytes(1_500_000),
        "media/big-video.bin": rng.randbytes(20 * MiB),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.chmod(root / "top.txt", 0o640)
    return files


def tree_digest(root: Path) -> dict[str, tuple[str, int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(root).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o777, st.st_mtime_ns,
            )  # fmt: skip
    return out


def all_objects(config: Path) -> dict[str, dict[str, tuple[bytes, dict, str]]]:
    """peer -> key -> (body, metadata, etag)."""
    out: dict[str, dict[str, tuple[bytes, dict, str]]] = {}
    for peer in build_peers(load_config(config)):
        objects = {}
        for info in peer.list(""):
            stat = peer.stat(info.key)
            objects[info.key] = (peer.get(info.key), dict(stat.metadata), stat.etag)
        out[peer.name] = objects
    return out


def chunk_objects(config: Path) -> dict[str, list[tuple[str, bytes, dict, str]]]:
    """chunk key -> [(peer, body, metadata, etag)]."""
    found: dict[str, list] = {}
    for peer, objects in all_objects(config).items():
        for key, (body, meta, etag) in objects.items():
            if "/chunks/" in key:
                found.setdefault(key, []).append((peer, body, meta, etag))
    return found


@pytest.fixture
def tree_vault(tmp_path: Path, moto_peers):
    return init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        # Large chunks so some exceed the 5 MiB segment size and go multipart.
        chunking={"min_size": "1MiB", "avg_size": "4MiB", "max_size": "16MiB"},
        transfer={"segment_size": "5MiB", "timeout_seconds": 5},
    )  # fmt: skip


@pytest.mark.slow
def test_nested_tree_round_trip_with_two_replicas(tree_vault, tmp_path):
    config, inbox = tree_vault
    files = make_tree(inbox)
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr
    assert "7 stored" in pushed.stdout

    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW)
    assert restored.returncode == 0, restored.stderr
    assert tree_digest(out) == tree_digest(inbox)

    chunks = chunk_objects(config)
    assert chunks
    multipart = 0
    for key, replicas in chunks.items():
        peers = [p for p, *_ in replicas]
        assert len(peers) == 2 == len(set(peers)), key  # exactly 2 distinct peers
        for _peer, body, meta, etag in replicas:
            parsed = parse_chunk_metadata(meta)  # every chunk object carries metadata
            assert parsed.sha256 == hashlib.sha256(body).hexdigest()
            if len(body) > 5 * MiB:
                assert etag.endswith(f"-{-(-len(body) // (5 * MiB))}"), (len(body), etag)
                multipart += 1
    assert multipart >= 2  # the 20 MiB random file has chunks above the segment size

    # Nothing readable reaches a peer: names, paths or plaintext.
    needles = [b"readme-secret-name", b"deep-file", b"big-video", b"sibling", b"docs/", b"a/b/c"]
    for data in files.values():
        if len(data) >= 64:
            needles += [data[i : i + 32] for i in (0, len(data) // 2, len(data) - 32)]
    for peer, objects in all_objects(config).items():
        for key, (body, meta, _etag) in objects.items():
            haystack = key.encode() + body + json.dumps(meta).encode()
            for needle in needles:
                assert needle not in haystack, (peer, key, needle[:20])


def test_duplicate_file_adds_no_chunk_objects_and_ls_json(tree_vault):
    config, inbox = tree_vault
    rng = random.Random(3)
    (inbox / "one.bin").write_bytes(rng.randbytes(3 * MiB))
    assert run_cli(config, "push", env=PW).returncode == 0
    before = set(chunk_objects(config))
    shutil.copy(inbox / "one.bin", inbox / "copy-of-one.bin")
    again = run_cli(config, "push", env=PW)
    assert again.returncode == 0
    assert "0 new chunk(s)" in again.stdout and "1 stored" in again.stdout
    assert set(chunk_objects(config)) == before
    listing = json.loads(run_cli(config, "ls", "--json", env=PW).stdout)
    assert [f["path"] for f in listing] == ["copy-of-one.bin", "one.bin"]
    for entry in listing:
        assert entry["size"] == 3 * MiB and entry["versions"] == 1 and entry["deleted"] is False
        assert entry["mtime"].endswith("Z")


def test_chunks_spread_evenly_over_equal_peers(tmp_path, moto_peers):
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        chunking={"min_size": "16KiB", "avg_size": "32KiB", "max_size": "64KiB",
                  "compression": "none", "pack_threshold": 0},
        replication={"replicas": 1},
    )  # fmt: skip
    (inbox / "data.bin").write_bytes(random.Random(5).randbytes(16 * MiB))
    assert run_cli(config, "push", env=PW).returncode == 0
    counts: dict[str, int] = {}
    for replicas in chunk_objects(config).values():
        for peer, *_ in replicas:
            counts[peer] = counts.get(peer, 0) + 1
    total = sum(counts.values())
    assert total >= 250, total  # a few hundred chunks
    mean = total / 3
    assert len(counts) == 3
    # Chunk ids are keyed per vault, so each chunk lands on a random peer: the
    # count per peer is binomial. Five standard deviations (~35% of the mean
    # here) never flakes yet fails any real skew; the tight bound on many ids
    # is the pure placement test's job (tests/unit/test_placement.py).
    sigma = math.sqrt(total * (1 / 3) * (2 / 3))
    assert all(abs(n - mean) <= 5 * sigma for n in counts.values()), counts


def test_versions_deletes_and_restore_of_deleted_files(tree_vault, tmp_path):
    config, inbox = tree_vault
    (inbox / "notes.txt").write_text("version one\n")
    (inbox / "keep.txt").write_text("stays\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "notes.txt").write_text("version two, longer\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "notes.txt").unlink()
    pushed = run_cli(config, "push", env=PW)
    assert "1 deleted" in pushed.stdout
    plain = json.loads(run_cli(config, "ls", "--json", env=PW).stdout)
    assert [f["path"] for f in plain] == ["keep.txt"]
    listing = json.loads(run_cli(config, "ls", "--json", "--deleted", "--versions", env=PW).stdout)
    notes = next(f for f in listing if f["path"] == "notes.txt")
    assert notes["deleted"] is True and notes["versions"] == 2
    assert [v["deleted"] for v in notes["history"]] == [False, False, True]
    out = tmp_path / "out"
    nothing = run_cli(config, "restore", "notes.txt", "--to", str(out), env=PW)
    assert nothing.returncode == 1 and "--deleted" in nothing.stderr
    back = run_cli(config, "restore", "notes.txt", "--to", str(out), "--deleted", env=PW)
    assert back.returncode == 0, back.stderr
    assert (out / "notes.txt").read_text() == "version two, longer\n"
    assert not (out / "keep.txt").exists()


def test_fresh_machine_restores_with_passphrase_and_peer_list_only(tree_vault, tmp_path):
    config, inbox = tree_vault
    make_tree(inbox, seed=9)
    (inbox / "media" / "big-video.bin").unlink()  # keep this one quick
    assert run_cli(config, "push", env=PW).returncode == 0
    shutil.rmtree(tmp_path / "state")
    listing = json.loads(run_cli(config, "ls", "--json", env=PW).stdout)
    assert len(listing) == 6
    out = tmp_path / "fresh"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree_digest(out) == tree_digest(inbox)
    # The rebuilt catalog deduplicates against what the peers already hold.
    again = run_cli(config, "push", env=PW)
    assert "0 new chunk(s)" in again.stdout


def test_restore_falls_back_past_corrupted_replicas(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(3)]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], "cvfail", PW,
        # Chunk objects (packed chunks: tests/integration/test_small_files.py).
        chunking={"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB",
                  "pack_threshold": 0},
        transfer={"timeout_seconds": 2, "retries": 0},
    )  # fmt: skip
    (inbox / "file.bin").write_bytes(random.Random(11).randbytes(4 * MiB))
    assert run_cli(config, "push", env=PW).returncode == 0
    # Corrupt every chunk replica on peer p0 (flip a byte in the body, keep metadata).
    p0 = build_peers(load_config(config))[0]
    corrupted = 0
    for info in p0.list("test/chunks/"):
        meta = dict(p0.stat(info.key).metadata)
        body = bytearray(p0.get(info.key))
        body[len(body) // 2] ^= 0xFF
        p0.put(info.key, bytes(body), meta)
        corrupted += 1
    assert corrupted > 0
    # Every chunk has a second replica on p1 or p2: restore falls back to it.
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert (out / "file.bin").read_bytes() == (inbox / "file.bin").read_bytes()
    # With p1 dead too, chunks whose replicas are exactly {p0 (corrupt), p1 (dead)} are
    # gone: restore must name the file and never leave a partial or wrong file behind.
    holders: dict[str, set[str]] = {}
    for peer in build_peers(load_config(config)):
        for info in peer.list("test/chunks/"):
            holders.setdefault(info.key, set()).add(peer.name)
    lost_chunks = [key for key, names in holders.items() if names == {"p0", "p1"}]
    servers[1].kill()
    out2 = tmp_path / "out2"
    lost = run_cli(config, "restore", "--to", str(out2), env=PW)
    if lost_chunks:
        assert lost.returncode == 1, lost.stdout
        assert "file.bin" in lost.stderr and "Traceback" not in lost.stderr
        assert not (out2 / "file.bin").exists()
        assert not list(out2.glob(".cv-restore-*"))
    else:  # every chunk has a good replica on p2
        assert lost.returncode == 0, lost.stderr
        assert (out2 / "file.bin").read_bytes() == (inbox / "file.bin").read_bytes()


def test_restore_from_any_surviving_replicas_after_losing_a_peer(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(3)]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], "cvlose", PW,
        chunking={"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB"},
        transfer={"timeout_seconds": 2, "retries": 0},
    )  # fmt: skip
    files = make_tree(inbox, seed=4)
    (inbox / "media" / "big-video.bin").unlink()
    del files["media/big-video.bin"]
    assert run_cli(config, "push", env=PW).returncode == 0
    servers[0].kill()
    shutil.rmtree(tmp_path / "state")  # and a fresh machine, for good measure
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert tree_digest(out) == tree_digest(inbox)


def test_push_refuses_paths_outside_the_tree(tree_vault, tmp_path):
    config, _inbox = tree_vault
    result = run_cli(config, "push", str(tmp_path), env=PW)
    assert result.returncode == 1 and "outside the watched tree" in result.stderr


def test_rotate_master_rewraps_manifests_and_catalog_too(tree_vault, tmp_path):
    config, inbox = tree_vault
    (inbox / "x.bin").write_bytes(random.Random(8).randbytes(2 * MiB))
    (inbox / "y.txt").write_text("why not\n" * 1000)
    assert run_cli(config, "push", env=PW).returncode == 0
    rotated = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    assert rotated.returncode == 0, rotated.stderr
    # Both versions, in one batch or two (y.txt's pack, once written, commits it at once)
    resealed = re.search(r"(\d+) manifest batch\(es\) re-sealed", rotated.stdout)
    assert resealed and int(resealed[1]) in (1, 2), rotated.stdout
    for state in ("kept", "fresh"):
        if state == "fresh":
            shutil.rmtree(tmp_path / "state")
        out = tmp_path / f"out-{state}"
        result = run_cli(config, "restore", "--to", str(out), env=PW)
        assert result.returncode == 0, result.stderr
        assert tree_digest(out) == tree_digest(inbox)
