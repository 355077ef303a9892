"""``python -m chunkvault.healthcheck``: the container's HEALTHCHECK.

Asks the running agent's API for ``GET /health`` at the address the config gives (a
wildcard listen address is probed on loopback) and exits 0 when it answers ``ok``, 1
otherwise. Standard library only, and no vault is opened, so a probe every 30 s costs a
config parse and one local HTTP request. With ``api.enabled: false`` there is nothing to ask:
it exits 0, and Docker's view of health is then the process running at all.
"""

from __future__ import annotations

import http.client
import json
import sys

from chunkvault.config import Config, ConfigError, load_config

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def probe(config: Config, timeout: float = 5.0) -> str | None:
    """None when the agent answers healthy, else what went wrong (one line)."""
    host = _WILDCARDS.get(config.api.host, config.api.host)
    conn = http.client.HTTPConnection(host, config.api.port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        reply = conn.getresponse()
        body = reply.read(4096)
    except OSError as exc:
        return f"no answer from http://{config.api.listen}/health: {exc}"
    finally:
        conn.close()
    if reply.status != 200:
        return f"GET /health answered HTTP {reply.status}"
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        status = None
    return None if status == "ok" else f"GET /health answered {body[:200]!r}"


def main() -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if not config.api.enabled:
        print("api disabled: nothing to probe")
        return 0
    problem = probe(config)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
