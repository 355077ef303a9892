"""What ``make bench`` concludes from its measurements: derived rows, the issue's target
ratios, and docs/benchmarks.md. Pure functions over the results dict (JSON-shaped, saved
beside the page), so they are unit-tested without running anything.

Results shape::

    {"machine": {...}, "settings": {...}, "scale": 1.0, "command": "make bench",
     "duration_seconds": 812.0,
     "datasets": {"random": {"label": ..., "files": 128, "bytes": ..., "rows": [Row...]},
                  "text": {...}, "big": {...}, "small": {...}, "many": {...}},
     "agent": {"files": 200, "p50": .., "p99": .., "max": .., "settle_seconds": 1.0,
               "replicas": 2},
     "agent_idle": {"files": 5, "max": .., "latencies": [..], "gap_seconds": 3.0,
                    "settle_seconds": 1.0, "pack_flush_seconds": 2.0,
                    "pack_flush_configured": True, "replicas": 2}}
    Row = {"id": "cv_push", "tool": "chunkvault", "operation": "push", "replicas": 2,
           "seconds": 7.1, "peak_rss": 123456 | None, "stored": 1073741824 | None,
           "objects": 8003 | None, "verified": True | None}

Each target carries the issue that set it (``issue``: 11 or 12); the page groups them so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MB = 1_000_000
MiB = 1024 * 1024
# "RSS does not grow with file size": pushing one big file may peak at most this much above
# pushing a tree of chunk-sized files (the same pipeline, one file vs many).
RSS_GROWTH = 1.25
# Issue 12's limits: objects a 2,000-small-file push may leave on the peers, the peak RSS
# of pushing 20,000 small files, and the slack over settle + pack flush for a lone file.
SMALL_OBJECTS_LIMIT = 200
MANY_RSS_LIMIT = 200 * MiB
IDLE_SLACK_SECONDS = 1.0
DEFAULT_PACK_FLUSH_SECONDS = 2.0
# Datasets whose figure is files per second (the bytes are too few to matter).
FILE_RATE_DATASETS = ("small", "many")
# Rows that move no data: no rate is shown for them.
NO_RATE_ROWS = ("cv_nochange", "restic_nochange", "cv_ls")
Results = dict[str, Any]
Row = dict[str, Any]


def mb_per_s(nbytes: int, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return nbytes / MB / seconds


def files_per_s(files: int, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return files / seconds


def median_rows(rounds: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per id from several rounds of the same steps: the round whose time is the
    median (its other figures with it, so they stay consistent), with every round's
    seconds under ``runs``. Ids keep their first round's order; a round that lost a row
    (its step failed) leaves the median to the others."""
    by_id: dict[str, list[Row]] = {}
    for rows in rounds:
        for r in rows:
            by_id.setdefault(r["id"], []).append(r)
    out: list[Row] = []
    for runs in by_id.values():
        timed = sorted(runs, key=lambda r: (r.get("seconds") is None, r.get("seconds") or 0))
        chosen = dict(timed[(len(timed) - 1) // 2])
        if len(runs) > 1:
            chosen["runs"] = [r.get("seconds") for r in runs]
        out.append(chosen)
    return out


def row(rows: Sequence[Row], row_id: str) -> Row | None:
    return next((r for r in rows if r.get("id") == row_id), None)


def seconds_of(rows: Sequence[Row], row_id: str) -> float | None:
    found = row(rows, row_id)
    return None if found is None else found.get("seconds")


#: (tool, its push row, its no-change push row, the derived row's id and operation)
STEADY = (
    ("chunkvault", "cv_push", "cv_nochange", "cv_steady",
     "push, steady state (push - no-change push)"),
    ("restic", "restic_backup", "restic_nochange", "restic_steady",
     "backup, steady state (backup - no-change backup)"),
)  # fmt: skip


def steady_state_row(rows: Sequence[Row], tool: str = "chunkvault") -> Row | None:
    """push minus a no-change push: the time spent moving data, without the fixed cost
    (start-up, unlock, scan; for restic also its lock, index and snapshot) that a no-change
    run is made of."""
    _, push_id, nochange_id, steady_id, operation = next(s for s in STEADY if s[0] == tool)
    push, nochange = seconds_of(rows, push_id), seconds_of(rows, nochange_id)
    if push is None or nochange is None or push <= nochange:
        return None
    base = row(rows, push_id) or {}
    return {"id": steady_id, "tool": tool, "operation": operation,
            "replicas": base.get("replicas"), "seconds": push - nochange, "peak_rss": None,
            "stored": None, "objects": None, "verified": None}  # fmt: skip


def with_derived(dataset: dict[str, Any]) -> list[Row]:
    rows = list(dataset.get("rows", []))
    for tool, _, nochange_id, steady_id, _ in STEADY:
        steady = steady_state_row(rows, tool)
        if steady is not None and row(rows, steady_id) is None:
            at = next(i for i, r in enumerate(rows) if r.get("id") == nochange_id) + 1
            rows.insert(at, steady)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def targets(results: Results) -> list[dict[str, Any]]:
    """The issue's targets, each as measured / reference = ratio vs goal (``holds`` is
    None when a figure is missing)."""
    out: list[dict[str, Any]] = []
    data = results.get("datasets", {}).get("random")
    if data:
        nbytes, rows = data["bytes"], with_derived(data)
        speed = lambda rid: mb_per_s(nbytes, seconds_of(rows, rid))  # noqa: E731
        replicas = (row(rows, "cv_push") or {}).get("replicas", 2)
        for name, mine, ref, goal, ref_name in (
            (f"steady-state push vs raw put ceiling, both R={replicas}", "cv_steady",
             f"ceiling_put_r{replicas}", 0.8, "raw put"),
            (f"push at R={replicas} vs restic backup at R=1", "cv_push", "restic_backup", 1.5,
             "restic backup"),
            ("restore vs restic restore", "cv_restore", "restic_restore", 1.5, "restic restore"),
            ("restore vs raw get ceiling", "cv_restore", "ceiling_get", 0.5, "raw get"),
        ):  # fmt: skip
            a, b = speed(mine), speed(ref)
            ratio = _ratio(a, b)
            out.append({
                "target": name, "measured": _fmt_mbps(a), "reference": f"{ref_name} {_fmt_mbps(b)}",
                "ratio": ratio, "goal": f">= {goal:g}x",
                "holds": None if ratio is None else ratio >= goal, "issue": 11,
            })  # fmt: skip
        ec, r3 = row(rows, "cvec_push"), row(rows, "cvr3_push")
        if ec and ec.get("stored"):
            per_byte = ec["stored"] / nbytes
            ref = r3["stored"] / nbytes if r3 and r3.get("stored") else None
            out.append({
                "target": "bytes on the peers per dataset byte, erasure 3+2 over 5 peers "
                          "(survives any 2 lost)",
                "measured": f"{per_byte:.2f}x",
                "reference": "R=3 not measured" if ref is None else f"R=3 {ref:.2f}x",
                "ratio": _ratio(per_byte, ref), "goal": "<= 1.8x",
                "holds": per_byte <= 1.8, "issue": 15,
            })  # fmt: skip
    big = results.get("datasets", {}).get("big")
    if big:
        mine = (row(big["rows"], "cv_push") or {}).get("peak_rss")
        restic = (row(big["rows"], "restic_backup") or {}).get("peak_rss")
        out.append({
            "target": f"peak RSS pushing one {_size(big['bytes'])} file",
            "measured": _fmt_rss(mine), "reference": f"restic backup {_fmt_rss(restic)}",
            "ratio": _ratio(mine, restic), "goal": "<= 160 MiB",
            "holds": None if mine is None else mine <= 160 * MiB, "issue": 11,
        })  # fmt: skip
        small = results.get("datasets", {}).get("random")
        tree_rss = (row(small["rows"], "cv_push") or {}).get("peak_rss") if small else None
        if tree_rss:
            growth = _ratio(mine, tree_rss)
            out.append({
                "target": "RSS does not grow with file size: push of one "
                          f"{_size(big['bytes'])} file vs a tree of "
                          f"{_size(small['bytes'] // small['files'])} files",
                "measured": _fmt_rss(mine), "reference": f"tree {_fmt_rss(tree_rss)}",
                "ratio": growth, "goal": f"<= {RSS_GROWTH:g}x",
                "holds": None if growth is None else growth <= RSS_GROWTH, "issue": 11,
            })  # fmt: skip
    agent = results.get("agent")
    if agent and agent.get("p99") is not None:
        limit = agent["settle_seconds"] + 2
        out.append({
            "target": f"agent p99 close_write -> durable at R={agent['replicas']}, "
                      f"{agent['files']} small files",
            "measured": f"{agent['p99']:.2f} s", "reference": f"settle_seconds + 2 s = {limit:g} s",
            "ratio": _ratio(agent["p99"], limit), "goal": f"<= {limit:g} s",
            "holds": agent["p99"] <= limit, "issue": 11,
        })  # fmt: skip
    return out + small_file_targets(results)


def small_file_targets(results: Results) -> list[dict[str, Any]]:
    """Issue 12's targets: small files against restic (files/s, objects left on the
    peers, restore), the peak RSS of pushing many small files, and a lone file's latency
    in an idle agent. Ratios are measured / reference, or measured / limit where the goal
    is a fixed limit."""
    out: list[dict[str, Any]] = []
    datasets = results.get("datasets", {})
    small = datasets.get("small")
    if small:
        rows = small["rows"]
        rate = lambda rid: files_per_s(small["files"], seconds_of(rows, rid))  # noqa: E731
        replicas = (row(rows, "cv_push") or {}).get("replicas", 2)
        for name, mine, ref, ref_name, note in (
            (f"small files: push files/s at R={replicas} vs restic backup at R=1", "cv_push",
             "restic_backup", "restic backup", " (goal 2x)"),
            ("small files: restore vs restic restore", "cv_restore", "restic_restore",
             "restic restore", ""),
        ):  # fmt: skip
            a, b = rate(mine), rate(ref)
            ratio = _ratio(a, b)
            out.append({
                "target": name, "measured": _fmt_fps(a), "reference": f"{ref_name} {_fmt_fps(b)}",
                "ratio": ratio, "goal": f">= 1x{note}",
                "holds": None if ratio is None else ratio >= 1.0, "issue": 12,
            })  # fmt: skip
        mine_objects = (row(rows, "cv_push") or {}).get("objects")
        restic_objects = (row(rows, "restic_backup") or {}).get("objects")
        out.append({
            "target": "small files: objects on the peers",
            "measured": _fmt_count(mine_objects),
            "reference": f"restic backup {_fmt_count(restic_objects)}",
            "ratio": _ratio(mine_objects, SMALL_OBJECTS_LIMIT),
            "goal": f"<= {SMALL_OBJECTS_LIMIT}",
            "holds": None if mine_objects is None else mine_objects <= SMALL_OBJECTS_LIMIT,
            "issue": 12,
        })  # fmt: skip
    many = datasets.get("many")
    if many:
        rss = (row(many["rows"], "cv_push") or {}).get("peak_rss")
        out.append({
            "target": f"{many['files']:,} small files: push peak RSS",
            "measured": _fmt_rss(rss), "reference": f"limit {_fmt_rss(MANY_RSS_LIMIT)}",
            "ratio": _ratio(rss, MANY_RSS_LIMIT), "goal": f"<= {_fmt_rss(MANY_RSS_LIMIT)}",
            "holds": None if rss is None else rss <= MANY_RSS_LIMIT, "issue": 12,
        })  # fmt: skip
    idle = results.get("agent_idle")
    if idle and idle.get("max") is not None:
        limit = idle_limit(idle)
        assumed = "" if idle.get("pack_flush_configured", True) else (
            " (pack_flush_seconds assumed: this chunkvault has no such setting)"
        )  # fmt: skip
        out.append({
            "target": "agent: one small file into an idle tree, durable at "
                      f"R={idle['replicas']}, max of {idle['files']}",
            "measured": f"{idle['max']:.2f} s",
            "reference": f"settle_seconds {idle['settle_seconds']:g} s + pack_flush_seconds "
                         f"{_pack_flush(idle):g} s{assumed} + {IDLE_SLACK_SECONDS:g} s",
            "ratio": _ratio(idle["max"], limit), "goal": f"<= {limit:g} s",
            "holds": idle["max"] <= limit, "issue": 12,
        })  # fmt: skip
    return out


def _pack_flush(idle: dict[str, Any]) -> float:
    value = idle.get("pack_flush_seconds")
    return DEFAULT_PACK_FLUSH_SECONDS if value is None else float(value)


def idle_limit(idle: dict[str, Any]) -> float:
    """settle + pack flush + 1 s: how long a lone small file may take to be durable."""
    return float(idle["settle_seconds"]) + _pack_flush(idle) + IDLE_SLACK_SECONDS


# --- formatting --------------------------------------------------------------------------


def _fmt_mbps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} MB/s"


def _fmt_fps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} files/s"


