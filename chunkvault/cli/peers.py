"""``chunkvault peers ...``: list, test and initialise the storage peers; drain one (move
every copy off it) and rebalance after one was added or re-weighted."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from chunkvault.backends.base import Peer, PeerError
from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json, table
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.errors import ChunkvaultError
from chunkvault.sizes import format_size

if TYPE_CHECKING:  # boto3 is imported only by commands that talk to peers: fast --help
    from chunkvault.backends.health import HealthPeer
    from chunkvault.rebalance import RebalanceReport
    from chunkvault.vault import Vault

T = TypeVar("T")
MiB = 1024 * 1024
TEST_SIZES = (1 * MiB, 12 * MiB)  # 12 MiB exceeds the minimum segment size: multipart path


def _each(peers: list[HealthPeer], fn: Callable[[HealthPeer], T]) -> list[T]:
    """Run ``fn`` on every peer at once: one slow peer must not serialise the others."""
    with ThreadPoolExecutor(max_workers=max(1, len(peers))) as pool:
        return list(pool.map(fn, peers))


@click.group()
def peers() -> None:
    """List, test and initialise the storage peers; drain one, rebalance after a change."""


@peers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def list_peers(cli: CliContext, as_json: bool) -> None:
    """Show every peer with its weight, zone, and whether it answers now."""
    from chunkvault.peerhealth import check_peers, peer_row
    from chunkvault.peerset import open_peer_set

    with open_peer_set(cli.config) as placed:
        check_peers(placed)  # the same probe and verdict as `status` and GET /status
        rows = [peer_row(p) for p in placed]
    if as_json:
        echo_json(rows)
        return
    click.echo(
        table(
            ["NAME", "KIND", "LOCATION", "WEIGHT", "ZONE", "STATE", "LATENCY"],
            [
                [
                    r["name"],
                    r["kind"],
                    r["location"],
                    f"{r['weight']:g}",
                    r["zone"],
                    "up" if r["up"] else "down",
                    f"{r['latency_ms']} ms" if r["up"] else r["error"],
                ]
                for r in rows
            ],
        )
    )


@dataclass
class _Trial:
    size: int
    put_seconds: float
    get_seconds: float

    @property
    def put_mbps(self) -> float:
        return self.size / MiB / max(self.put_seconds, 1e-9)

    @property
    def get_mbps(self) -> float:
        return self.size / MiB / max(self.get_seconds, 1e-9)


def _round_trip(peer: Peer, key: str, size: int) -> _Trial:
    body = os.urandom(size)
    t0 = time.perf_counter()
    peer.put(key, body)
    t1 = time.perf_counter()
    try:
        back = peer.get(key)
        t2 = time.perf_counter()
        if back != body:
            raise ChunkvaultError(
                f"peer {peer.name}: {format_size(size)} object came back different "
                f"({len(back)} bytes)",
                "the peer corrupts data; do not use it",
            )
    finally:
        peer.delete(key)
    return _Trial(size, t1 - t0, t2 - t1)


@peers.command("test")
@pass_cli
def test_peers(cli: CliContext) -> None:
    """Round-trip put/get/delete of a 1 MiB and a 12 MiB object on every peer."""
    cfg = cli.config
    run_id = secrets.token_hex(8)

    def trial(peer: HealthPeer) -> tuple[str, list[_Trial] | str]:
        try:
            return peer.name, [
                _round_trip(peer, f"{cfg.vault.id}/peertest/{run_id}-{size}", size)
                for size in TEST_SIZES
            ]
        except (PeerError, ChunkvaultError) as exc:
            return peer.name, str(exc)

    with cli.peers() as stack:
        results = _each(stack, trial)
    rows, failed = [], []
    for name, outcome in results:
        if isinstance(outcome, str):
            failed.append(name)
            rows.append([name, "-", "-", "-", f"FAILED: {outcome}"])
            continue
        for t in outcome:
            rows.append([name, format_size(t.size), f"{t.put_mbps:.1f}", f"{t.get_mbps:.1f}", "ok"])
    click.echo(table(["PEER", "SIZE", "PUT MB/s", "GET MB/s", "RESULT"], rows))
    if failed:
        raise ChunkvaultError(
            f"{len(failed)} of {len(results)} peer(s) failed the round trip: {', '.join(failed)}",
            "check endpoint, credentials and `chunkvault peers init`",
        )


@peers.command("init")
@pass_cli
def init_peers(cli: CliContext) -> None:
    """Create missing buckets and directories on every peer (safe to repeat)."""

    def create(peer: HealthPeer) -> tuple[str, str, bool]:
        try:
            created = peer.create_container()
        except PeerError as exc:
            return peer.name, f"FAILED: {exc.message}", False
        return peer.name, "created" if created else "exists", True

    with cli.peers() as stack:
        results = _each(stack, create)
    click.echo(table(["PEER", "RESULT"], [[name, what] for name, what, _ in results]))
    failed = [name for name, _, ok in results if not ok]
    if failed:
        raise ChunkvaultError(
            f"could not initialise {', '.join(failed)}",
            "check the endpoint, credentials and bucket permissions",
        )


def _configured(cli: CliContext, name: str) -> None:
    names = [p.name for p in cli.config.peers]
    if name not in names:
        raise click.BadParameter(
            f"{name!r} is not a configured peer ({', '.join(names)})", param_hint="NAME"
        )


@peers.command("drain")
@click.argument("name")
@passphrase_option
@pass_cli
def drain(cli: CliContext, name: str, passphrase_file: Path | None) -> None:
    """Move every copy off peer NAME (write-new-then-delete-old), then it can be removed
    from the config. From now on no writer on this machine gives it a new copy. Safe to
    interrupt and run again; `status` shows the progress."""
    cli.require_owner("drain a peer (it cannot verify the copies it moves)")
    from chunkvault.draining import draining, set_draining

    _configured(cli, name)
    with cli.writer("peers drain"), cli.vault(passphrase_file, writer=True, prepare=True) as vault:
        names = draining(vault.catalog) | {name}
        left = len(cli.config.peers) - len(names & {p.name for p in cli.config.peers})
        scheme = cli.config.replication.scheme
        need, what, knob = (
            (scheme.width, f"the {scheme.width} shares of each object", "replication.erasure")
            if scheme is not None
            else (cli.config.replication.replicas, f"{cli.config.replication.replicas} "
                  "replicas", "replication.replicas")
        )  # fmt: skip
        if left < need:
            raise ChunkvaultError(
                f"draining {name} would leave {left} peer(s) for {what}",
                f"add a peer to the config first (or lower {knob})",
            )
        set_draining(vault.catalog, names)
        report = _rebalance(cli, vault)
    if not report.left:
        click.echo(f"peer {name} is drained: no stored version needs anything on it; remove it "
                   "from the config (what is left there is garbage)")  # fmt: skip


@peers.command("undrain")
@click.argument("name")
@passphrase_option
@pass_cli
def undrain(cli: CliContext, name: str, passphrase_file: Path | None) -> None:
    """Let peer NAME take new copies again (after `peers drain`); `peers rebalance` then
    moves its share back."""
    cli.require_owner("undrain a peer")
    from chunkvault.draining import draining, set_draining

    with cli.writer("peers undrain"), cli.vault(passphrase_file, writer=True) as vault:
        names = draining(vault.catalog)
        if name not in names:
            raise ChunkvaultError(f"peer {name} is not being drained")
        set_draining(vault.catalog, names - {name})
    click.echo(f"peer {name} takes new copies again; `chunkvault peers rebalance` moves its "
               "share back")  # fmt: skip


@peers.command("rebalance")
@passphrase_option
@pass_cli
def rebalance(cli: CliContext, passphrase_file: Path | None) -> None:
    """After a peer was added or re-weighted: move the copies whose ranking changed to
    where placement wants them now (write-new-then-delete-old; only those move). Safe to
    interrupt and run again; `status` shows the progress."""
    cli.require_owner("rebalance (it cannot verify the copies it moves)")
    with (
        cli.writer("peers rebalance"),
        cli.vault(passphrase_file, writer=True, prepare=True) as vault,
    ):
        _rebalance(cli, vault)


def _rebalance(cli: CliContext, vault: Vault) -> RebalanceReport:
    from chunkvault.cli.progress import count_progress
    from chunkvault.integrity import describe
    from chunkvault.rebalance import Rebalancer

    rebalancer = Rebalancer(vault, cli.keystore([p.peer for p in vault.peers]))
    report, jobs = rebalancer.plan()
    with count_progress("move", len(jobs)) as progress:
        rebalancer.run(report, jobs, progress)
    for problem in report.left:
        click.echo(f"left: {describe(problem)}")
    click.echo(
        f"rebalance: {report.objects} object(s), {report.moved} moved: "
        f"{report.copies_written} copies written ({format_size(report.bytes_written)}), "
        f"{report.copies_deleted} deleted"
        + (
            f", the keyring on {', '.join(report.keyrings_written)}"
            if report.keyrings_written
            else ""
        )
        + "; "
        + (f"{len(report.left)} left" if report.left else "every copy where it belongs")
    )
    if report.left:
        raise ChunkvaultError(
            f"{len(report.left)} object(s) could not be moved (their old copies stay)",
            "check `chunkvault peers list`, then run the command again: it finishes the moves",
        )
    return report
