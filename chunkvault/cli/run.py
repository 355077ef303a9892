"""``chunkvault run``: the daemon. Watches ``watch.path`` and runs each change's flow, and
serves the HTTP API on ``api.listen``, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from chunkvault.cli.context import CliContext, pass_cli
from chunkvault.cli.passphrase import passphrase_option
from chunkvault.errors import ChunkvaultError

if TYPE_CHECKING:  # imported inside run(): --help stays fast
    from prometheus_client import CollectorRegistry

    from chunkvault.agent import Agent
    from chunkvault.vault import Vault

log = logging.getLogger("chunkvault.run")
STOP_TIMEOUT = 7.0  # workers get this long to finish their file; SIGTERM -> exit < 10 s


def _ignore(sig: int, frame: FrameType | None) -> None:
    """Placeholder handler (see _serve)."""


@click.command()
@passphrase_option
@pass_cli
def run(cli: CliContext, passphrase_file: Path | None) -> None:
    """Run the agent: watch the tree, store every change, serve the HTTP API."""
    from prometheus_client import CollectorRegistry

    from chunkvault import logs
    from chunkvault.agent import Agent
    from chunkvault.metrics import AgentMetrics

    cfg = cli.config
    if cfg.api.enabled and (cfg.api.token is None or not cfg.api.token.get_secret_value()):
        raise ChunkvaultError(
            "api.token is not set: the API would be open to anyone who can reach it",
            "set api.token or api.token_file, or api.enabled: false",
        )
    if not cfg.watch.path.is_dir():
        raise ChunkvaultError(f"watch.path {cfg.watch.path} is not a directory", "create it")
    logs.configure("debug" if cli.debug else cfg.log.level, cfg.log.format)
    with cli.writer("run"), cli.vault(passphrase_file, writer=True) as vault:
        registry = CollectorRegistry()
        agent = Agent(vault)
        metrics = AgentMetrics(registry, agent)
        agent.on_result = metrics.observe
        agent.start()
        try:
            log.info(
                "vault %r on %d peer(s); watching %s; API %s",
                cfg.vault.id, len(vault.peers), cfg.watch.path,
                f"on http://{cfg.api.listen}" if cfg.api.enabled else "disabled",
            )  # fmt: skip
            if cfg.api.enabled:
                _serve(cli, vault, agent, registry)
            else:
                _wait_for_signal(agent)
        finally:
            log.info("stopping: %d job(s) stay queued for the next start", agent.jobs.depth())
            agent.stop(STOP_TIMEOUT)
    if agent.fatal is not None:  # e.g. the state dir was deleted: a supervisor restarts us
        raise agent.fatal
    _exit_if_requests_hang()


def _exit_if_requests_hang() -> None:
    """Python joins executor threads at exit; one blocked on a hung peer would delay the
    exit by its timeouts and retries. The queue and catalog are consistent at this point
    (SQLite transactions), so leave without waiting for them."""
    import os

    prefixes = ("replica_", "chunk_", "api-chunk_")  # our executors' thread names
    deadline = time.monotonic() + 1.0  # idle pool threads leave at once; busy ones do not
    for thread in threading.enumerate():
        if thread.name.startswith(prefixes):
            thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t for t in threading.enumerate() if t.name.startswith(prefixes) and t.is_alive()]
    if busy:
        log.warning("exiting with %d request(s) still waiting on peers", len(busy))
        logging.shutdown()
        os._exit(0)


def _wait_for_signal(agent: Agent) -> None:
    stop = threading.Event()
    agent.on_fatal = stop.set  # set before reading agent.fatal: see Agent._fail
    if agent.fatal is not None:
        return
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(cli: CliContext, vault: Vault, agent: Agent, registry: CollectorRegistry) -> None:
    import uvicorn

    from chunkvault.api.app import create_app
    from chunkvault.api.vaultbackend import VaultBackend

    cfg = cli.config
    assert cfg.api.token is not None
    app = create_app(
        VaultBackend(vault, agent), cfg.api.token.get_secret_value(), registry=registry
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=cfg.api.host,
            port=cfg.api.port,
            log_level="warning",
            access_log=cli.debug,
            timeout_graceful_shutdown=2,
        )
    )
    agent.on_fatal = lambda: setattr(server, "should_exit", True)  # uvicorn polls it
    if agent.fatal is not None:
        return
    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handlers
    # it found. A stop request is our normal exit: let those be no-ops, so the agent and
    # the vault are closed and the exit code is 0.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started and agent.fatal is None:
        raise ChunkvaultError(
            f"could not serve the API on {cfg.api.listen}", "is the port already in use?"
        )
