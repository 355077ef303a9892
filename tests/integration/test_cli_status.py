"""`chunkvault status` and `peers list` against real S3 peers (moto_server), as CLI
subprocesses: one verdict on peer health, and what is really under-replicated."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.catalog import Catalog, ChunkRow, PackRow

PW = {"CHUNKVAULT_PASSPHRASE": "status passphrase"}


def status_json(config: Path) -> dict[str, Any]:
    result = run_cli(config, "status", "--json", env=PW)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def peers_json(config: Path) -> list[dict[str, Any]]:
    result = run_cli(config, "peers", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def stored_vault(tmp_path: Path, endpoints: list[str], files: int = 10) -> Path:
    """A vault (R=2) over ``endpoints`` holding ``files`` one-chunk files."""
    config, inbox = init_vault(tmp_path, endpoints, unique_bucket(), PW)
    for i in range(files):
        (inbox / f"f{i}.bin").write_bytes(os.urandom(20_000))  # under chunking.min_size
    pushed = run_cli(config, "push", env=PW)
    assert pushed.returncode == 0, pushed.stderr
    return config


def test_a_killed_peer_is_down_in_status_and_peers_list(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(3)]
    config = stored_vault(tmp_path, [s.endpoint for s in servers])
    before = status_json(config)
    assert [p["up"] for p in before["peers"]] == [True, True, True]
    assert before["under_replicated"] == 0 and before["extra"]["chunks"] == 10
    held = {p["name"]: p["chunks"] for p in before["peers"]}
    victim = max(held, key=lambda name: held[name])  # names are p0, p1, p2
    assert held[victim] > 0

    servers[int(victim[1:])].kill()
    after = status_json(config)
    listed = peers_json(config)
    for rows in (after["peers"], listed):
        assert {p["name"]: p["up"] for p in rows} == {n: n != victim for n in held}, rows
        down = next(p for p in rows if p["name"] == victim)
        assert down["error"], down  # says why
    # Every chunk that had a replica on the dead peer now has one live replica of 2.
    assert after["under_replicated"] == held[victim]

    table = run_cli(config, "status", env=PW)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if ln.startswith(victim + " "))
    assert line.split()[1] == "down"
    assert f"{held[victim]} under-replicated" in table.stdout


def test_a_peer_without_its_bucket_is_not_up_anywhere(tmp_path, moto_peers):
    config = stored_vault(tmp_path, moto_peers.endpoints, files=4)
    held = {p["name"]: p["chunks"] for p in status_json(config)["peers"]}
    # p2 now points at a bucket nobody created: it answers, but refuses everything.
    data = yaml.safe_load(config.read_text())
    data["peers"][2]["bucket"] = unique_bucket()
    config.write_text(yaml.safe_dump(data))
    after = status_json(config)
    listed = peers_json(config)
    for rows in (after["peers"], listed):
        assert [p["up"] for p in rows] == [True, True, False], rows
        assert "peers init" in rows[2]["error"]
    assert after["under_replicated"] == held["p2"]


def test_status_counts_the_packs_the_catalog_records(tmp_path, moto_peers):
    config = stored_vault(tmp_path, moto_peers.endpoints, files=3)
    before = status_json(config)
    packs, chunks = before["extra"]["packs"], before["extra"]["chunks"]
    held = {p["name"]: p["chunks"] for p in before["peers"]}
    catalog = Catalog(tmp_path / "state" / "catalog.db")
    small = [ChunkRow(f"{i:064x}", 100, 140, b"\x01" * 60, 1, "", None, i * 140) for i in (1, 2)]
    catalog.record_pack(PackRow("ab" * 32, 285, "00" * 32), small, ["p0", "p2"])
    catalog.close()

    after = status_json(config)
    assert after["extra"]["packs"] == packs + 1
    assert after["extra"]["chunks"] == chunks + 2
    assert after["under_replicated"] == before["under_replicated"]  # both on R=2 peers
    assert {p["name"]: p["chunks"] for p in after["peers"]} == {
        "p0": held["p0"] + 2, "p1": held["p1"], "p2": held["p2"] + 2
    }  # fmt: skip
    table = run_cli(config, "status", env=PW)
    assert table.returncode == 0, table.stderr
    assert f"{chunks + 2} chunk(s), {packs + 1} pack(s)" in table.stdout
