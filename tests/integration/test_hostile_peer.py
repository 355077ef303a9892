"""One hostile peer of three must not block `ls` or `restore` (issue 8, item 3).

Three real S3 peers (moto over HTTP); p2 is reached through ``support.hostile_proxy``,
honest while the vault is pushed, then lying. Every command runs the CLI as a subprocess
on a fresh machine (state dir deleted), so the catalog is rebuilt from the peers' listings
and every byte ls/restore use comes from the peers.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.cli import init_vault, run_cli
from support.hostile_proxy import HostileProxy, endless_listing, huge_body
from support.moto_peers import MotoPeers, s3_peer_config, unique_bucket
from support.peak_rss import run_cli_measured

from chunkvault.backends import S3Peer
from chunkvault.config import TransferConfig

PW = {"CHUNKVAULT_PASSPHRASE": "hostile peer passphrase"}
MiB = 1024 * 1024
GiB = 1024 * MiB


def make_files(inbox: Path) -> dict[str, bytes]:
    rng = random.Random(8)
    files = {
        "notes.bin": rng.randbytes(98 * 1024),  # the review's 98 KiB file
        "docs/a.txt": b"alpha\n" * 500,
        "docs/deep/b.bin": rng.randbytes(20_000),
        "c.txt": b"gamma",
    }
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    return files


def restored(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fresh_machine(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "state", ignore_errors=True)


def lines_with(stderr: str, *needles: str) -> list[str]:
    return [line for line in stderr.splitlines() if all(n in line for n in needles)]


@pytest.fixture
def vault(
    tmp_path: Path,
    moto_peers: MotoPeers,
    hostile_proxy_factory: Callable[[str], HostileProxy],
) -> tuple[Path, dict[str, bytes], HostileProxy, str]:
    """A pushed vault on p0, p1 and p2 (p2 behind a proxy, weighted to hold and serve first
    nearly everything): (config, files, proxy, bucket)."""
    proxy = hostile_proxy_factory(moto_peers[2].endpoint)
    bucket = unique_bucket()
    endpoints = [moto_peers[0].endpoint, moto_peers[1].endpoint, proxy.endpoint]
    config, inbox = init_vault(tmp_path, endpoints, bucket, PW)
    data = yaml.safe_load(config.read_text())
    data["peers"][2]["weight"] = 50  # rendezvous ranks p2 first for almost every object
    config.write_text(yaml.safe_dump(data))
    files = make_files(inbox)
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr
    return config, files, proxy, bucket


def ls_paths(result: object) -> list[str]:
    return [entry["path"] for entry in json.loads(result.stdout)]  # type: ignore[attr-defined]


def test_foreign_manifest_keys_on_one_peer_are_skipped_with_one_warning(
    vault: tuple[Path, dict[str, bytes], HostileProxy, str], moto_peers: MotoPeers, tmp_path: Path
) -> None:
    config, files, _proxy, bucket = vault
    # Objects another program (or the peer itself) put next to our manifests.
    raw = S3Peer(s3_peer_config(moto_peers[2].endpoint, bucket), TransferConfig())
    for key in ("test/manifests/.evil", "test/manifests/zz", "test/manifests/a b/c"):
        raw.client.put_object(Bucket=bucket, Key=key, Body=b"not a manifest")
    raw.close()

    fresh_machine(tmp_path)
    listing = run_cli(config, "ls", "--json", env=PW)
    assert listing.returncode == 0, listing.stderr
    assert ls_paths(listing) == sorted(files)
    assert len(lines_with(listing.stderr, "p2", ".evil")) == 1, listing.stderr
    assert len(lines_with(listing.stderr, "p2", "not a manifest name")) == 1, listing.stderr
    assert "Traceback" not in listing.stderr

    fresh_machine(tmp_path)
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert restored(out) == files
    assert len(lines_with(result.stderr, "p2", ".evil")) == 1, result.stderr


def test_huge_chunk_bodies_on_one_peer_cost_no_memory(
    vault: tuple[Path, dict[str, bytes], HostileProxy, str], tmp_path: Path
) -> None:
    config, files, proxy, _bucket = vault
    # Every chunk GET to p2 answers 1 GiB (made while sent; an honest Content-Length).
    proxy.add(huge_body(r"/chunks/", GiB))
    fresh_machine(tmp_path)
    out = tmp_path / "out"
    start = time.monotonic()
    result, peak = run_cli_measured(config, "restore", "--to", str(out), env=PW, timeout=120)
    assert result.returncode == 0, result.stderr
    assert restored(out) == files
    assert proxy.hits("huge_body") >= 1  # p2 really was asked, and refused
    assert peak < 300 * MiB, f"restore peaked at {peak / MiB:.0f} MiB"
    assert time.monotonic() - start < 60
    warnings = lines_with(result.stderr, "p2", "more than the")
    assert len(warnings) == 1, result.stderr  # once per peer, not once per chunk


@pytest.mark.parametrize("mode", ["repeat", "empty"])
def test_endless_listing_on_one_peer_does_not_hang_ls_or_restore(
    vault: tuple[Path, dict[str, bytes], HostileProxy, str], tmp_path: Path, mode: str
) -> None:
    config, files, proxy, _bucket = vault
    # ListObjectsV2 on p2 says IsTruncated=true with a fresh token, forever.
    proxy.add(endless_listing(mode))  # type: ignore[arg-type]
    fresh_machine(tmp_path)
    start = time.monotonic()
    listing = run_cli(config, "ls", "--json", env=PW, timeout=90)
    assert time.monotonic() - start < 30
    assert listing.returncode == 0, listing.stderr
    # Every manifest is on 2 of the 3 peers: p0 and p1 alone list every file.
    assert ls_paths(listing) == sorted(files)
    assert lines_with(listing.stderr, "cannot list manifests on p2"), listing.stderr

    fresh_machine(tmp_path)
    out = tmp_path / "out"
    start = time.monotonic()
    result = run_cli(config, "restore", "--to", str(out), env=PW, timeout=90)
    assert time.monotonic() - start < 30
    assert result.returncode == 0, result.stderr
    assert restored(out) == files
