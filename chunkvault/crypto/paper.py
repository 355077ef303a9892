"""Paper backup of the keyring: zlib-compressed JSON as numbered hex lines, each with a
checksum, so a typo is found on the line where it was made (after borg's paper keys).

The keyring holds only passphrase-wrapped slots, so the paper is as safe as the
passphrase; still, store it like one.
"""

from __future__ import annotations

import hashlib
import re
import zlib

HEADER = "chunkvault keyring backup (paper v1)"
BYTES_PER_LINE = 18
_LINE = re.compile(r"^\s*(\d{3,})\s*:\s*([0-9a-fA-F ]+?)\s*-\s*([0-9a-fA-F]{4})\s*$")
_TOTAL = re.compile(r"^\s*total\s*:\s*([0-9a-fA-F]{16})\s*$", re.IGNORECASE)


class PaperError(ValueError):
    """The paper text does not decode; the message names the bad line."""


def _line_sum(number: int, data: bytes) -> str:
    return hashlib.sha256(f"{number}:".encode() + data).hexdigest()[:4]


def to_paper(keyring_json: bytes, description: str) -> str:
    data = zlib.compress(keyring_json, 9)
    lines = [HEADER, description, ""]
    for number, start in enumerate(range(0, len(data), BYTES_PER_LINE), 1):
        part = data[start : start + BYTES_PER_LINE]
        hexed = part.hex()
        groups = " ".join(hexed[i : i + 4] for i in range(0, len(hexed), 4))
        lines.append(f"{number:03d}: {groups:<44} - {_line_sum(number, part)}")
    lines.append(f"total: {hashlib.sha256(data).hexdigest()[:16]}")
    return "\n".join(lines) + "\n"


def from_paper(text: str) -> bytes:
    """The keyring JSON back from paper text (other lines, like the header, are ignored)."""
    parts: dict[int, bytes] = {}
    total = None
    for raw in text.splitlines():
        if m := _TOTAL.match(raw):
            total = m.group(1).lower()
            continue
        m = _LINE.match(raw)
        if not m:
            continue
        number = int(m.group(1))
        try:
            part = bytes.fromhex(m.group(2).replace(" ", ""))
        except ValueError:
            raise PaperError(f"line {number:03d}: not hex (odd number of digits?)") from None
        if _line_sum(number, part) != m.group(3).lower():
            raise PaperError(f"line {number:03d}: checksum mismatch, check the typing")
        parts[number] = part
    if not parts:
        raise PaperError("no keyring lines found (lines look like `001: abcd ... - 1a2b`)")
    missing = [n for n in range(1, max(parts) + 1) if n not in parts]
    if missing:
        raise PaperError(f"line(s) {', '.join(f'{n:03d}' for n in missing)} missing")
    data = b"".join(parts[n] for n in sorted(parts))
    if total is None:
        raise PaperError("the `total:` line is missing")
    if hashlib.sha256(data).hexdigest()[:16] != total:
        raise PaperError("total checksum mismatch: lines are out of order or from two backups")
    try:
        return zlib.decompress(data)
    except zlib.error as exc:
        raise PaperError(f"the data does not decompress: {exc}") from None
