"""`chunkvault bench ...` as a subprocess: the in-process benchmarks with small sizes,
`peers` and `e2e` against real local S3 peers, and clear errors for bad arguments. No
timing assertions: structure and sanity only (speed goals live in `make bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run_cli, write_config
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config


def bench_json(config: Path | None, *args: str) -> dict:
    result = run_cli(config, "bench", *args, "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def positive(row: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(row[key], int | float) and row[key] > 0, (key, row)


def test_crypto_json() -> None:
    out = bench_json(None, "crypto", "--size", "2MiB", "--block", "512KiB")
    assert out["size"] == 2 * 1024 * 1024 and out["block"] == 512 * 1024
    ops = {r["operation"]: r for r in out["results"]}
    for name in ("chunk id: HMAC-SHA256", "AES-256-GCM encrypt", "AES-256-GCM decrypt",
                 "seal chunk (random data)", "open chunk (random data)"):  # fmt: skip
        positive(ops[name], "mb_per_s", "seconds", "bytes")
        assert ops[name]["bytes"] == 2 * 1024 * 1024
    for kdf in ("passphrase KDF: argon2id", "passphrase KDF: scrypt"):
        positive(ops[kdf], "seconds")
    for key in ("data key: wrap (master KEK)", "data key: seal (HPKE, write-only host)",
                "data key: open sealed (HPKE)"):  # fmt: skip
        positive(ops[key], "seconds")


def test_chunker_json_and_table() -> None:
    out = bench_json(None, "chunker", "--size", "8MiB", "--min-size", "256KiB",
                     "--avg-size", "1MiB", "--max-size", "4MiB")  # fmt: skip
    rows = {r["operation"].split()[0]: r for r in out["results"]}
    assert set(rows) == {"cdc", "fixed"}
    for row in rows.values():
        positive(row, "mb_per_s", "chunks", "mean_chunk")
    assert rows["fixed"]["chunks"] == 8  # 8 MiB in 1 MiB pieces
    assert 256 * 1024 <= rows["cdc"]["mean_chunk"] <= 4 * 1024 * 1024
    table = run_cli(None, "bench", "chunker", "--size", "2MiB")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["CHUNKER", "MB/s"]


def test_compression_json() -> None:
    out = bench_json(None, "compression", "--size", "1MiB", "--levels", "1,3")
    names = [r["operation"] for r in out["results"]]
    assert names == ["zstd-1 text", "zstd-3 text", "zstd-1 random", "zstd-3 random"]
    for row in out["results"]:
        positive(row, "ratio", "mb_per_s", "decompress_mb_per_s")
    text = next(r for r in out["results"] if r["operation"] == "zstd-3 text")
    noise = next(r for r in out["results"] if r["operation"] == "zstd-3 random")
    assert text["ratio"] > 2 > noise["ratio"]  # the corpus compresses, random data does not


def test_erasure_json_and_table() -> None:
    out = bench_json(None, "erasure", "--size", "4MiB", "--block", "1MiB", "--data", "3",
                     "--parity", "2")  # fmt: skip
    ops = {r["operation"]: r for r in out["results"]}
    for name in ("erasure 3+2: encode", "erasure 3+2: read, data shares (no decoding)",
                 "erasure 3+2: rebuild, 2 data share(s) lost"):  # fmt: skip
        positive(ops[name], "mb_per_s", "seconds", "bytes")
    shares = ops["stored per byte: erasure 3+2 (survives 2 lost peers)"]["stored_per_byte"]
    assert 5 / 3 < shares < 1.7  # 5/3 and a 48-byte header per share of a 1 MiB object
    assert ops["stored per byte: R=3 whole copies (survives 2)"]["stored_per_byte"] == 3.0
    table = run_cli(None, "bench", "erasure", "--size", "1MiB", "--block", "256KiB")
    assert table.returncode == 0 and "STORED PER BYTE" in table.stdout.splitlines()[0]
    bad = run_cli(None, "bench", "erasure", "--data", "200", "--parity", "100")
    assert bad.returncode == 2 and "at most 256" in bad.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["crypto", "--size", "lots"], "Invalid value for '--size': expected a size"),
        (["crypto", "--size", "0"], "Invalid value for '--size': must be at least 1 B"),
        (["compression", "--levels", "1,x"], "expected comma-separated integers"),
        (["compression", "--levels", "23"], "zstd levels must be 1..22"),
        (["chunker", "--avg-size", "64MiB"], "Invalid value for --avg-size: must be"),
        (["chunker", "--min-size", "1MiB", "--avg-size", "512KiB"], "need min_size <= avg_size"),
        (["peers", "--objects", "0"], "Invalid value for '--objects'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_bad_arguments_give_one_clear_error(args: list[str], message: str) -> None:
    result = run_cli(None, "bench", *args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_e2e_without_a_config_says_so(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "missing.yaml", "bench", "e2e", "--size", "1MiB")
    assert result.returncode != 0
    assert "missing.yaml" in result.stderr and "Traceback" not in result.stderr


def vault_keys(config: Path) -> list[str]:
    keys: list[str] = []
    for peer in build_peers(load_config(config)):
        keys += [info.key for info in peer.list("")]
        peer.close()
    return keys


@pytest.fixture
def peers_config(tmp_path: Path, moto_peers) -> Path:
    config = write_config(tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket(),
                          transfer={"timeout_seconds": 10, "retries": 1})  # fmt: skip
    result = run_cli(config, "peers", "init")
    assert result.returncode == 0, result.stderr
    return config


def test_peers_json_against_local_peers(peers_config: Path) -> None:
    out = bench_json(peers_config, "peers", "--objects", "3", "--object-size", "256KiB",
                     "--small-objects", "10", "--concurrency", "2")  # fmt: skip
    assert [r["peer"] for r in out["results"]] == ["p0", "p1", "p2"]
    for row in out["results"]:
        positive(row, "put_mb_per_s", "get_mb_per_s", "small_put_ops_per_s",
                 "small_get_ops_per_s")  # fmt: skip
        assert row["objects"] == 3 and row["small_objects"] == 10 and row["concurrency"] == 2
    assert vault_keys(peers_config) == []  # every benchmark object was deleted


def test_peers_reports_a_dead_peer_in_one_line(tmp_path: Path, moto_peers, moto_peer_factory):
    dead = moto_peer_factory()
    endpoints = [moto_peers.endpoints[0], dead.endpoint]
    config = write_config(tmp_path / "cv.yaml", endpoints, unique_bucket(),
                          transfer={"timeout_seconds": 2, "retries": 0})  # fmt: skip
    assert run_cli(config, "peers", "init").returncode == 0
    dead.kill()
    result = run_cli(config, "bench", "peers", "--objects", "1", "--object-size", "64KiB",
                     "--small-objects", "1", timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert "1 of 2 peer(s) failed: peer p1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "p0" in result.stdout and "FAILED" in result.stdout


def test_e2e_json_against_local_peers(peers_config: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    out = bench_json(peers_config, "e2e", "--size", "6MiB", "--file-size", "1MiB",
                     "--workdir", str(work))  # fmt: skip
    assert out["files"] == 6 and out["bytes"] == 6 * 1024 * 1024
    assert out["verified"] is True
    positive(out, "push_seconds", "push_mb_per_s", "push_peak_rss", "nochange_push_seconds",
             "restore_seconds", "restore_mb_per_s", "restore_peak_rss")  # fmt: skip
    assert out["push_peak_rss"] > 10 * 1024 * 1024  # a Python process, measured
    assert vault_keys(peers_config) == []  # the throwaway vault was purged
    assert list(work.iterdir()) == []  # and its files removed
    # The user's own config and vault were not touched.
    assert not (peers_config.parent / "state").exists()
