"""Process-flow rules: which files are ignored, and how each file is stored and deleted.

``watch.ignore`` globs match a file's name (``*.swp``) or, when they contain a ``/``, its
path relative to ``watch.path``. ``flows`` rules are tried in order and the first whose
``match`` glob (``**`` crosses directories) matches the relative path decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wcmatch import glob

from chunkvault.config import Config, FlowRule

_FLAGS = glob.GLOBSTAR | glob.DOTGLOB | glob.NEGATE


@dataclass(frozen=True)
class Flow:
    """What to do with one file: the effective values of the matching rule."""

    ignore: bool
    replicas: int
    compress: bool
    on_delete: Literal["keep", "tombstone", "purge"]
    exec: tuple[str, ...] | None
    rule: str  # the matching glob, for logs and status


class FlowRules:
    def __init__(self, config: Config) -> None:
        self.ignore_patterns = list(config.watch.ignore)
        self.rules: list[FlowRule] = list(config.flows)
        self.replicas = config.replication.replicas
        self.compress = config.chunking.compression == "zstd"
        # Compiled once: matching every file of a tree against the patterns as strings
        # cost ~40 us per pattern and file (a tenth of a small file's whole push).
        self._ignore = [
            ("/" in pattern, glob.compile(pattern, flags=_FLAGS))
            for pattern in self.ignore_patterns
        ]
        self._rules = [glob.compile(rule.match, flags=_FLAGS) for rule in self.rules]

    def ignored(self, rel_path: str) -> bool:
        name = rel_path.rpartition("/")[2]  # (a relative path of names: no PurePath needed)
        return any(m.match(rel_path if whole else name) for whole, m in self._ignore)

    def flow(self, rel_path: str) -> Flow:
        if self.ignored(rel_path):
            return Flow(True, self.replicas, self.compress, "keep", None, "watch.ignore")
        for rule, matcher in zip(self.rules, self._rules, strict=True):
            if matcher.match(rel_path):
                return Flow(
                    ignore=rule.ignore,
                    replicas=rule.replicas or self.replicas,
                    compress=self.compress
                    if rule.compression is None
                    else rule.compression == "zstd",
                    on_delete=rule.on_delete,
                    exec=tuple(rule.exec) if rule.exec else None,
                    rule=rule.match,
                )
        # No rule matched: the defaults of a `**` rule.
        return Flow(False, self.replicas, self.compress, "tombstone", None, "(default)")
