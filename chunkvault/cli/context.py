"""State shared by every command: where the config is, loaded once on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from chunkvault.config import Config, load_config


@dataclass
class CliContext:
    config_path: Path | None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


pass_cli = click.make_pass_decorator(CliContext)