def _fmt_count(value: int | None) -> str:
    return "-" if value is None else f"{value:,} objects"


def _fmt_rss(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f} MiB"


def _size(nbytes: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} B"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub table; ``|`` inside a cell is escaped."""
    cell = lambda v: "-" if v is None else str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def dataset_table(dataset: dict[str, Any], *, per_file: bool = False) -> str:
    """One row per command. ``per_file`` adds files/s (small-file datasets); an objects
    column appears when any row counted the objects left on its peers."""
    nbytes, files = dataset["bytes"], dataset["files"]
    derived = with_derived(dataset)
    objects = any(r.get("objects") is not None for r in derived)
    headers = ["tool", "operation", "R", "seconds"] + (["files/s"] if per_file else [])
    headers += ["MB/s", "peak RSS", "stored on peers"] + (["objects"] if objects else [])
    rows = []
    for r in derived:
        moved = r["id"] not in NO_RATE_ROWS
        cells: list[Any] = [r["tool"], r["operation"],
                            "-" if r.get("replicas") is None else r["replicas"],
                            f"{r['seconds']:.2f}"]  # fmt: skip
        if per_file:
            cells.append(f"{files_per_s(files, r['seconds']) or 0:,.0f}" if moved else "-")
        cells += [f"{mb_per_s(nbytes, r['seconds']) or 0:,.1f}" if moved else "-",
                  _fmt_rss(r.get("peak_rss")),
                  "-" if r.get("stored") is None
                  else f"{_size(r['stored'])} ({r['stored'] / max(1, nbytes):.2f}x)"]  # fmt: skip
        if objects:
            cells.append("-" if r.get("objects") is None else f"{r['objects']:,}")
        cells.append({True: "yes", False: "NO", None: "-"}[r.get("verified")])
        rows.append(cells)
    return markdown_table([*headers, "verified"], rows)


