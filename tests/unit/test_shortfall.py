"""Writes noted short in the catalog (chunkvault.shortfall), for the background repair."""

from __future__ import annotations

import time
from pathlib import Path

from chunkvault import shortfall
from chunkvault.catalog import Catalog


def test_a_note_reads_back_until_cleared_and_a_broken_one_is_dropped(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    shortfall.note(catalog, "v/chunks/ab/ab12", 3, ["p0"])
    catalog.set_meta(shortfall.SHORT + "v/packs/cd/cd34", "{not json")
    (found,) = shortfall.noted(catalog)
    assert (found.key, found.target, found.peers) == ("v/chunks/ab/ab12", 3, ("p0",))
    assert not found.settled(time.time()) and found.settled(time.time() + shortfall.SETTLE + 1)
    assert catalog.get_meta(shortfall.SHORT + "v/packs/cd/cd34") is None  # dropped
    shortfall.clear(catalog, found.key)
    assert shortfall.noted(catalog) == []
    catalog.close()
