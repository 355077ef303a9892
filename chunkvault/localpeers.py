"""Local S3 peers for demos and tests: ``moto_server`` subprocesses on 127.0.0.1.

``make peers`` / ``make run`` use :func:`main`; the test suite starts its peers with the
same code.

Each server is our own child process; we only ever signal it by its Popen handle (so by
its PID, and never after it was reaped). ``shutdown_all()`` runs at interpreter exit as a
last resort, so no server outlives the test session.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import yaml

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
DUMMY_CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}  # moto accepts any

_running: set[MotoServer] = set()
_running_lock = threading.Lock()
# urllib would honour HTTP(S)_PROXY; loopback must never go through a proxy.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def moto_command() -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    return [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """One moto_server process. Use :meth:`start`, then :meth:`shutdown`."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.port = port
        self.process = process
        self._log = log

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def launch(cls) -> MotoServer:
        """Start the process without waiting for it to answer."""
        env = dict(os.environ)
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        port = free_port()
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by shutdown()
        process = subprocess.Popen(
            [*moto_command(), "-H", HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,  # a file, not a pipe: nobody reads it, so a pipe could fill up
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C goes to pytest, which stops us
        )
        server = cls(port, process, log)
        with _running_lock:
            _running.add(server)
        return server

    @classmethod
    def start(cls) -> MotoServer:
        return start_servers(1)[0]

    def answers(self) -> bool:
        try:
            with _opener.open(self.endpoint + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is serving
        except OSError:
            return False

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    # -- faults -----------------------------------------------------------------------------

    def _signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the peer dies at once; connections are refused afterwards."""
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGSTOP: the peer hangs (the kernel still accepts connections)."""
        self._signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT: a stopped peer resumes."""
        self._signal(signal.SIGCONT)

    def shutdown(self) -> None:
        """Terminate (SIGCONT first: a stopped process cannot act on SIGTERM), then kill."""
        try:
            if self.process.poll() is None:
                self.cont()
                self._signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            with _running_lock:
                _running.discard(self)
            self._log.close()


def start_servers(n: int) -> list[MotoServer]:
    """Start ``n`` servers in parallel and wait until each answers HTTP."""
    servers = [MotoServer.launch() for _ in range(n)]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(servers)
        while pending:
            for server in list(pending):
                if server.process.poll() is not None:
                    raise RuntimeError(f"moto_server exited early:\n{server.output()}")
                if server.answers():
                    pending.remove(server)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer in {START_TIMEOUT}s")
            if pending:
                time.sleep(0.05)
    except BaseException:
        for server in servers:
            server.shutdown()
        raise
    return servers


class MotoPeers:
    """A group of servers (the session's shared S3 peers)."""

    def __init__(self, servers: list[MotoServer]) -> None:
        self.servers = servers

    @classmethod
    def start(cls, n: int) -> MotoPeers:
        return cls(start_servers(n))

    @property
    def endpoints(self) -> list[str]:
        return [server.endpoint for server in self.servers]

    def __len__(self) -> int:
        return len(self.servers)

    def __getitem__(self, index: int) -> MotoServer:
        return self.servers[index]

    def __iter__(self) -> Iterator[MotoServer]:
        return iter(self.servers)

    def shutdown(self) -> None:
        for server in self.servers:
            server.shutdown()


def shutdown_all() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.shutdown()


atexit.register(shutdown_all)


def demo_config(endpoints: list[str], base: Path, watch: Path) -> dict[str, object]:
    """A config for local peers: R=2 over every peer, state under ``base``."""
    return {
        "vault": {"id": "demo", "state_dir": str(base / "state")},
        "watch": {"path": str(watch), "settle_seconds": 0.5},
        "replication": {"replicas": min(2, len(endpoints)), "min_replicas": 1},
        "transfer": {"timeout_seconds": 5},
        "peers": [
            {
                "name": f"peer-{chr(ord('a') + i)}",
                "endpoint": endpoint,
                "bucket": "chunkvault",
                **DUMMY_CREDENTIALS,
            }
            for i, endpoint in enumerate(endpoints)
        ],
    }


def create_buckets(config: dict[str, object]) -> None:
    """What `chunkvault peers init` does, so the peers are ready to use (`peers test`)."""
    from chunkvault.backends.stack import build_peers
    from chunkvault.config import parse_config

    peers = build_peers(parse_config(config))
    try:
        for peer in peers:
            peer.create_container()
    finally:
        for peer in peers:
            peer.close()


def main(argv: list[str] | None = None) -> int:
    """Run N local S3 peers until Ctrl-C, with a config for them written to ``--config``."""
    parser = argparse.ArgumentParser(
        prog="python -m chunkvault.localpeers", description=main.__doc__
    )
    parser.add_argument("--count", type=int, default=3, help="number of peers (default 3)")
    parser.add_argument("--config", type=Path, default=Path(".demo/chunkvault.yaml"))
    parser.add_argument("--watch", type=Path, default=Path("inbox"))
    args = parser.parse_args(argv)
    if not moto_available():
        print("error: moto_server not found: install the test extra (pip install -e '.[test]')")
        return 1
    base = args.config.resolve().parent
    base.mkdir(parents=True, exist_ok=True)
    servers = start_servers(args.count)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        config = demo_config([s.endpoint for s in servers], base, args.watch.resolve())
        create_buckets(config)  # before the config appears: whoever reads it can use them
        args.config.write_text(yaml.safe_dump(config, sort_keys=False))
        for server in servers:
            print(f"S3 peer on {server.endpoint} (pid {server.pid})")
        print(f"config for them: {args.config}  (buckets created; objects live in memory; "
              "Ctrl-C stops them)")  # fmt: skip
        sys.stdout.flush()
        while not stop.wait(0.5):
            dead = [s for s in servers if s.process.poll() is not None]
            if dead:
                print(f"error: peer on {dead[0].endpoint} exited:\n{dead[0].output()}")
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.shutdown()
        print("local peers stopped")
    return 0


def moto_available() -> bool:
    command = moto_command()
    if len(command) == 1:
        return Path(command[0]).exists()
    try:
        return importlib.util.find_spec("moto.server") is not None
    except ModuleNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
