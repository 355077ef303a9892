"""restore.safe_parts: only the plain relative paths chunkvault stores are restored."""

from __future__ import annotations

import pytest

from chunkvault.errors import ChunkvaultError
from chunkvault.restore import safe_parts


@pytest.mark.parametrize(
    ("rel", "parts"),
    [
        ("a", ["a"]),
        ("dir/sub/f.txt", ["dir", "sub", "f.txt"]),
        ("..a/b..", ["..a", "b.."]),  # dots inside a name are a name
        ("line\nbreak/\udcff", ["line\nbreak", "\udcff"]),  # any byte but / and NUL
    ],
)
def test_plain_relative_paths_split_into_their_names(rel: str, parts: list[str]) -> None:
    assert safe_parts(rel) == parts


@pytest.mark.parametrize(
    "rel", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a/./b", "a//b", "a/", "a\0b"]
)
def test_anything_else_is_refused(rel: str) -> None:
    with pytest.raises(ChunkvaultError, match="unsafe path"):
        safe_parts(rel)
