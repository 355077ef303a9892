"""Log lines: one record is one line, whatever the file names in it."""

import json
import logging
import os
import sys

from chunkvault import logs


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("chunkvault.agent", logging.INFO, __file__, 1, msg, args, None)


def test_plain_lines_escape_names_onto_one_line():
    formatter = logs.LineFormatter("%(levelname)s %(name)s: %(message)s")
    latin = os.fsdecode(b"caf\xe9.txt")
    line = formatter.format(record("stored %s", latin))
    assert line == r"INFO chunkvault.agent: stored caf\xe9.txt"
    line = formatter.format(record("stored %s (%.2fs)", "new\nline\ttab.txt", 0.5))
    assert line == r"INFO chunkvault.agent: stored new\nline\ttab.txt (0.50s)"
    line.encode("utf-8")  # nothing a terminal or a log file could choke on


def test_a_traceback_keeps_its_lines():
    formatter = logs.LineFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "job %s failed", ("a\nb",),
                                sys.exc_info())  # fmt: skip
    text = formatter.format(rec)
    assert text.splitlines()[0] == r"job a\nb failed"
    assert "Traceback" in text and "ValueError: boom" in text


def test_json_lines_carry_the_escaped_message():
    entry = json.loads(logs.JsonFormatter().format(record("stored %s", os.fsdecode(b"\xff\n"))))
    assert entry["message"] == r"stored \xff\n"
