"""Byte sizes as config writes them: ints, or strings like "512KiB", "8MiB", "1.5GB"."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Return a byte count. Bare K/M/G/T are binary (like restic); KB/MB are decimal."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 8MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            size = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if size != int(size):
                raise ValueError(f"size {value!r} is not a whole number of bytes")
            return int(size)
    raise ValueError(f"expected a size such as 512KiB, 8MiB or 1048576, got {value!r}")


def format_size(n: float) -> str:
    """Human-readable binary size, e.g. 12.0 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
