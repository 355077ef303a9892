"""One warning per peer and kind of problem, not one per object.

A hostile or broken peer can serve a bad reply for every object it is asked for; logging
each would flood the log (and a daemon's disk). :class:`WarnOnce` logs the first problem
of each (peer, topic) at WARNING and the rest at DEBUG, for as long as it lives: readers
keep one per command (or per agent process).
"""

from __future__ import annotations

import logging
import threading


class WarnOnce:
    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def warn(self, peer: str, topic: str, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING the first time for (peer, topic), then DEBUG."""
        with self._lock:
            first = (peer, topic) not in self._seen
            self._seen.add((peer, topic))
        if first:
            self._log.warning(message + " (further %s from %s are logged at debug level)",
                              *args, topic, peer)  # fmt: skip
        else:
            self._log.debug(message, *args)
