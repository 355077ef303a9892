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
    import uvicorn
    from prometheus_client import CollectorRegistry

    from chunkvault.agent import Agent
    from chunkvault.vault import Vault

log = logging.getLogger("chunkvault.run")
STOP_TIMEOUT = 7.0  # workers get this long to finish their file; SIGTERM -> exit < 10 s


class _StopRequest:
    """SIGINT and SIGTERM, however many and whenever they come, ask for one graceful stop.

    A terminal's Ctrl-C reaches the whole process group (``make run`` forwards another), so
    a second SIGINT during the shutdown is normal. uvicorn would take it as "force quit" and
    skip the app's lifespan shutdown (its task is then cancelled mid-wait and the
    CancelledError traceback is printed); here it only repeats the request.

    The handler only assigns attributes: it runs between any two bytecodes of the main
    thread, even inside itself when signals come back to back, so taking a lock there (as
    ``Event.set`` does) can deadlock."""

    POLL_SECONDS = 0.2

    def __init__(self) -> None:
        self.requested = False
        self._server: uvicorn.Server | None = None

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._server is not None:
            self._server.should_exit = True

    def attach(self, server: uvicorn.Server) -> None:
        """From now on a stop request stops ``server`` (also one that came before)."""
        self._server = server
        if self.requested:
            server.should_exit = True

    def wait(self) -> None:
        while not self.requested:
            time.sleep(self.POLL_SECONDS)

    def install(self) -> None:
        """For the rest of the process: a Ctrl-C while the vault closes and the process
        leaves must not turn a clean stop into an interrupted one (exit 130)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


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
    with cli.writer("run"), cli.vault(passphrase_file, writer=True, prepare=True) as vault:
        registry = CollectorRegistry()
        agent = Agent(vault)
        metrics = AgentMetrics(registry, agent)
        agent.on_result = metrics.observe
        stop = _StopRequest()
        stop.install()
        # The agent gives up (e.g. its state dir was deleted): the same one stop, then the
        # error below. Only attributes are set, so any thread may call it.
        agent.on_fatal = lambda: stop(signal.SIGTERM, None)
        agent.start()
        try:
            log.info(
                "vault %r on %d peer(s); watching %s; API %s",
                cfg.vault.id, len(vault.peers), cfg.watch.path,
                f"on http://{cfg.api.listen}" if cfg.api.enabled else "disabled",
            )  # fmt: skip
            if cfg.api.enabled:
                _serve(cli, vault, agent, registry, stop)
            else:
                stop.wait()
        finally:
            log.info("stopping: %d job(s) stay queued for the next start", agent.jobs.depth())
            agent.stop(STOP_TIMEOUT)
    if agent.fatal is not None:  # e.g. the state dir was deleted: a supervisor restarts us
        raise agent.fatal
    _exit_if_requests_hang()
    # Stopped, nothing left to interrupt. Python resets its own handlers to the default
    # while the interpreter finalizes (a Ctrl-C then kills the exit); SIG_IGN stays.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _exit_if_requests_hang() -> None:
    """Python joins executor threads at exit; one blocked on a hung peer would delay the
    exit by its timeouts and retries. The queue and catalog are consistent at this point
    (SQLite transactions), so leave without waiting for them."""
    import os

    # Our executors' thread names (peerhealth's probes: "probe_").
    prefixes = ("replica_", "chunk_", "api-chunk_", "probe_")
    deadline = time.monotonic() + 1.0  # idle pool threads leave at once; busy ones do not
    for thread in threading.enumerate():
        if thread.name.startswith(prefixes):
            thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t for t in threading.enumerate() if t.name.startswith(prefixes) and t.is_alive()]
    if busy:
        log.warning("exiting with %d request(s) still waiting on peers", len(busy))
        logging.shutdown()
        os._exit(0)


def _serve(
    cli: CliContext, vault: Vault, agent: Agent, registry: CollectorRegistry, stop: _StopRequest
) -> None:
    import uvicorn

    from chunkvault.api.app import create_app
    from chunkvault.api.vaultbackend import VaultBackend

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # uvicorn installs this while it serves: the same one stop request as outside
            # (never a force quit, and no signal re-raised after it returns).
            stop(sig, frame)

    cfg = cli.config
    assert cfg.api.token is not None
    app = create_app(
        VaultBackend(vault, agent), cfg.api.token.get_secret_value(), registry=registry
    )
    server = Server(
        uvicorn.Config(
            app,
            host=cfg.api.host,
            port=cfg.api.port,
            log_level="warning",
            access_log=cli.debug,
            timeout_graceful_shutdown=2,
        )
    )
    stop.attach(server)
    if agent.fatal is not None:  # gave up before the server started
        return
    server.run()
    if not server.started and agent.fatal is None:
        raise ChunkvaultError(
            f"could not serve the API on {cfg.api.listen}", "is the port already in use?"
        )
