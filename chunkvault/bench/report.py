"""What ``make bench`` concludes from its measurements: derived rows, the issue's target
ratios, and docs/benchmarks.md. Pure functions over the results dict (JSON-shaped, saved
beside the page), so they are unit-tested without running anything.

Results shape::

    {"machine": {...}, "settings": {...}, "scale": 1.0, "command": "make bench",
     "duration_seconds": 812.0,
     "datasets": {"random": {"label": ..., "files": 128, "bytes": ..., "rows": [Row...]},
                  "text": {...}, "big": {...}},
     "agent": {"files": 200, "p50": .., "p99": .., "max": .., "settle_seconds": 1.0,
               "replicas": 2}}
    Row = {"id": "cv_push", "tool": "chunkvault", "operation": "push", "replicas": 2,
           "seconds": 7.1, "peak_rss": 123456 | None, "stored": 1073741824 | None,
           "verified": True | None}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MB = 1_000_000
MiB = 1024 * 1024
# "RSS does not grow with file size": pushing one big file may peak at most this much above
# pushing a tree of chunk-sized files (the same pipeline, one file vs many).
RSS_GROWTH = 1.25
Results = dict[str, Any]
Row = dict[str, Any]


def mb_per_s(nbytes: int, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return nbytes / MB / seconds


def row(rows: Sequence[Row], row_id: str) -> Row | None:
    return next((r for r in rows if r.get("id") == row_id), None)


def seconds_of(rows: Sequence[Row], row_id: str) -> float | None:
    found = row(rows, row_id)
    return None if found is None else found.get("seconds")


def steady_state_row(rows: Sequence[Row]) -> Row | None:
    """push minus a no-change push: the time spent moving data, without the fixed cost
    (start-up, unlock, scan) that a no-change push is made of."""
    push, nochange = seconds_of(rows, "cv_push"), seconds_of(rows, "cv_nochange")
    if push is None or nochange is None or push <= nochange:
        return None
    base = row(rows, "cv_push") or {}
    return {"id": "cv_steady", "tool": "chunkvault",
            "operation": "push, steady state (push - no-change push)",
            "replicas": base.get("replicas"), "seconds": push - nochange, "peak_rss": None,
            "stored": None, "verified": None}  # fmt: skip


def with_derived(dataset: dict[str, Any]) -> list[Row]:
    rows = list(dataset.get("rows", []))
    steady = steady_state_row(rows)
    if steady is not None and row(rows, "cv_steady") is None:
        at = next(i for i, r in enumerate(rows) if r.get("id") == "cv_nochange") + 1
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
                "holds": None if ratio is None else ratio >= goal,
            })  # fmt: skip
    big = results.get("datasets", {}).get("big")
    if big:
        mine = (row(big["rows"], "cv_push") or {}).get("peak_rss")
        restic = (row(big["rows"], "restic_backup") or {}).get("peak_rss")
        out.append({
            "target": f"peak RSS pushing one {_size(big['bytes'])} file",
            "measured": _fmt_rss(mine), "reference": f"restic backup {_fmt_rss(restic)}",
            "ratio": _ratio(mine, restic), "goal": "<= 160 MiB",
            "holds": None if mine is None else mine <= 160 * MiB,
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
                "holds": None if growth is None else growth <= RSS_GROWTH,
            })  # fmt: skip
    agent = results.get("agent")
    if agent and agent.get("p99") is not None:
        limit = agent["settle_seconds"] + 2
        out.append({
            "target": f"agent p99 close_write -> durable at R={agent['replicas']}, "
                      f"{agent['files']} small files",
            "measured": f"{agent['p99']:.2f} s", "reference": f"settle_seconds + 2 s = {limit:g} s",
            "ratio": _ratio(agent["p99"], limit), "goal": f"<= {limit:g} s",
            "holds": agent["p99"] <= limit,
        })  # fmt: skip
    return out


# --- formatting --------------------------------------------------------------------------


def _fmt_mbps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} MB/s"


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


def dataset_table(dataset: dict[str, Any]) -> str:
    nbytes = dataset["bytes"]
    rows = []
    for r in with_derived(dataset):
        rows.append([
            r["tool"], r["operation"], "-" if r.get("replicas") is None else r["replicas"],
            f"{r['seconds']:.2f}",
            "-" if r["id"] == "cv_nochange" else f"{mb_per_s(nbytes, r['seconds']) or 0:,.1f}",
            _fmt_rss(r.get("peak_rss")), "-" if r.get("stored") is None else _size(r["stored"]),
            {True: "yes", False: "NO", None: "-"}[r.get("verified")],
        ])  # fmt: skip
    return markdown_table(
        ["tool", "operation", "R", "seconds", "MB/s", "peak RSS", "stored on peers", "verified"],
        rows,
    )


def targets_table(results: Results) -> str:
    holds = {True: "**holds**", False: "**misses**", None: "not measured"}
    return markdown_table(
        ["target", "measured", "reference", "ratio", "goal", "verdict"],
        [[t["target"], t["measured"], t["reference"],
          "-" if t["ratio"] is None else f"{t['ratio']:.2f}", t["goal"], holds[t["holds"]]]
         for t in targets(results)],
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
        targets_table(results),
    ]
    for key, dataset in results.get("datasets", {}).items():
        parts += ["", f"## {dataset.get('label', key)}", "", dataset_table(dataset)]
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
