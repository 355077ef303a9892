"""The pieces of `make bench` that drive chunkvault, on small data: each starts its own
local S3 peers and stops them (chunkvault.bench.compare.fresh_peers). restic and rclone
are not needed here. Structure and sanity only, never a timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from chunkvault.bench import compare
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
