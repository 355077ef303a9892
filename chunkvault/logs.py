"""Logging setup: plain lines for people, or one JSON object per line for collectors.

Either way one record is one line: a message can hold file names, which may contain
newlines, control characters or bytes that are not UTF-8, so the message is passed
through :func:`chunkvault.names.one_line` (callers that name a file pass
``names.show(path)``, which escapes backslashes too; this catches the rest)."""

from __future__ import annotations

import json
import logging
import time

from chunkvault.names import one_line


class LineFormatter(logging.Formatter):
    """The plain format, with the message escaped onto one line (a traceback, added after
    it, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": one_line(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("chunkvault").setLevel(getattr(logging, level.upper()))
