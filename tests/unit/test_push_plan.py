"""What a push will do, planned from the tree and the catalog (chunkvault.cli.push): the
plan itself, and the early plan made before the unlock, which stands only while nobody
else changed the catalog. Real files and a real SQLite catalog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chunkvault.catalog import Catalog, VersionRow
from chunkvault.cli.push import EarlyPlan, plan_push
from chunkvault.config import Config, parse_config
from chunkvault.errors import ChunkvaultError
from chunkvault.flows import FlowRules
from chunkvault.vault import CATALOG_NAME


def config(tmp_path: Path) -> Config:
    (tmp_path / "tree").mkdir(exist_ok=True)
    return parse_config(
        {
            "vault": {"id": "plan", "state_dir": str(tmp_path / "state")},
            "watch": {"path": str(tmp_path / "tree"), "ignore": ["*.swp"]},
            "peers": [{"name": f"m{i}", "path": str(tmp_path / f"m{i}")} for i in range(2)],
        }
    )


def stored_as_is(catalog: Catalog, tree: Path, rel: str, name: str) -> None:
    st = os.stat(tree / rel)
    catalog.add_versions(
        [VersionRow(rel, name, st.st_size, st.st_mtime_ns, st.st_mode, "", False, 1, 1)]
    )


def test_the_plan_reads_new_and_changed_files_skips_the_rest_and_deletes_the_gone(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    tree = cfg.watch.path
    for name in ("same.txt", "changed.txt", "new.txt", "edit.swp"):
        (tree / name).write_text(name)
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        stored_as_is(catalog, tree, "same.txt", "m1")
        stored_as_is(catalog, tree, "changed.txt", "m2")
        catalog.add_versions([VersionRow("gone.txt", "m3", 1, 1, 0o100644, "", False, 1, 1)])
        (tree / "changed.txt").write_text("changed, longer")

        plan = plan_push(catalog, FlowRules(cfg), tree, ())
    finally:
        catalog.close()
    assert plan.files == ["changed.txt", "edit.swp", "new.txt"]  # the reader ignores .swp
    assert plan.unchanged == {"same.txt": len("same.txt")}
    assert plan.gone == ["gone.txt"]
    assert plan.scopes == [""] and plan.work


def test_the_early_plan_stands_until_another_connection_changes_the_catalog(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    (cfg.watch.path / "a.txt").write_text("a")
    cfg.vault.state_dir.mkdir()
    Catalog(cfg.vault.state_dir / CATALOG_NAME).close()

    early = EarlyPlan(cfg, ())
    try:
        assert early.sends and early.plan is not None and early.plan.files == ["a.txt"]
        vault_side = Catalog(cfg.vault.state_dir / CATALOG_NAME)  # as the vault opens it
        try:
            assert early.still_current() is early.plan  # opening is no change
            stored_as_is(vault_side, cfg.watch.path, "a.txt", "m1")  # e.g. a sync
            assert early.still_current() is None
        finally:
            vault_side.close()
    finally:
        early.close()


def test_a_push_with_nothing_to_do_sends_nothing_and_a_fresh_machine_plans_later(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    (cfg.watch.path / "a.txt").write_text("a")
    fresh = EarlyPlan(cfg, ())
    assert (fresh.plan, fresh.sends, fresh.still_current()) == (None, True, None)
    assert not (cfg.vault.state_dir / CATALOG_NAME).exists()  # nothing made before unlock

    cfg.vault.state_dir.mkdir()
    catalog = Catalog(cfg.vault.state_dir / CATALOG_NAME)
    stored_as_is(catalog, cfg.watch.path, "a.txt", "m1")
    catalog.close()
    early = EarlyPlan(cfg, ())
    try:
        assert early.plan is not None and not early.sends
        assert early.plan.unchanged == {"a.txt": 1}
    finally:
        early.close()


def test_a_path_neither_in_the_tree_nor_stored_is_left_to_the_plan_after_the_unlock(
    tmp_path: Path,
) -> None:
    """A commit recovered during the unlock may still store something there: the early plan
    does not refuse the path, the plan made after the unlock does (with the same error)."""
    cfg = config(tmp_path)
    cfg.vault.state_dir.mkdir()
    catalog = Catalog(cfg.vault.state_dir / CATALOG_NAME)
    try:
        early = EarlyPlan(cfg, ("missing.txt",))
        try:
            assert (early.plan, early.sends, early.still_current()) == (None, True, None)
        finally:
            early.close()
        with pytest.raises(ChunkvaultError, match="nothing is stored there"):
            plan_push(catalog, FlowRules(cfg), cfg.watch.path, ("missing.txt",))
    finally:
        catalog.close()
