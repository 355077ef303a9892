"""chunkvault.forms: which form of an object to believe from the listings. One peer
listing a made-up share key, or a stray whole copy, never hides the form the others hold."""

from __future__ import annotations

from chunkvault.erasure import HEADER_SIZE, Scheme
from chunkvault.forms import UNSET, dominant_form, group, object_size, pick
from chunkvault.layout import DataKey, chunk_key, pack_key, share_key

CID = "ab" * 32
KEY = chunk_key("v", CID)


def listed(*entries: tuple[str, str, int]) -> list[tuple[str, str, int]]:
    return list(entries)


def test_the_form_most_peers_list_wins_and_copies_win_a_tie() -> None:
    assert dominant_form({None: ["p0", "p1"], "1-1": ["p2"]}) is None
    assert dominant_form({None: ["p0"], "3-2": ["p1", "p2", "p3"]}) == "3-2"
    assert dominant_form({None: ["p0"], "1-1": ["p2"]}) is None
    assert dominant_form({"2-1": ["p0"], "1-1": ["p2"]}) == "2-1"  # (any fixed order)


def test_a_made_up_share_key_beside_two_copies_is_left_out() -> None:
    pieces = group("v", listed(("p0", KEY, 900), ("p1", KEY, 900),
                               ("p2", share_key(KEY, Scheme(1, 1), 0), 948)), "chunk")  # fmt: skip
    held = pick(CID, pieces[CID])
    assert held.form is None and [p.peer for p in held.pieces] == ["p0", "p1"]
    assert held.others == ["p2"] and held.object_size == 900


def test_this_machines_own_form_wins_when_it_is_listed() -> None:
    s32 = Scheme(3, 2)
    entries = [(f"p{i}", share_key(KEY, s32, i), HEADER_SIZE + 300) for i in range(2)]
    entries += [("p2", KEY, 900), ("p3", KEY, 900), ("p4", KEY, 900)]
    pieces = group("v", entries, "chunk")[CID]
    assert pick(CID, pieces).form is None  # most peers: copies
    mine = pick(CID, pieces, "3-2")
    assert mine.form == "3-2" and mine.others == ["p2", "p3", "p4"]
    assert mine.object_size == 900  # the padded size the shares give
    assert pick(CID, pieces, "9-9").form is None and pick(CID, pieces, UNSET).form is None


def test_group_skips_other_kinds_and_foreign_keys() -> None:
    entries = listed(("p0", KEY, 1), ("p0", pack_key("v", CID), 2), ("p0", "v/chunks/zz", 3),
                     ("p0", KEY + ".ec3-2.9", 4))  # fmt: skip
    found = group("v", entries, "chunk")
    assert list(found) == [CID] and list(found[CID]) == [None]
    assert object_size(1000 + HEADER_SIZE, DataKey("chunk", CID, Scheme(3, 2), 0)) == 3000
