#!/usr/bin/env bash
# `make test-container`: build chunkvault:latest offline, then run the container tier
# (tests/container, marked `container`) against it. A Docker engine this script had to
# start is stopped again at the end; one that was already running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-.venv/bin/python -m pytest}

if ! docker info >/dev/null 2>&1; then
    trap 'container/engine.sh down' EXIT
fi
container/build-offline.sh
# shellcheck disable=SC2086
$PYTEST -m container tests/container "$@"
