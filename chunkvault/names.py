"""File names: bytes on disk, ``str`` inside chunkvault, escaped for people.

Linux file names are arbitrary bytes (anything but ``/`` and NUL). Inside chunkvault a
relative path is a ``str`` decoded with :func:`os.fsdecode` (UTF-8 with surrogateescape,
which is also how Python decodes ``argv`` and ``os.listdir``): every byte string maps to
exactly one ``str`` and back, so a name that is not UTF-8 (``caf\\xe9.txt`` in Latin-1)
is carried exactly and written back byte-identical. Where a ``str`` would have to become
UTF-8 (SQLite text, JSON, a terminal) the raw bytes are used instead (:func:`raw`), or
the display form (:func:`show`).
"""

from __future__ import annotations

import base64
import os

_SHORT = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def raw(path: str) -> bytes:
    """The name's bytes on disk."""
    return os.fsencode(path)


def from_raw(data: bytes) -> str:
    """The ``str`` chunkvault uses for the name ``data``."""
    return os.fsdecode(data)


def is_utf8(path: str) -> bool:
    """Whether the name's bytes are valid UTF-8 (it holds no surrogate-escaped byte)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def show(path: str) -> str:
    """How a name is shown to people (``ls``, logs, messages): always one line, nothing
    invisible, never ambiguous. Printable characters appear as themselves; ``\\`` is
    doubled; newline, tab and carriage return are ``\\n``, ``\\t``, ``\\r``; every other
    byte of the name (control characters, invisible or undecodable ones) is ``\\xHH``. So
    each escape stands for exactly one byte of the name."""
    if path.isprintable() and "\\" not in path:
        return path
    return "".join(_show_char(ch) for ch in path)


def _show_char(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    if ch.isprintable():
        return ch
    try:
        return "".join(f"\\x{byte:02x}" for byte in os.fsencode(ch))
    except UnicodeEncodeError:  # a surrogate that no file name decodes to
        return f"\\u{ord(ch):04x}"


def one_line(text: str) -> str:
    """``text`` (a log or error message) with what would break its line or hide bytes
    escaped as in :func:`show`; backslashes are left alone, so a message that already
    holds shown names is unchanged."""
    if text.isprintable():
        return text
    return "".join("\\" if ch == "\\" else _show_char(ch) for ch in text)


def b64(path: str) -> str:
    """The name's raw bytes in base64 (for JSON, which cannot hold arbitrary bytes)."""
    return base64.b64encode(raw(path)).decode("ascii")


def from_b64(text: str) -> str:
    """The inverse of :func:`b64`; ValueError if ``text`` is not base64."""
    return from_raw(base64.b64decode(text, validate=True))


def json_fields(path: str) -> dict[str, str]:
    """What ``--json`` output says about a name: ``path`` is the name itself when it is
    UTF-8 (JSON escapes control characters itself); otherwise ``path`` is the display
    form (:func:`show`) and ``path_b64`` holds the exact bytes."""
    if is_utf8(path):
        return {"path": path}
    return {"path": show(path), "path_b64": b64(path)}


#: Where a write-only host's ``POST /upload`` chunks appear as files (chunkvault.vault):
#: a name of the vault's, not of the watched tree (whose scans leave it alone).
API_UPLOADS = ".chunkvault-api"


def is_api_upload(path: str) -> bool:
    return path.startswith(API_UPLOADS + "/")