def targets_table(results: Results, issue: int | None = None) -> str:
    """The targets of one issue (all of them when ``issue`` is None)."""
    holds = {True: "**holds**", False: "**misses**", None: "not measured"}
    chosen = [t for t in targets(results) if issue is None or t.get("issue") == issue]
    return markdown_table(
        ["target", "measured", "reference", "ratio", "goal", "verdict"],
        [[t["target"], t["measured"], t["reference"],
          "-" if t["ratio"] is None else f"{t['ratio']:.2f}", t["goal"], holds[t["holds"]]]
         for t in chosen],
    )  # fmt: skip


def render_markdown(results: Results, charts: Sequence[tuple[str, str]], method: str) -> str:
    """docs/benchmarks.md: targets, one table per dataset, agent latency, charts, the
    machine, how to reproduce, and how each figure is measured (``method``)."""
    machine, settings = results.get("machine", {}), results.get("settings", {})
    scale = results.get("scale", 1.0)
    parts = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m chunkvault.bench.compare`); do not edit by hand."
        f" Run {results.get('started', '?')}, took {results.get('duration_seconds', 0) / 60:.1f}"
        " min.",
    ]
    if scale != 1.0:
        parts += ["", f"**Reduced run (scale {scale:g}): not the issue's sizes; do not quote.**"]
    parts += [
        "",
        "Reproduce: `make bench` (installs Debian's `restic` and `rclone` if missing, and the "
        "`bench` extra with matplotlib; not part of `make test`). "
        "`make bench BENCH_SCALE=0.1` is a quick smaller run for development.",
        "",
        "## Targets (issue 11)",
        "",
        targets_table(results, 11),
    ]
    for issue in (12, 15):
        if any(t.get("issue") == issue for t in targets(results)):
            parts += ["", f"## Targets (issue {issue})", "", targets_table(results, issue)]
    for key, dataset in results.get("datasets", {}).items():
        table = dataset_table(dataset, per_file=key in FILE_RATE_DATASETS)
        parts += ["", f"## {dataset.get('label', key)}", "", table]
    agent = results.get("agent")
    if agent:
        parts += [
            "",
            f"## Agent: change to durable, {agent['files']} small files",
            "",
            markdown_table(
                [
                    "files",
                    "settle_seconds",
                    "R (= min_replicas)",
                    "p50",
                    "p99",
                    "max",
                    "last file durable after the first close",
                ],
                [
                    [
                        agent["files"],
                        f"{agent['settle_seconds']:g} s",
                        agent["replicas"],
                        f"{agent['p50']:.2f} s",
                        f"{agent['p99']:.2f} s",
                        f"{agent['max']:.2f} s",
                        f"{agent['all_stored_after']:.2f} s",
                    ]
                ],
            ),
        ]
    idle = results.get("agent_idle")
    if idle:
        parts += [
            "",
            "## Agent: one small file into an idle tree",
            "",
            markdown_table(
                ["files (one at a time)", "idle between", "settle_seconds",
                 "pack_flush_seconds", "R (= min_replicas)", "each, close -> durable", "max"],
                [[idle["files"], f"{idle.get('gap_seconds', 0):g} s",
                  f"{idle['settle_seconds']:g} s",
                  f"{_pack_flush(idle):g} s"
                  + ("" if idle.get("pack_flush_configured", True) else " (assumed)"),
                  idle["replicas"], ", ".join(f"{v:.2f}" for v in idle["latencies"]) + " s",
                  f"{idle['max']:.2f} s"]],
            ),
        ]  # fmt: skip
    if charts:
        parts += ["", "## Charts", ""]
        parts += [f"![{title}]({path})" for title, path in charts]
    parts += [
        "",
        "## Machine",
        "",
        markdown_table(["", ""], [[k, v] for k, v in machine.items()]),
        "",
        "## Settings",
        "",
        markdown_table(["", ""], [[k, v] for k, v in settings.items()]),
        "",
        "## Method",
        "",
        method.strip(),
        "",
    ]
    return "\n".join(parts)
