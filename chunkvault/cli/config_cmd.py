"""``chunkvault config ...``: inspect the configuration."""

from __future__ import annotations

import click
import yaml

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.output import echo_json


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the effective config as JSON.")
@pass_cli
def check(cli: CliContext, as_json: bool) -> None:
    """Validate the config and print the effective values (secrets masked)."""
    cfg = cli.config
    data = cfg.redacted()
    if as_json:
        echo_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    click.echo(
        f"config {cli.config_path} is valid: vault {cfg.vault.id!r}, {len(cfg.peers)} peer(s), "
        f"{cfg.replication.replicas} replica(s)",
        err=True,
    )
