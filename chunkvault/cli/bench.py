"""``chunkvault bench ...``: how fast this machine and these peers are, like ``kopia
benchmark``. ``crypto``, ``chunker``, ``compression`` and ``erasure`` run in this process
and need no config; ``peers`` and ``e2e`` use the configured peers (``e2e`` in a throwaway vault it
deletes afterwards). Each prints a table, or JSON with ``--json``. The measuring lives in
:mod:`chunkvault.bench`; this module only parses options and prints."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json, table
from chunkvault.errors import ChunkvaultError
from chunkvault.sizes import format_size, parse_size

MiB = 1024 * 1024


class SizeType(click.ParamType):
    """A byte size such as 64MiB, at least ``minimum``; a clear usage error otherwise."""

    name = "size"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size < self.minimum:
            self.fail(f"must be at least {format_size(self.minimum)}, got {value}", param, ctx)
        return size


def _levels(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers such as 1,3,9, got {value!r}"
        ) from None
    from chunkvault.bench.micro import ZSTD_LEVELS

    low, high = ZSTD_LEVELS
    bad = [level for level in levels if not low <= level <= high]
    if not levels or bad:
        raise click.BadParameter(f"zstd levels must be {low}..{high}, got {value!r}")
    return levels


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _mbps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _emit(as_json: bool, data: Any, headers: list[str], rows: list[list[Any]]) -> None:
    if as_json:
        echo_json(data)
    else:
        click.echo(table(headers, rows))


@click.group()
def bench() -> None:
    """Measure crypto, chunking, compression, the peers, and a whole push and restore."""


@bench.command("crypto")
@click.option("--size", type=SizeType(), default="128MiB", show_default=True,
              help="Bytes to process per operation.")  # fmt: skip
@click.option("--block", type=SizeType(), default="4MiB", show_default=True,
              help="Bytes per call (a chunk).")  # fmt: skip
@json_option
def crypto_cmd(size: int, block: int, as_json: bool) -> None:
    """Chunk ids (HMAC-SHA256), AES-256-GCM, a whole chunk envelope, one data key wrapped
    or sealed (write-only hosts), and one passphrase derivation per KDF."""
    from chunkvault.bench import micro

    rows = micro.crypto(size, block)
    _emit(as_json, {"size": size, "block": block, "results": rows},
          ["OPERATION", "MB/s", "SECONDS"],
          [[r["operation"], _mbps(r["mb_per_s"]), _seconds(r["seconds"])]
           for r in rows])  # fmt: skip


@bench.command("erasure")
@click.option("--size", type=SizeType(), default="256MiB", show_default=True,
              help="Bytes to encode and read back per operation.")  # fmt: skip
@click.option("--block", type=SizeType(), default="16MiB", show_default=True,
              help="Bytes per object (a pack: chunking.pack_size).")  # fmt: skip
@click.option("--data", type=click.IntRange(1, 255), default=3, show_default=True,
              help="Data shares (replication.erasure.data).")  # fmt: skip
@click.option("--parity", type=click.IntRange(1, 255), default=2, show_default=True,
              help="Parity shares (replication.erasure.parity).")  # fmt: skip
@json_option
def erasure_cmd(size: int, block: int, data: int, parity: int, as_json: bool) -> None:
    """Reed-Solomon shares (replication.erasure): encode, read, rebuild MB/s, and the
    bytes stored per byte beside whole copies that survive as many lost peers."""
    from chunkvault.bench import micro

    if data + parity > 256:
        raise click.BadParameter(f"data + parity is {data + parity}, at most 256",
                                 param_hint="--parity")  # fmt: skip
    rows = micro.erasure(size, block, data, parity)
    _emit(as_json, {"size": size, "block": block, "data": data, "parity": parity,
                    "results": rows},
          ["OPERATION", "MB/s", "SECONDS", "STORED PER BYTE"],
          [[r["operation"], _mbps(r["mb_per_s"]),
            _seconds(r["seconds"]) if r["mb_per_s"] is not None else "-",
            f"{r['stored_per_byte']:.3f}" if "stored_per_byte" in r else "-"]
           for r in rows])  # fmt: skip


def _seconds(seconds: float) -> str:
    """Three decimals, or microseconds for what takes less than a millisecond."""
    return f"{seconds:.3f}" if seconds >= 0.001 else f"{seconds * 1e6:.1f} us"


@bench.command("chunker")
@click.option("--size", type=SizeType(), default="256MiB", show_default=True,
              help="Bytes of random data to split.")  # fmt: skip
@click.option("--min-size", type=SizeType(), default="512KiB", show_default=True)
@click.option("--avg-size", type=SizeType(), default="2MiB", show_default=True)
@click.option("--max-size", type=SizeType(), default="8MiB", show_default=True)
@json_option
def chunker_cmd(size: int, min_size: int, avg_size: int, max_size: int, as_json: bool) -> None:
    """FastCDC (content-defined) and fixed-size chunking of random data."""
    from chunkvault.bench import micro
    from chunkvault.chunking import chunker_problems

    problems = chunker_problems("cdc", min_size, avg_size, max_size)
    if problems:
        key, message = problems[0]
        raise click.BadParameter(message, param_hint=f"--{key.replace('_', '-')}")
    rows = micro.chunker(size, min_size, avg_size, max_size)
    _emit(as_json, {"size": size, "results": rows},
          ["CHUNKER", "MB/s", "CHUNKS", "MEAN CHUNK"],
          [[r["operation"], _mbps(r["mb_per_s"]), r["chunks"], format_size(r["mean_chunk"])]
           for r in rows])  # fmt: skip


@bench.command("compression")
@click.option("--size", type=SizeType(), default="64MiB", show_default=True,
              help="Bytes to compress per level and kind of data.")  # fmt: skip
@click.option("--levels", default="1,3,9", show_default=True,
              help="zstd levels, comma-separated (chunking.zstd_level: 3).")  # fmt: skip
@json_option
def compression_cmd(size: int, levels: str, as_json: bool) -> None:
    """zstd on generated text and on random data: ratio, compress and decompress MB/s."""
    from chunkvault.bench import micro

    rows = micro.compression(size, _levels(levels))
    _emit(as_json, {"size": size, "results": rows},
          ["COMPRESSION", "RATIO", "COMPRESS MB/s", "DECOMPRESS MB/s"],
          [[r["operation"], f"{r['ratio']:.2f}", _mbps(r["mb_per_s"]),
            _mbps(r["decompress_mb_per_s"])] for r in rows])  # fmt: skip


@bench.command("peers")
@click.option("--objects", type=click.IntRange(1, 100_000), default=16, show_default=True,
              help="Large objects per peer.")  # fmt: skip
@click.option("--object-size", type=SizeType(), default="4MiB", show_default=True)
@click.option("--small-objects", type=click.IntRange(1, 100_000), default=200,
              show_default=True, help="Small objects per peer, for ops/s.")  # fmt: skip
@click.option("--small-size", type=SizeType(), default="4KiB", show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Requests in flight [default: transfer.concurrency].")  # fmt: skip
@json_option
@pass_cli
def peers_cmd(
    cli: CliContext, objects: int, object_size: int, small_objects: int, small_size: int,
    concurrency: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Put/get MB/s of large objects and put/get ops/s of small ones, for each configured
    peer in turn (objects under <vault>/bench/, deleted afterwards)."""
    from chunkvault.backends.stack import build_peers
    from chunkvault.bench.peerbench import PeerBenchError, bench_peer

    cfg = cli.config
    inflight = concurrency or cfg.transfer.concurrency
    rows, failed = [], []
    stack = build_peers(cfg)
    try:
        for peer in stack:
            try:
                rows.append(bench_peer(
                    peer, cfg.vault.id, objects=objects, object_size=object_size,
                    small_objects=small_objects, small_size=small_size, concurrency=inflight,
                ))  # fmt: skip
            except PeerBenchError as exc:
                failed.append(str(exc))
                rows.append({"peer": peer.name, "error": str(exc)})
    finally:
        for peer in stack:
            peer.close()
    _emit(as_json, {"object_size": object_size, "small_size": small_size, "results": rows},
          ["PEER", "PUT MB/s", "GET MB/s", "SMALL PUT ops/s", "SMALL GET ops/s"],
          [[r["peer"], "FAILED", r["error"], "", ""] if "error" in r else
           [r["peer"], _mbps(r["put_mb_per_s"]), _mbps(r["get_mb_per_s"]),
            f"{r['small_put_ops_per_s']:,.0f}", f"{r['small_get_ops_per_s']:,.0f}"]
           for r in rows])  # fmt: skip
    if failed:
        raise ChunkvaultError(
            f"{len(failed)} of {len(rows)} peer(s) failed: {failed[0]}",
            "check `chunkvault peers test`",
        )


