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


def test_the_installed_command_exits_quickly_with_main_s_code_and_all_its_output() -> None:
    """`entry` leaves with os._exit after main: nothing printed may be lost, the exit code
    is main's, and a reader that stops early (`| head`) gets no traceback."""
    import subprocess
    import sys

    from support.cli import CLI

    from chunkvault.cli.main import COMMANDS

    helped = run_cli(None, "--help")
    assert helped.returncode == 0, helped.stderr
    assert all(name in helped.stdout for name in COMMANDS)  # the whole text, to the end
    assert run_cli(None, "no-such-command").returncode == 2
    module = subprocess.run([sys.executable, "-m", "chunkvault", "--version"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (module.returncode, module.stdout.split()[0]) == (0, "chunkvault,")
    shell = subprocess.run(f"'{CLI}' --help | head -c 10", shell=True, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert shell.stdout == "Usage: chu" and "Traceback" not in shell.stderr
