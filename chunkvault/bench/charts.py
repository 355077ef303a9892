"""PNG charts for docs/benchmarks.md (matplotlib, the ``bench`` extra). Each function
takes the results dict (see :mod:`chunkvault.bench.report`) and writes one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chunkvault.bench.report import NO_RATE_ROWS, MiB, files_per_s, mb_per_s, with_derived

COLOURS = {"raw boto3": "#9e9e9e", "chunkvault": "#1f77b4", "restic": "#ff7f0e",
           "rclone": "#2ca02c"}  # fmt: skip


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(
            "matplotlib is missing: pip install -e '.[bench]' (make bench does this)"
        ) from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _label(row: dict[str, Any]) -> str:
    """Unique per row: matplotlib merges bars whose category labels are equal."""
    replicas = f", R={row['replicas']}" if row.get("replicas") else ""
    return f"{row['tool']}: {row['operation']}{replicas}"


def throughput(dataset: dict[str, Any], path: Path) -> None:
    """Horizontal bars: MB/s of every operation on one dataset, coloured by tool."""
    plt = _pyplot()
    rows = [r for r in with_derived(dataset) if r["id"] not in NO_RATE_ROWS]
    labels = [_label(r) for r in rows]
    values = [mb_per_s(dataset["bytes"], r["seconds"]) or 0 for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    bars = ax.barh(labels, values, color=[COLOURS.get(r["tool"], "#555555") for r in rows])
    ax.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
    ax.set_xlim(0, max(values, default=1) * 1.12 or 1)  # room for the labels
    ax.invert_yaxis()
    ax.set_xlabel("MB/s (10^6 bytes of the dataset per second; higher is better)")
    ax.set_title(dataset.get("label", ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def files_per_s_chart(dataset: dict[str, Any], path: Path) -> None:
    """Horizontal bars: files/s of every command on a small-file dataset, coloured by
    tool, with the objects each push or backup left on its peers in its label."""
    plt = _pyplot()
    rows = [r for r in with_derived(dataset) if r["id"] not in NO_RATE_ROWS]
    labels = [
        _label(r) + (f" ({r['objects']:,} objects)" if r.get("objects") is not None else "")
        for r in rows
    ]
    values = [files_per_s(dataset["files"], r["seconds"]) or 0 for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    bars = ax.barh(labels, values, color=[COLOURS.get(r["tool"], "#555555") for r in rows])
    ax.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
    ax.set_xlim(0, max(values, default=1) * 1.12 or 1)
    ax.invert_yaxis()
    ax.set_xlabel("files/s (per second of the whole command; higher is better)")
    ax.set_title(dataset.get("label", ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def peak_rss(dataset: dict[str, Any], path: Path) -> None:
    """Bars: peak RSS of each command on the one-big-file dataset, with the 160 MiB goal."""
    plt = _pyplot()
    rows = [r for r in dataset["rows"] if r.get("peak_rss")]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.4))
    bars = ax.barh(
        [_label(r) for r in rows],
        [r["peak_rss"] / MiB for r in rows],
        color=[COLOURS.get(r["tool"], "#555555") for r in rows],
    )
    ax.bar_label(bars, fmt="%.0f MiB", padding=3, fontsize=8)
    ax.set_xlim(0, max([r["peak_rss"] / MiB for r in rows] + [160]) * 1.18)
    ax.axvline(160, color="red", linestyle="--", linewidth=1, label="goal for push: 160 MiB")
    ax.invert_yaxis()
    ax.set_xlabel("peak RSS, MiB (lower is better)")
    ax.set_title(dataset.get("label", ""), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def agent_latency(agent: dict[str, Any], path: Path) -> None:
    """The distribution of change-to-durable latencies, with settle_seconds + 2 s."""
    plt = _pyplot()
    values = sorted(agent["latencies"])
    share = [(i + 1) / len(values) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.step(values, share, where="post", color=COLOURS["chunkvault"])
    limit = agent["settle_seconds"] + 2
    ax.axvline(limit, color="red", linestyle="--", linewidth=1,
               label=f"goal for p99: settle_seconds + 2 s = {limit:g} s")  # fmt: skip
    ax.axhline(0.99, color="#999999", linestyle=":", linewidth=1, label="p99")
    ax.set_xlabel("seconds from close() to durable at R")
    ax.set_ylabel("share of files")
    ax.set_title(f"chunkvault run: {agent['files']} small files written at once", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
