"""``make run``: a complete local demo. Three S3 peers (moto) on loopback, a demo vault in
``.demo/``, and ``chunkvault run`` watching ``./inbox`` and serving the API, until Ctrl-C
stops all of it.

The peers keep objects in memory, so every start is a fresh vault: ``.demo/state`` is
reset each time. ``.demo/new-machine.yaml`` is the same vault with its own empty state dir,
as a second machine would have: the tour restores with it from the peers alone, while the
agent keeps its own state (deleting a running agent's state dir stops the agent).

The passphrase is written to ``.demo/passphrase`` for convenience: that is for this demo
only; a real vault's passphrase lives in your head or a password manager.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from chunkvault.localpeers import demo_config, moto_available, start_servers

HOST = "127.0.0.1"


def _port(preferred: int = 8080) -> int:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, preferred))
            return preferred
        except OSError:
            sock.bind((HOST, 0))
            return int(sock.getsockname()[1])


def _secret_file(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    path.chmod(0o600)


def main() -> int:
    if not moto_available():
        print("error: moto_server not found: run `make run` (it installs the test extra)")
        return 1
    base = Path(".demo").resolve()
    inbox = Path("inbox").resolve()
    shutil.rmtree(base / "state", ignore_errors=True)
    shutil.rmtree(base / "new-machine", ignore_errors=True)
    base.mkdir(exist_ok=True)
    inbox.mkdir(exist_ok=True)
    passphrase, token = base / "passphrase", base / "api-token"
    _secret_file(passphrase, "demo-only " + secrets.token_urlsafe(12))
    _secret_file(token, secrets.token_urlsafe(24))
    servers = start_servers(3)
    config = base / "chunkvault.yaml"
    data = demo_config([s.endpoint for s in servers], base, inbox)
    port = _port()
    data["api"] = {"listen": f"{HOST}:{port}", "token_file": str(token)}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    other = {**data, "vault": {**data["vault"], "state_dir": str(base / "new-machine")}}
    other["api"] = {"enabled": False}
    (base / "new-machine.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    env = dict(
        os.environ, CHUNKVAULT_CONFIG=str(config), CHUNKVAULT_PASSPHRASE_FILE=str(passphrase)
    )
    cli = [sys.executable, "-m", "chunkvault"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([*cli, "init"], env=env, check=True)
        agent = subprocess.Popen([*cli, "run"], env=env)
        _print_tour(servers_ports=[s.port for s in servers], config=config, port=port)
        while not stop.wait(0.5):
            if agent.poll() is not None:
                # Ctrl-C reaches the agent too (one process group), and it may be gone
                # before this process sees its own: an agent that exits 0 (or dies of the
                # signal, during its start-up) was stopped; any other code is a failure.
                stopped = agent.returncode in (0, -signal.SIGINT, -signal.SIGTERM)
                return 0 if stopped else agent.returncode or 1
    except KeyboardInterrupt:
        pass
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGINT)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        for server in servers:
            server.shutdown()
        print("\ndemo stopped: agent and local peers are down (their data was in memory)")
    return 0


def _print_tour(servers_ports: list[int], config: Path, port: int) -> None:
    rel = os.path.relpath(config)
    print(
        f"""
chunkvault demo is running. Ctrl-C stops the agent and the peers.
  peers : 3 local S3 servers on {HOST} ports {", ".join(map(str, servers_ports))}
  vault : {rel} (passphrase in .demo/passphrase: DEMO ONLY)
  inbox : ./inbox is watched: every file created, changed or deleted there is stored
  API   : http://{HOST}:{port}  (token in .demo/api-token)

Try, in another terminal in this directory:
  export CHUNKVAULT_CONFIG={rel} CHUNKVAULT_PASSPHRASE_FILE=.demo/passphrase
  cp -r docs inbox/                              # the agent chunks, encrypts, replicates
  .venv/bin/chunkvault ls                        # a second later: what the vault holds
  # a second machine: its own empty state dir, only the passphrase and the peers
  .venv/bin/chunkvault --config .demo/new-machine.yaml restore --to /tmp/restored
  diff -r inbox /tmp/restored && echo identical
  .venv/bin/chunkvault status
  TOKEN=$(cat .demo/api-token); head -c 122880 /dev/urandom > /tmp/c1
  curl -s -H "Authorization: Bearer $TOKEN" -X PUT --data-binary @/tmp/c1 http://{HOST}:{port}/chunks/c1
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"chunks":[{{"id":"c1","size_in_KB":120}}],"request_id":"1234"}}' http://{HOST}:{port}/upload
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
