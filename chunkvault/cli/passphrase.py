"""Where passphrases come from, first found wins (DESIGN.md §5):

current: --passphrase-file, $CHUNKVAULT_PASSPHRASE_FILE, $CHUNKVAULT_PASSPHRASE, prompt
new:     $CHUNKVAULT_NEW_PASSPHRASE_FILE, $CHUNKVAULT_NEW_PASSPHRASE, prompt (asked twice)

A passphrase is never echoed, logged or stored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from chunkvault.errors import ChunkvaultError

F = TypeVar("F", bound=Callable[..., Any])
#: Where the current passphrase may come from in the environment (a write-only host
#: refuses to run with either set).
PASSPHRASE_VARIABLES = ("CHUNKVAULT_PASSPHRASE_FILE", "CHUNKVAULT_PASSPHRASE")

#: The end of `--help` of every command that asks for a new passphrase.
NEW_PASSPHRASE_HELP = (
    "The new passphrase is read from $CHUNKVAULT_NEW_PASSPHRASE_FILE (its final newline is "
    "ignored), else taken from $CHUNKVAULT_NEW_PASSPHRASE, else asked for twice on the "
    "terminal. The current one comes from --passphrase-file, $CHUNKVAULT_PASSPHRASE_FILE, "
    "$CHUNKVAULT_PASSPHRASE or a prompt."
)


def _from_file(path: Path | str, source: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ChunkvaultError(
            f"cannot read passphrase file {path} ({source}): {exc.strerror}"
        ) from None
    # Only the line ending an editor adds is removed; other whitespace is part of it.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ChunkvaultError(f"passphrase file {path} ({source}) is empty")
    return text


def _prompt(label: str, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise ChunkvaultError(
            f"no {label} given and no terminal to ask on",
            "use --passphrase-file, $CHUNKVAULT_PASSPHRASE_FILE or $CHUNKVAULT_PASSPHRASE"
            if label == "passphrase"
            else "set $CHUNKVAULT_NEW_PASSPHRASE_FILE or $CHUNKVAULT_NEW_PASSPHRASE",
        )
    value: str = click.prompt(
        label.capitalize(),
        hide_input=True,
        confirmation_prompt=f"Repeat the {label}" if confirm else False,
        err=True,
    )
    return value


def current_passphrase(file_option: Path | None, *, confirm: bool = False) -> str:
    if file_option is not None:
        return _from_file(file_option, "--passphrase-file")
    if os.environ.get("CHUNKVAULT_PASSPHRASE_FILE"):
        return _from_file(os.environ["CHUNKVAULT_PASSPHRASE_FILE"], "$CHUNKVAULT_PASSPHRASE_FILE")
    if os.environ.get("CHUNKVAULT_PASSPHRASE"):
        return os.environ["CHUNKVAULT_PASSPHRASE"]
    return _prompt("passphrase", confirm)


def new_passphrase() -> str:
    if os.environ.get("CHUNKVAULT_NEW_PASSPHRASE_FILE"):
        return _from_file(
            os.environ["CHUNKVAULT_NEW_PASSPHRASE_FILE"], "$CHUNKVAULT_NEW_PASSPHRASE_FILE"
        )
    if os.environ.get("CHUNKVAULT_NEW_PASSPHRASE"):
        return os.environ["CHUNKVAULT_NEW_PASSPHRASE"]
    return _prompt("new passphrase", confirm=True)


def passphrase_option(fn: F) -> F:
    """``--passphrase-file`` on a command (the root group accepts it too)."""
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Read the passphrase from this file (its final newline is ignored).",
    )(fn)
