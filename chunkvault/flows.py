"""Process-flow rules: which files are ignored, and how each file is stored and deleted.

``watch.ignore`` globs match a file's name (``*.swp``) or, when they contain a ``/``, its
path relative to ``watch.path``. ``flows`` rules are tried in order and the first whose
``match`` glob (``**`` crosses directories) matches the relative path decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from wcmatch import glob

from chunkvault.config import Config, FlowRule

_FLAGS = glob.GLOBSTAR | glob.DOTGLOB | glob.NEGATE


@dataclass(frozen=True)
class Flow:
    """What to do with one file: the effective values of the matching rule."""

    ignore: bool
    # Whole copies of each chunk; None: the vault's erasure scheme (replication.erasure).
    replicas: int | None
    compress: bool
    on_delete: Literal["keep", "tombstone", "purge"]
    exec: tuple[str, ...] | None
    rule: str  # the matching glob, for logs and status


class FlowRules:
    def __init__(self, config: Config) -> None:
        self.ignore_patterns = list(config.watch.ignore)
        self.rules: list[FlowRule] = list(config.flows)
        # With erasure coding, only a rule that sets replicas asks for whole copies.
        self.replicas = None if config.replication.erasure else config.replication.replicas
        self.compress = config.chunking.compression == "zstd"
        # Compiled once, into one regex per kind of ignore pattern: matching every file
        # against the patterns as strings cost ~40 us per pattern and file, and through
        # wcmatch's matcher objects still 3 us (23 us per file with the default ignores,
        # twice per pushed file: the plan and the reader).
        self._ignore_name = any_of([p for p in self.ignore_patterns if "/" not in p])
        self._ignore_path = any_of([p for p in self.ignore_patterns if "/" in p])
        self._rules = [any_of([rule.match]) for rule in self.rules]
        # A rule's Flow is the same for every file it matches: made once.
        self._flows = [
            Flow(
                ignore=rule.ignore,
                replicas=rule.replicas or self.replicas,
                compress=self.compress if rule.compression is None else rule.compression == "zstd",
                on_delete=rule.on_delete,
                exec=tuple(rule.exec) if rule.exec else None,
                rule=rule.match,
            )
            for rule in self.rules
        ]
        self._ignored = Flow(True, self.replicas, self.compress, "keep", None, "watch.ignore")
        # No rule matched: the defaults of a `**` rule.
        self._default = Flow(False, self.replicas, self.compress, "tombstone", None, "(default)")

    def ignored(self, rel_path: str) -> bool:
        name = rel_path.rpartition("/")[2]  # (a relative path of names: no PurePath needed)
        return self._ignore_name(name) or self._ignore_path(rel_path)

    def flow(self, rel_path: str) -> Flow:
        if self.ignored(rel_path):
            return self._ignored
        for flow, matches in zip(self._flows, self._rules, strict=True):
            if matches(rel_path):
                return flow
        return self._default


def any_of(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether a path matches any of the globs, as ``wcmatch.glob.globmatch`` says for each
    (``_FLAGS``): its own regexes, translated once, in one alternation matched with
    ``fullmatch`` (their ``$`` alone would also match before a trailing newline, and names
    may end in one). A negated glob (``!x``) keeps wcmatch's matcher, which excludes."""
    plain: list[str] = []
    tests: list[Callable[[str], object]] = []
    for pattern in patterns:
        include, exclude = glob.translate(pattern, flags=_FLAGS)
        if exclude:
            tests.append(glob.compile(pattern, flags=_FLAGS).match)
        else:
            plain += include
    if plain:
        tests.insert(0, re.compile("|".join(f"(?:{p})" for p in plain)).fullmatch)
    if len(tests) == 1:
        (test,) = tests
        return lambda path: bool(test(path))
    return lambda path: any(test(path) for test in tests)
