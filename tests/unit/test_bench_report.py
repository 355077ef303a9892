"""The pure parts of `make bench`: derived rows, target ratios, markdown rendering, the
latency log parser and percentiles, dataset generation and tree comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chunkvault.bench import agentlat, compare, data, e2e, report

MiB = 1024 * 1024


def _row(rid: str, tool: str, seconds: float, replicas: int | None = None, **extra: Any) -> dict:
    return {
        "id": rid,
        "tool": tool,
        "operation": rid,
        "replicas": replicas,
        "seconds": seconds,
        "peak_rss": None,
        "stored": None,
        "verified": None,
        **extra,
    }


def sample_results() -> dict[str, Any]:
    """512 MB of data: raw put R=2 takes 4 s (128 MB/s), chunkvault pushes in 6 s of which
    1 s is fixed cost (steady 5 s = 102.4 MB/s), restic backs up in 10 s..."""
    nbytes = 512_000_000
    return {
        "scale": 1.0,
        "started": "2026-11-29 19:00 UTC",
        "duration_seconds": 600,
        "machine": {"CPU": "test | cpu"},
        "settings": {"chunkvault": "R=2"},
        "datasets": {
            "random": {
                "label": "random files",
                "files": 128,
                "bytes": nbytes,
                "rows": [
                    _row("ceiling_put_r1", "raw boto3", 2.0, 1),
                    _row("ceiling_get", "raw boto3", 1.0, 1),
                    _row("ceiling_put_r2", "raw boto3", 4.0, 2),
                    _row("cv_push", "chunkvault", 6.0, 2, peak_rss=100 * MiB, stored=2 * nbytes),
                    _row("cv_nochange", "chunkvault", 1.0, 2),
                    _row("cv_restore", "chunkvault", 1.5, verified=True),
                    _row("restic_backup", "restic", 10.0, 1),
                    _row("restic_restore", "restic", 4.0, verified=True),
                ],
            },
            "big": {
                "label": "one big file",
                "files": 1,
                "bytes": 1024 * MiB,
                "rows": [
                    _row("cv_push", "chunkvault", 20.0, 2, peak_rss=150 * MiB),
                    _row("restic_backup", "restic", 20.0, 1, peak_rss=224 * MiB),
                ],
            },
        },
        "agent": {
            "files": 200,
            "p50": 1.2,
            "p99": 3.5,
            "max": 3.9,
            "all_stored_after": 4.0,
            "settle_seconds": 1.0,
            "replicas": 2,
            "latencies": [1.0, 3.5],
        },
        "errors": [],
    }


def by_target(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["target"].split(",")[0].split(":")[0]: t for t in report.targets(results)}


def test_steady_state_is_push_minus_nochange_push() -> None:
    rows = report.with_derived(sample_results()["datasets"]["random"])
    steady = report.row(rows, "cv_steady")
    assert steady is not None and steady["seconds"] == pytest.approx(5.0)
    ids = [r["id"] for r in rows]
    assert ids.index("cv_steady") == ids.index("cv_nochange") + 1


def test_no_steady_state_without_a_nochange_push() -> None:
    rows = [_row("cv_push", "chunkvault", 3.0, 2)]
    assert report.steady_state_row(rows) is None
    slower = [_row("cv_push", "chunkvault", 1.0, 2), _row("cv_nochange", "chunkvault", 2.0, 2)]
    assert report.steady_state_row(slower) is None  # noise, not a negative time


def test_targets_ratios_and_verdicts() -> None:
    t = by_target(sample_results())
    # steady 102.4 MB/s vs raw put R=2 128 MB/s = 0.8: exactly the goal holds.
    steady = t["steady-state push vs raw put ceiling"]
    assert steady["ratio"] == pytest.approx(0.8) and steady["holds"] is True
    # push 85.3 MB/s vs restic 51.2 MB/s = 1.667 >= 1.5.
    assert t["push at R=2 vs restic backup at R=1"]["ratio"] == pytest.approx(10 / 6)
    assert t["restore vs restic restore"]["ratio"] == pytest.approx(4 / 1.5)
    # restore 341 MB/s vs raw get 512 MB/s = 0.667 >= 0.5.
    assert t["restore vs raw get ceiling"]["holds"] is True
    rss = t["peak RSS pushing one 1 GiB file"]
    assert rss["holds"] is True and rss["ratio"] == pytest.approx(150 / 224)
    growth = t["RSS does not grow with file size"]
    assert growth["ratio"] == pytest.approx(1.5) and growth["holds"] is False
    agent = t["agent p99 close_write -> durable at R=2"]
    assert agent["holds"] is False and "3 s" in agent["goal"]


def test_missing_figures_are_not_measured_rather_than_a_verdict() -> None:
    results = sample_results()
    rows = results["datasets"]["random"]["rows"]
    results["datasets"]["random"]["rows"] = [r for r in rows if not r["id"].startswith("restic")]
    t = by_target(results)
    assert t["push at R=2 vs restic backup at R=1"]["holds"] is None
    assert t["push at R=2 vs restic backup at R=1"]["ratio"] is None
    assert "not measured" in report.targets_table(results)


def test_markdown_table_escapes_pipes_and_shows_missing_cells() -> None:
    text = report.markdown_table(["a", "b"], [["x|y", None]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | - |"]


def test_dataset_table_has_mbps_and_no_speed_for_the_nochange_push() -> None:
    table = report.dataset_table(sample_results()["datasets"]["random"])
    lines = {line.split(" | ")[1]: line for line in table.splitlines()[2:]}
    assert "| 128.0 |" in lines["ceiling_put_r2"]  # 512 MB / 4 s
    assert "| 6.00 | 85.3 | 100 MiB | 976.6 MiB | - |" in lines["cv_push"]
    assert "| 1.00 | - |" in lines["cv_nochange"]
    assert lines["cv_restore"].endswith("| yes |")


def test_render_markdown_has_every_section() -> None:
    results = sample_results()
    page = report.render_markdown(results, [("a chart", "benchmarks/random.png")], "method text")
    parts = (
        "# Benchmarks", "## Targets (issue 11)", "## random files", "## one big file",
        "## Agent: change to durable, 200 small files", "![a chart](benchmarks/random.png)",
        "## Machine", "test \\| cpu", "## Method", "method text", "`make bench`",
    )  # fmt: skip
    for part in parts:
        assert part in page
    assert "Reduced run" not in page
    results["scale"] = 0.1
    assert "Reduced run (scale 0.1)" in report.render_markdown(results, [], "")


def test_parse_stored_pairs_paths_with_the_first_stored_line() -> None:
    lines = [
        json.dumps(
            {
                "time": "2026-11-29T19:00:01.250Z",
                "message": "stored burst/a.txt (0.20s after the change)",
            }
        ),
        json.dumps(
            {
                "time": "2026-11-29T19:00:02.000Z",
                "message": "stored burst/a.txt (1.00s after the change)",
            }
        ),
        json.dumps({"time": "2026-11-29T19:00:03.000Z", "message": "deleted burst/b.txt (0.1s)"}),
        json.dumps(
            {"time": "2026-11-29T19:00:04.500Z", "message": "stored dir (x)/b c.txt (0.1s)"}
        ),
        "not json at all",
        json.dumps({"time": "yesterday", "message": "stored c.txt (0.1s)"}),
        json.dumps({"message": "stored d.txt"}),
    ]
    stored = agentlat.parse_stored(lines)
    assert set(stored) == {"burst/a.txt", "dir (x)/b c.txt"}
    assert stored["dir (x)/b c.txt"] - stored["burst/a.txt"] == pytest.approx(3.25)


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(200, 0, -1)]
    assert agentlat.percentile(values, 50) == 100.0
    assert agentlat.percentile(values, 99) == 198.0
    assert agentlat.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        agentlat.percentile([], 50)


def test_datasets_are_deterministic_and_exact(tmp_path: Path) -> None:
    a = data.text_tree(tmp_path / "a", count=25, total=300_000)
    b = data.text_tree(tmp_path / "b", count=25, total=300_000)
    assert a.bytes == 300_000 and a.files == 25
    sa, sb = data.tree_state(a.root), data.tree_state(b.root)
    assert {k: v.sha256 for k, v in sa.items()} == {k: v.sha256 for k, v in sb.items()}
    assert sum(v.size for v in sa.values()) == 300_000
    sample = (a.root / next(iter(sa))).read_bytes()
    assert sample.decode("ascii").count("\n") > 0  # text, not bytes
    r = data.random_tree(tmp_path / "r", count=3, size=1000)
    assert r.bytes == 3000 and len(data.tree_state(r.root)) == 3
    big = data.big_file(tmp_path / "big", size=5 * MiB + 3, block=MiB)
    assert (big.root / "big.bin").stat().st_size == 5 * MiB + 3


def test_tree_differences_name_each_problem(tmp_path: Path) -> None:
    src = data.random_tree(tmp_path / "src", count=3, size=100).root
    expected = data.tree_state(src)
    assert data.tree_differences(expected, data.tree_state(src)) == []
    files = sorted(src.rglob("*.bin"))
    files[0].write_bytes(b"x" * 100)
    files[1].chmod(0o600)
    files[2].unlink()
    (src / "extra").write_bytes(b"")
    problems = data.tree_differences(expected, data.tree_state(src))
    assert any(p.startswith("content differs") for p in problems)
    assert any(p.startswith("mode differs") for p in problems)
    assert any(p.startswith("missing") for p in problems)
    assert any(p.startswith("unexpected: extra") for p in problems)
    with pytest.raises(data.VerifyError, match="not identical"):
        data.verify_tree(expected, src, "test restore")


def test_default_scale_is_the_issues_sizes() -> None:
    sizes = compare.scaled(1.0)
    assert sizes["random_files"] * sizes["random_file_size"] == 512 * MiB
    assert sizes["random_file_size"] == 4 * MiB
    assert sizes["big_bytes"] == 1024 * MiB
    assert sizes["agent_files"] == 200
    small = compare.scaled(0.01)
    assert small["random_files"] >= 2 and small["agent_files"] >= 10


def test_compare_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--only", "random,bogus"], ["--scale", "0"], ["--scale", "abc"]):
        with pytest.raises(SystemExit) as exc:
            compare.main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown part(s) ['bogus']" in err and "--scale must be in (0, 4]" in err


def test_throwaway_config_keeps_peers_and_resolves_secret_files(tmp_path: Path) -> None:
    src = tmp_path / "conf" / "cv.yaml"
    src.parent.mkdir()
    src.write_text(
        "vault: {id: home, state_dir: /var/lib/x}\n"
        "watch: {path: /data, settle_seconds: 3}\n"
        "flows: [{match: '**', ignore: true}]\n"
        "peers:\n"
        "  - {name: a, endpoint: 'http://127.0.0.1:9', bucket: b, access_key: k,\n"
        "     secret_key_file: secrets/a, access_key_file: '${HOME}/k'}\n"
        "  - {name: d, path: /abs/dir}\n"
    )
    out = e2e.throwaway_config(src, tmp_path / "work", "bench-123")
    import yaml

    cfg = yaml.safe_load(out.read_text())
    assert cfg["vault"] == {"id": "bench-123", "state_dir": str(tmp_path / "work" / "state")}
    assert cfg["watch"]["path"] == str(tmp_path / "work" / "data")
    assert cfg["watch"]["settle_seconds"] == 3
    assert cfg["peers"][0]["secret_key_file"] == str(src.parent / "secrets" / "a")
    assert cfg["peers"][0]["access_key_file"] == "${HOME}/k"  # expanded by the child
    assert cfg["peers"][1]["path"] == "/abs/dir"
    assert "flows" not in cfg and cfg["api"] == {"enabled": False}


def test_purge_refuses_a_vault_it_did_not_create(tmp_path: Path) -> None:
    config = tmp_path / "cv.yaml"
    config.write_text(
        f"vault: {{id: home, state_dir: {tmp_path}/s}}\n"
        f"replication: {{replicas: 1}}\npeers: [{{name: d, path: {tmp_path}/peer}}]\n"
    )
    with pytest.raises(ValueError, match="not a benchmark vault"):
        e2e.purge_vault(config)


def test_charts_and_page_are_written(tmp_path: Path) -> None:
    results = sample_results()
    results["datasets"]["text"] = dict(results["datasets"]["random"], label="text")
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir()
    made = compare.write_outputs(results, out)
    names = sorted(Path(path).name for _, path in made)
    assert names == ["agent-latency.png", "peak-rss.png", "random.png", "text.png"]
    for _, path in made:
        assert (out.parent / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path})" in out.read_text()
    assert json.loads((out.parent / "benchmarks" / "results.json").read_text())["scale"] == 1.0


def test_render_redraws_from_saved_results_without_running(tmp_path: Path) -> None:
    first = tmp_path / "a" / "benchmarks.md"
    first.parent.mkdir()
    compare.write_outputs(sample_results(), first)
    again = tmp_path / "b" / "benchmarks.md"
    again.parent.mkdir()
    saved = first.parent / "benchmarks" / "results.json"
    assert compare.main(["--render", str(saved), "--out", str(again)]) == 0
    assert again.read_text() == first.read_text()
    assert (again.parent / "benchmarks" / "random.png").exists()
