"""The pieces of `make bench` that drive chunkvault, on small data: each starts its own
local S3 peers and stops them (chunkvault.bench.compare.fresh_peers). restic and rclone
are not needed here. Structure and sanity only, never a timing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chunkvault.bench import compare, report
from chunkvault.bench.data import VerifyError, random_tree, tree_state

KiB = 1024


def test_chunkvault_rows_push_restore_and_verify(tmp_path: Path) -> None:
    ds = random_tree(tmp_path / "data", count=3, size=300 * KiB)
    rows = compare.chunkvault_rows(ds, tmp_path / "work", tree_state(ds.root))
    assert [r["id"] for r in rows] == ["cv_push", "cv_nochange", "cv_restore"]
    push, _, restore = rows
    assert push["replicas"] == compare.REPLICAS and push["peak_rss"] > 0
    assert push["stored"] > compare.REPLICAS * ds.bytes  # sealed, padded, twice, + manifests
    assert restore["verified"] is True and restore["seconds"] > 0
    assert not (tmp_path / "work" / "cv").exists()  # state and restore cleaned up


def test_erasure_rows_store_under_two_copies_and_restore(tmp_path: Path) -> None:
    ds = random_tree(tmp_path / "data", count=3, size=600 * KiB)
    ec = compare.chunkvault_redundancy_rows(
        ds, tmp_path / "work", tree_state(ds.root), compare.ERASURE
    )
    assert [r["id"] for r in ec] == ["cvec_push", "cvec_restore"]
    assert ec[0]["tool"] == "chunkvault, erasure 3+2" and ec[0]["replicas"] == 3
    assert ec[1]["verified"] is True
    # Sealed and padded, with manifests and the keyring: ~5/3 of the tree (R=3: over 3).
    assert 5 / 3 * ds.bytes < ec[0]["stored"] < 1.9 * ds.bytes
    assert not (tmp_path / "work" / "cvec").exists()


def test_a_restore_that_differs_is_an_error_not_a_figure(tmp_path: Path) -> None:
    ds = random_tree(tmp_path / "data", count=2, size=100 * KiB)
    expected = tree_state(ds.root)
    next(ds.root.rglob("*.bin")).write_bytes(b"changed after the expectation was taken")
    with pytest.raises(VerifyError, match="content differs"):
        compare.chunkvault_rows(ds, tmp_path / "work", expected, nochange=False)


def test_agent_latency_pairs_every_file(tmp_path: Path) -> None:
    result = compare.agent_latency(tmp_path, files=5)
    assert result["files"] == 5 and len(result["latencies"]) == 5
    assert 0 < result["p50"] <= result["p99"] <= result["max"]
    assert result["replicas"] == compare.REPLICAS
    assert result["settle_seconds"] == compare.SETTLE_SECONDS


def test_small_and_many_files_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12's datasets through compare.run at the smallest scale: rows with files,
    objects and peak RSS, restores verified, every target computed. One round of the
    small files (not `make bench`'s three): how rounds become medians is
    tests/unit/test_bench_report.py's, and each round here costs ~12 s."""
    monkeypatch.setattr(compare, "SMALL_ROUNDS", 1)
    sizes = compare.scaled(0.001)
    results = compare.run(0.001, tmp_path, {"small", "many"}, lambda _msg: None)
    errors = results["errors"]
    if shutil.which("restic") is None:  # the comparison needs it; chunkvault's rows do not
        assert errors == ["small: restic is not installed: apt-get install -y restic rclone"]
    else:
        assert errors == []
    small = results["datasets"]["small"]
    assert small["files"] == sizes["small_files"]
    rows = {r["id"]: r for r in small["rows"]}
    push = rows["cv_push"]
    # At least: the keyring, plus per file a chunk and a manifest (or their pack and batch)
    # on R peers; never fewer objects than the keyring's copies.
    assert push["objects"] >= compare.PEERS and push["peak_rss"] > 0
    assert push["stored"] > compare.REPLICAS * small["bytes"] / 4
    assert rows["cv_restore"]["verified"] is True and "cv_nochange" in rows
    # The same push from a write-only host, restored by the owner, verified.
    assert rows["cvw_push"]["objects"] >= compare.PEERS and rows["cvw_push"]["seconds"] > 0
    assert rows["cvw_restore"]["verified"] is True
    # One round: each figure as measured.
    assert small["rounds"] == compare.SMALL_ROUNDS == 1 and "runs" not in push
    if "restic_backup" in rows:
        assert rows["restic_backup"]["objects"] > 0
        assert rows["restic_restore"]["verified"] is True
        assert rows["restic_nochange"]["seconds"] > 0
    many = results["datasets"]["many"]
    assert many["files"] == sizes["many_files"]
    many_rows = {r["id"]: r for r in many["rows"]}
    assert many_rows["cv_push"]["peak_rss"] > 0 and many_rows["cv_push"]["objects"] > 0
    assert many_rows["cv_ls"]["verified"] is True
    assert f"({sizes['many_files']:,} files listed)" in many_rows["cv_ls"]["operation"]
    verdicts = {t["target"]: t["holds"] for t in report.targets(results) if t["issue"] == 12}
    assert len(verdicts) == 4  # push, restore, objects, RSS (no idle agent in this run)
    measured = [name for name, holds in verdicts.items() if holds is not None]
    assert len(measured) == (4 if "restic_backup" in rows else 2)


def test_agent_idle_latency_one_file_at_a_time(tmp_path: Path) -> None:
    result = compare.agent_idle_latency(tmp_path, files=2, gap=0.5)
    assert result["files"] == 2 and len(result["latencies"]) == 2
    assert 0 < result["max"] == max(result["latencies"])
    assert result["replicas"] == compare.REPLICAS
    assert result["settle_seconds"] == compare.SETTLE_SECONDS
    assert result["pack_flush_seconds"] == compare.PACK_FLUSH_SECONDS
    assert result["pack_flush_configured"] == compare.pack_flush_configurable()
