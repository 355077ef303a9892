"""``chunkvault run``: the daemon. Serves the HTTP API on ``api.listen`` over the open
vault until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.errors import ChunkvaultError

log = logging.getLogger("chunkvault.run")


def _ignore(sig: int, frame: FrameType | None) -> None:
    """Placeholder handler (see run())."""


@click.command()
@passphrase_option
@pass_cli
def run(cli: CliContext, passphrase_file: Path | None) -> None:
    """Run the agent: the HTTP API (POST /upload, /status, /metrics) over the vault."""
    import uvicorn

    from chunkvault.api.app import create_app
    from chunkvault.api.vaultbackend import VaultBackend

    cfg = cli.config
    if not cfg.api.enabled:
        raise ChunkvaultError("api.enabled is false: nothing to run yet", "enable the API")
    if cfg.api.token is None or not cfg.api.token.get_secret_value():
        raise ChunkvaultError(
            "api.token is not set: the API would be open to anyone who can reach it",
            "set api.token or api.token_file in the config",
        )
    logging.getLogger("chunkvault").setLevel(getattr(logging, cfg.log.level.upper()))
    with cli.vault(passphrase_file) as vault:
        app = create_app(VaultBackend(vault), cfg.api.token.get_secret_value())
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=cfg.api.host,
                port=cfg.api.port,
                log_level=cfg.log.level,
                access_log=cli.debug,
                timeout_graceful_shutdown=5,
            )
        )
        click.echo(
            f"chunkvault: vault {cfg.vault.id!r} on {len(vault.peers)} peer(s); "
            f"API on http://{cfg.api.listen}",
            err=True,
        )
        # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the
        # handlers it found. A stop request is our normal exit: let those be no-ops, so
        # the vault is closed and the exit code is 0.
        previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not server.started:
            raise ChunkvaultError(
                f"could not serve the API on {cfg.api.listen}", "is the port already in use?"
            )
