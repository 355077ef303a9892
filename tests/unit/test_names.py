"""File names: bytes in, the same bytes out; one escaped line for people."""

import os
import re

from hypothesis import given
from hypothesis import strategies as st

from chunkvault import names

# A file name component: any bytes but NUL and "/".
name_bytes = st.binary(min_size=1, max_size=64).filter(lambda b: b"\0" not in b and b"/" not in b)


def unescape(shown: str) -> bytes:
    """The inverse of names.show: each escape is one byte, the rest is UTF-8."""
    short = {"\\": b"\\", "n": b"\n", "t": b"\t", "r": b"\r"}
    out, i = bytearray(), 0
    while i < len(shown):
        if shown[i] != "\\":
            out += shown[i].encode()
            i += 1
        elif shown[i + 1] == "x":
            out.append(int(shown[i + 2 : i + 4], 16))
            i += 4
        else:
            out += short[shown[i + 1]]
            i += 2
    return bytes(out)


@given(name_bytes)
def test_every_name_round_trips_through_str_base64_and_the_display_form(raw):
    path = names.from_raw(raw)
    assert names.raw(path) == raw
    assert names.from_b64(names.b64(path)) == path
    shown = names.show(path)
    assert shown.isprintable()  # one line, nothing invisible, encodable anywhere
    assert unescape(shown) == raw  # never ambiguous


def test_display_form_examples():
    assert names.show("plain name.txt") == "plain name.txt"
    assert names.show("café 写真.jpg") == "café 写真.jpg"  # printable UTF-8 as it is
    assert names.show(os.fsdecode(b"caf\xe9.txt")) == r"caf\xe9.txt"
    assert names.show("a\nb\tc\rd") == r"a\nb\tc\rd"
    assert names.show("back\\slash") == r"back\\slash"
    assert names.show("bell\x07 del\x7f nbsp\xa0") == r"bell\x07 del\x7f nbsp\xc2\xa0"
    assert names.show("zero\u200bwidth") == r"zero\xe2\x80\x8bwidth"


def test_one_line_escapes_what_breaks_a_line_but_keeps_backslashes():
    assert names.one_line("stored a\nb and c\\d") == "stored a\\nb and c\\d"
    assert names.one_line(names.show("x\ny")) == names.show("x\ny")  # idempotent
    assert names.one_line(os.fsdecode(b"caf\xe9")) == r"caf\xe9"
    assert "\n" not in names.one_line("\n".join(["a"] * 5))


def test_json_fields_are_exact_for_utf8_and_carry_the_bytes_otherwise():
    assert names.json_fields("new\nline") == {"path": "new\nline"}
    latin = os.fsdecode(b"d/caf\xe9.txt")
    fields = names.json_fields(latin)
    assert fields == {"path": r"d/caf\xe9.txt", "path_b64": "ZC9jYWbpLnR4dA=="}
    assert re.fullmatch(r"[A-Za-z0-9+/=]+", fields["path_b64"])
