"""What a peer sees of object sizes and names: small files are indistinguishable by size,
manifest names carry whole seconds only. CLI subprocesses, real HTTP S3 peers (moto)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.crypto.padding import FLOOR

PW = {"CHUNKVAULT_PASSPHRASE": "object sizes passphrase"}
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
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
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
    assert {size for sizes in chunks.values() for size in sizes} == {2 + 12 + FLOOR + 16}
    # One-chunk manifests of these paths are all the same size too (blob floor).
    manifests = object_sizes(config, "manifests")
    assert len(manifests) == len(SIZES)
    assert {size for sizes in manifests.values() for size in sizes} == {1 + 65 + 12 + FLOOR + 16}
    # Manifest names: <path key>/<created, whole seconds in ns units>-<8 random hex>.
    for name in manifests:
        assert re.fullmatch(r"test/manifests/[0-9a-f]{32}/\d{11}000000000-[0-9a-f]{8}", name)

    out = tmp_path / "out"
    restored = run_cli(config, "restore", "--to", str(out), env=PW)
    assert restored.returncode == 0, restored.stderr
    assert {
        p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files