@bench.command("e2e")
@click.option("--size", type=SizeType(), default="256MiB", show_default=True,
              help="Bytes of random files to push and restore.")  # fmt: skip
@click.option("--file-size", type=SizeType(), default="4MiB", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the dataset, state and restore go [default: a temp dir].")  # fmt: skip
@json_option
@pass_cli
def e2e_cmd(
    cli: CliContext, size: int, file_size: int, workdir: Path | None, as_json: bool
) -> None:
    """Generate random files, push them to a throwaway vault on the configured peers,
    push again unchanged, restore and verify every byte; MB/s and peak RSS. The vault
    (bench-<random>) and its objects are deleted afterwards."""
    from chunkvault.bench.data import VerifyError
    from chunkvault.bench.e2e import run_e2e
    from chunkvault.bench.procs import CommandFailed

    if cli.config_path is None or not cli.config_path.is_file():
        raise ChunkvaultError(
            f"no config at {cli.config_path}", "bench e2e uses the configured peers: pass --config"
        )
    cli.config  # noqa: B018 - validate now: one clear error before generating data
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cv-bench-", dir=workdir) as tmp:
        try:
            result = run_e2e(cli.config_path, Path(tmp), size, file_size)
        except (CommandFailed, VerifyError) as exc:
            raise ChunkvaultError(str(exc), "the benchmark vault was deleted") from None
    mib = lambda n: f"{n / MiB:,.0f} MiB"  # noqa: E731
    _emit(as_json, result, ["STEP", "MB/s", "SECONDS", "PEAK RSS"], [
        ["push", _mbps(result["push_mb_per_s"]), f"{result['push_seconds']:.2f}",
         mib(result["push_peak_rss"])],
        ["push, nothing changed", "-", f"{result['nochange_push_seconds']:.2f}", "-"],
        ["restore (verified)", _mbps(result["restore_mb_per_s"]),
         f"{result['restore_seconds']:.2f}", mib(result["restore_peak_rss"])],
    ])  # fmt: skip
