import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkvault.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1048576, 1048576),
        ("512KiB", 512 * 1024),
        ("8MiB", 8 * 1024**2),
        ("8 mib", 8 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("5MB", 5_000_000),
        ("2K", 2048),
        ("7", 7),
        ("10B", 10),
    ],
)
def test_parse_size_accepts_ints_and_unit_strings(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MiB", "-1", "1.3B", "8 parsecs", True, None, 2.5, -4])
def test_parse_size_rejects_garbage_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@given(st.integers(min_value=0, max_value=2**40))
def test_parse_size_of_int_string_is_identity(n):
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}KiB") == n * 1024


def test_format_size():
    assert format_size(12 * 1024**2) == "12.0 MiB"
    assert format_size(999) == "999 B"
