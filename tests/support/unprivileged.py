"""Running the CLI as a process that file permissions apply to.

The tests run as root here, and root reads and enters every directory whatever its mode:
the kernel grants that through two capabilities, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
Switching to ``nobody`` is not an option on this machine: the interpreter of ``.venv`` lives
under /root (0700), which nobody may enter. So the child drops those two capabilities from
its bounding set before exec (``prctl(PR_CAPBSET_DROP)``); it is still uid 0, but the mode
bits now decide, as for any user: a 0000 directory cannot be listed, a 0444 one cannot be
entered, and inotify refuses to watch what it may not read. Run as an ordinary user, the
tests need none of this.

:func:`permissions_apply` checks the mechanism works before a test relies on it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.cli import CLI

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_dac_capabilities() -> None:  # runs in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def preexec() -> Callable[[], None] | None:
    return _drop_dac_capabilities if os.geteuid() == 0 else None


def permissions_apply(tmp: Path) -> bool:
    """Whether a child started with :func:`preexec` is refused a 0000 directory."""
    probe = tmp / "permission-probe"
    probe.mkdir()
    probe.chmod(0)
    try:
        child = subprocess.run(
            [sys.executable, "-c", f"import os; os.listdir({str(probe)!r})"],
            capture_output=True, preexec_fn=preexec(),
        )  # fmt: skip
    except OSError:
        return False
    finally:
        probe.chmod(0o700)
        probe.rmdir()
    return child.returncode != 0 and b"PermissionError" in child.stderr


def cli_env(env: dict[str, str] | None) -> dict[str, str]:
    """The test's environment without CHUNKVAULT_* (as run_cli), plus ``env``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | (env or {})


def run_cli_restricted(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``support.cli.run_cli``, with file permissions applying to the CLI."""
    return subprocess.run(
        [CLI, "--config", str(config), *args], capture_output=True, text=True,
        env=cli_env(env), timeout=timeout, preexec_fn=preexec(),
    )  # fmt: skip


def popen_cli_restricted(
    config: Path, *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLI, "--config", str(config), *args], env=cli_env(env), preexec_fn=preexec(), **kwargs
    )
