"""What the docs, the README and the `make run` tour tell a user to type or to expect."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from chunkvault.cli.main import COMMANDS
from chunkvault.demo import _print_tour
from chunkvault.stored import stored_reason

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "compose" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def curl_commands(text: str) -> list[str]:
    """Each shell line that runs curl (continuation lines joined)."""
    lines = text.replace("\\\n", " ").splitlines()
    return [ln.strip() for ln in lines if re.match(r"\s*(\$ )?curl\s", ln)]


def tour(capsys: pytest.CaptureFixture[str]) -> str:
    _print_tour(servers_ports=[9001, 9002, 9003], config=ROOT / ".demo" / "x.yaml", port=8080)
    return capsys.readouterr().out


def test_every_curl_shown_to_a_user_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    # Without -s, curl draws a progress meter over the answer when its output is piped
    # or saved (-o): the examples must print just the answer.
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in DOCS} | {"tour": tour(capsys)}
    found = 0
    for name, text in sources.items():
        for command in curl_commands(text):
            found += 1
            words = shlex.split(command.split(" #")[0].removeprefix("$ "))
            assert "-s" in words or "--silent" in words, f"{name}: {command}"
    assert found >= 10  # README, docs/api.md and the tour all have some


@pytest.mark.parametrize("command", ["repair", "gc"])
def test_no_doc_still_calls_a_command_planned_now_that_it_exists(command: str) -> None:
    assert command in COMMANDS
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.search(rf"\b{command}\b", line):
                near = " ".join(lines[max(0, i - 1) : i + 2])
                assert not re.search(rf"\b{command}\b[^.;]*\b(planned|not built)\b", near), (
                    f"{path.name}:{i + 1}: {line.strip()}"
                )
    assert stored_reason(1, 2) == "stored on 1 of 2 peers (under-replicated)"
