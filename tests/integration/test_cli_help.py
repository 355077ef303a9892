"""What `--help` tells a user, through the installed `chunkvault` command."""

from __future__ import annotations

import pytest
from support.cli import run_cli


@pytest.mark.parametrize("command", ["passwd", "add"])
def test_commands_that_take_a_new_passphrase_say_where_it_comes_from(command: str) -> None:
    result = run_cli(None, "key", command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # click wraps lines
    for source in ("$CHUNKVAULT_NEW_PASSPHRASE_FILE", "$CHUNKVAULT_NEW_PASSPHRASE,"):
        assert source in text, text
    assert "$CHUNKVAULT_PASSPHRASE_FILE" in text  # and the current one
