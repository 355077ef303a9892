"""One hostile peer of three must not block `ls` or `restore` (issue 8, item 3), and a peer
that lies in answer to a ranged GET is classified, never trusted (issue 12).

Three real S3 peers (moto over HTTP); p2 is reached through ``support.hostile_proxy``,
honest while the vault is pushed, then lying. Every command runs the CLI as a subprocess
on a fresh machine (state dir deleted), so the catalog is rebuilt from the peers' listings
and every byte ls/restore use comes from the peers.

The ranged-read tests talk to one S3 peer behind the proxy directly: restore reads a
packed chunk as ``get_range_into`` of its bytes in the pack object, and every wrong answer
(more bytes, fewer, a 200 with the whole object, a wrong Content-Range) must be a
:class:`PeerError` of the right class that writes nothing past ``buf[:length]``.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import init_vault, run_cli
from support.hostile_proxy import (
    HostileProxy,
    Reply,
    Request,
    delay,
    endless_listing,
    huge_body,
    tamper_range,
)
from support.moto_peers import MotoPeers, s3_peer_config, unique_bucket
from support.peak_rss import run_cli_measured

from chunkvault.backends import (
    MalformedReply,
    NotFound,
    PeerError,
    S3Peer,
    TransientError,
    wrap_peer,
)
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


def test_share_keys_one_peer_makes_up_hide_no_copy(
    vault: tuple[Path, dict[str, bytes], HostileProxy, str], moto_peers: MotoPeers, tmp_path: Path
) -> None:
    """p2 lists a share of a scheme it made up beside every data object of the vault (as
    if the objects were erasure-coded): the copies the peers hold are still what is read,
    on a fresh machine too, and `check` finds nothing wrong."""
    config, files, _proxy, bucket = vault
    raw = S3Peer(s3_peer_config(moto_peers[2].endpoint, bucket), TransferConfig())
    try:
        keys = {i.key for p in ("test/chunks/", "test/packs/") for i in raw.list(p)}
        assert keys
        for key in keys:
            raw.client.put_object(Bucket=bucket, Key=f"{key}.ec1-1.0", Body=b"CVS made up")
    finally:
        raw.close()
    fresh_machine(tmp_path)
    out = tmp_path / "out"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert restored(out) == files
    check = run_cli(config, "check", env=PW)
    assert check.returncode == 0, check.stdout + check.stderr


def test_huge_chunk_bodies_on_one_peer_cost_no_memory(
    vault: tuple[Path, dict[str, bytes], HostileProxy, str],
    tmp_path: Path,
    moto_peers: MotoPeers,
    hostile_proxy_factory: Callable[[str], HostileProxy],
) -> None:
    config, files, proxy, _bucket = vault
    # The reader asks the quickest holder first, and p2 is behind a proxy: slow p0 and p1
    # down so that p2 is asked first, every run, rather than by luck of timing.
    data = yaml.safe_load(config.read_text())
    for i in (0, 1):
        data["peers"][i]["endpoint"] = (
            hostile_proxy_factory(moto_peers[i].endpoint).add(delay(0.05)).endpoint
        )
    config.write_text(yaml.safe_dump(data))
    # Every chunk GET to p2, and every read of a pack of small chunks, answers 1 GiB (made
    # while sent; an honest Content-Length).
    proxy.add(huge_body(r"/(chunks|packs)/", GiB))
    fresh_machine(tmp_path)
    out = tmp_path / "out"
    start = time.monotonic()
    result, peak = run_cli_measured(config, "restore", "--to", str(out), env=PW, timeout=120)
    assert result.returncode == 0, result.stderr
    assert restored(out) == files
    assert proxy.hits("huge_body") >= 1  # p2 really was asked, and refused
    assert peak < 300 * MiB, f"restore peaked at {peak / MiB:.0f} MiB"
    assert time.monotonic() - start < 60
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "p2" in line and ("more than the" in line or "to a ranged GET" in line)
    ]
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


# -- ranged reads (issue 12): one S3 peer behind the proxy, no CLI ----------------------------

PACK = "v/packs/ab/" + "ab" * 32
PACK_BODY = random.Random(12).randbytes(64 * 1024)
# A packed chunk's body: somewhere in the middle of the pack object.
OFFSET, LENGTH = 5000, 3000
SENTINEL = 0x5A


@pytest.fixture
def ranged_liar(
    moto_peers: MotoPeers, hostile_proxy_factory: Callable[[str], HostileProxy]
) -> Iterator[tuple[S3Peer, HostileProxy]]:
    """An S3 peer holding PACK, reached through a hostile proxy (no rule yet)."""
    proxy = hostile_proxy_factory(moto_peers[2].endpoint)
    transfer = TransferConfig(timeout_seconds=5, retries=0)
    peer = S3Peer(s3_peer_config(proxy.endpoint, unique_bucket(), name="liar"), transfer)
    peer.create_container()
    peer.put(PACK, PACK_BODY)
    yield peer, proxy
    proxy.clear()
    with contextlib.suppress(Exception):
        peer.client.delete_object(Bucket=peer.bucket, Key=PACK)
        peer.client.delete_bucket(Bucket=peer.bucket)
    peer.close()


def ranged_buffer() -> bytearray:
    return bytearray([SENTINEL]) * (LENGTH + 4096)


@contextlib.contextmanager
def allocates_under(megabytes: int) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < megabytes * MiB, f"allocated {peak / MiB:.0f} MiB"


def _shifted(first: int, last: int, total: int) -> str:
    return f"bytes {first + 1}-{last + 1}/{total}"


def _absent(first: int, last: int, total: int) -> None:
    return None


def _no_total(first: int, last: int, total: int) -> str:
    return f"bytes {first}-{last}"


def _total_inside_the_range(first: int, last: int, total: int) -> str:
    return f"bytes {first}-{last}/{last}"


def _unsatisfiable(first: int, last: int, total: int) -> str:
    return f"bytes */{total}"


RANGED_LIES = [
    # More bytes than asked, saying so: refused before a byte of the body is read.
    (dict(extra=100), MalformedReply, "Content-Length 3100 for a range of 3000"),
    (dict(extra=GiB), MalformedReply, f"Content-Length {LENGTH + GiB} for a range"),
    # More bytes than asked, no Content-Length: at most one byte past the range is read.
    (dict(extra=GiB, chunked=True), MalformedReply, "Content-Length None"),
    # Fewer bytes, saying so.
    (dict(extra=-1), MalformedReply, "Content-Length 2999 for a range of 3000"),
    # Fewer bytes than declared (the connection ends): a cut body, as in get_into.
    (dict(extra=-1000, content_length=LENGTH), TransientError, ""),
    # A server that ignores Range: 200 and the whole object.
    (dict(whole=True), MalformedReply, "HTTP 200 to a ranged GET"),
    # The right bytes, with a 200.
    (dict(status=200), MalformedReply, "HTTP 200 to a ranged GET"),
    # A Content-Range that is not the range asked, missing, unparseable, or impossible.
    (dict(content_range=_shifted), MalformedReply, "Content-Range 'bytes 5001-8000/65536'"),
    (dict(content_range=_absent), MalformedReply, "Content-Range None"),
    (dict(content_range=_no_total), MalformedReply, "Content-Range 'bytes 5000-7999'"),
    (dict(content_range=_total_inside_the_range), MalformedReply, "object of 7999 bytes ends"),
    # Range not satisfiable: the peer's copy is shorter than the bytes we wrote.
    (
        dict(status=416, extra=-LENGTH, content_range=_unsatisfiable),
        MalformedReply,
        "ends before the range",
    ),
]


@pytest.mark.parametrize(
    ("lie", "error", "expected"),
    RANGED_LIES,
    ids=["more", "more-1GiB", "more-chunked", "fewer", "cut-short", "whole-object-200",
         "right-bytes-200", "wrong-content-range", "no-content-range", "bad-content-range",
         "impossible-total", "416"],
)  # fmt: skip
def test_ranged_get_lies_are_classified_and_never_written_past_the_range(
    ranged_liar: tuple[S3Peer, HostileProxy], lie: dict[str, Any], error: type, expected: str
) -> None:
    peer, proxy = ranged_liar
    proxy.add(tamper_range(r"/packs/", **lie))
    buf = ranged_buffer()
    start = time.monotonic()
    with allocates_under(16), pytest.raises(PeerError) as err:
        peer.get_range_into(PACK, memoryview(buf), OFFSET, LENGTH)
    assert time.monotonic() - start < 10
    assert type(err.value) is error, err.value
    assert expected in str(err.value) and err.value.peer == "liar"
    assert buf[LENGTH:] == bytes([SENTINEL]) * 4096  # nothing past buf[:length]
    assert proxy.hits("tamper_range") == 1
    proxy.clear()  # the connection pool is still fine
    peer.get_range_into(PACK, memoryview(buf), OFFSET, LENGTH)
    assert buf[:LENGTH] == PACK_BODY[OFFSET : OFFSET + LENGTH]


def test_ranged_get_bytes_past_a_declared_length_are_never_read(
    ranged_liar: tuple[S3Peer, HostileProxy],
) -> None:
    """Content-Length says the range, more follows on the wire: HTTP framing ends the
    body at the declared length, and what follows never reaches the buffer."""
    peer, proxy = ranged_liar
    proxy.add(tamper_range(r"/packs/", extra=GiB, content_length=LENGTH))
    buf = ranged_buffer()
    with allocates_under(16):
        peer.get_range_into(PACK, memoryview(buf), OFFSET, LENGTH)
    assert buf[:LENGTH] == PACK_BODY[OFFSET : OFFSET + LENGTH]
    assert buf[LENGTH:] == bytes([SENTINEL]) * 4096


def test_ranged_get_of_a_key_the_peer_withholds_is_not_found(
    ranged_liar: tuple[S3Peer, HostileProxy],
) -> None:
    peer, proxy = ranged_liar

    def gone(request: Request, forward: Any) -> Reply | None:
        if request.byte_range is None:
            return None
        body = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
        return Reply(404, [("Content-Type", "application/xml")], body)

    proxy.add(gone)
    with pytest.raises(NotFound):
        peer.get_range_into(PACK, memoryview(ranged_buffer()), OFFSET, LENGTH)


def test_ranged_get_cut_short_is_retried_and_the_retry_rewrites_the_range(
    ranged_liar: tuple[S3Peer, HostileProxy],
) -> None:
    peer, proxy = ranged_liar
    cut = tamper_range(r"/packs/", extra=-1000, content_length=LENGTH)
    served: list[str] = []

    def once(request: Request, forward: Any) -> Reply | None:
        reply = None if served else cut(request, forward)
        if reply is not None:
            served.append(request.key)
        return reply

    proxy.add(once)
    sleeps: list[float] = []
    stacked = wrap_peer(peer, TransferConfig(timeout_seconds=5, retries=1), sleep=sleeps.append)
    buf = ranged_buffer()
    stacked.get_range_into(PACK, memoryview(buf), OFFSET, LENGTH)
    assert served == [PACK] and len(sleeps) == 1 and stacked.is_up
    assert buf[:LENGTH] == PACK_BODY[OFFSET : OFFSET + LENGTH]
    assert buf[LENGTH:] == bytes([SENTINEL]) * 4096


def test_ranged_get_lies_are_answers_not_retried_and_keep_the_peer_up(
    ranged_liar: tuple[S3Peer, HostileProxy],
) -> None:
    peer, proxy = ranged_liar
    proxy.add(tamper_range(r"/packs/", whole=True))
    sleeps: list[float] = []
    stacked = wrap_peer(peer, TransferConfig(retries=3, down_after_failures=1), sleep=sleeps.append)
    for _ in range(3):
        with pytest.raises(MalformedReply):
            stacked.get_range_into(PACK, memoryview(ranged_buffer()), OFFSET, LENGTH)
    assert sleeps == [] and stacked.is_up and proxy.hits("tamper_range") == 3
