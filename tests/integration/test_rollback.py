"""Peers that roll a file back (issue 8 item 10): the newest version's manifest, or a
tombstone, dropped by every peer while older versions stay. A fresh machine cannot tell;
this machine's catalog can, and `status` says so."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.catalog import Catalog
from chunkvault.config import load_config

PW = {"CHUNKVAULT_PASSPHRASE": "rollback passphrase"}


def drop_everywhere(config: Path, manifest: str) -> None:
    for peer in build_peers(load_config(config)):
        peer.delete(manifest)


def latest_manifest(config: Path, path: str) -> str:
    """The object holding the newest version of ``path``: its manifest batch."""
    catalog = Catalog(config.parent / "state" / "catalog.db")
    try:
        latest = catalog.versions(path)[-1]
        return latest.batch or latest.manifest
    finally:
        catalog.close()


def test_status_reports_files_the_peers_rolled_back(tmp_path, moto_peers):
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    (inbox / "edited.txt").write_text("version 1\n")
    (inbox / "deleted.txt").write_text("soon gone\n")
    (inbox / "kept.txt").write_text("untouched\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "edited.txt").write_text("version 2, newer\n")
    (inbox / "deleted.txt").unlink()
    assert run_cli(config, "push", env=PW).returncode == 0
    clean = run_cli(config, "status", "--json", env=PW)
    assert json.loads(clean.stdout)["extra"]["missing_latest"] == []

    drop_everywhere(config, latest_manifest(config, "edited.txt"))
    drop_everywhere(config, latest_manifest(config, "deleted.txt"))
    result = run_cli(config, "status", env=PW)
    assert result.returncode == 0, result.stderr
    assert ("the newest version of edited.txt is on no peer (older versions are still there: "
            "rolled back)") in result.stderr  # fmt: skip
    assert "the deletion of deleted.txt is on no peer" in result.stderr
    assert "kept.txt" not in result.stderr
    report = json.loads(run_cli(config, "status", "--json", env=PW).stdout)
    assert report["extra"]["missing_latest"] == [
        {"path": "deleted.txt", "deleted": True, "older_listed": True},
        {"path": "edited.txt", "deleted": False, "older_listed": True},
    ]
