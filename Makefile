# The two commands a user needs are `make run` and `make test`; everything installs into .venv
# from the project's own files, so a fresh machine needs only Python 3.11+ and the registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint format clean peers image-offline test-container bench

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(STAMP)

# The demo: 3 local S3 peers, a demo vault in .demo/, the agent on ./inbox; Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python -m chunkvault.demo

lint: $(STAMP)
	$(BIN)/ruff check chunkvault tests
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest

# chunkvault:latest with no image registry and no network in the build: a debootstrap base
# image, a wheelhouse made here, docker build --network none (container/build-offline.sh).
# Installs docker.io and debootstrap and starts dockerd if needed (root).
image-offline:
	PYTHON=$(PYTHON) container/build-offline.sh

# The container tier: image-offline, then tests/container against that image (CI runs it).
test-container: $(STAMP)
	PYTHON=$(PYTHON) container/test-container.sh

# Side-by-side benchmark (not part of `make test`): chunkvault vs raw boto3, restic and rclone
# on fresh local moto peers; writes docs/benchmarks.md and docs/benchmarks/*.png. ~8 min for
# issue 11's parts; issue 12's small-file parts took ~22 min more with one object per chunk
# and per manifest (the 20,000-file push alone ~17), far less once small chunks are packed.
# Installs Debian's restic and rclone if missing (root, or sudo) and the `bench` extra
# (matplotlib). BENCH_SCALE=0.1 makes a quick smaller run for development; one part alone:
# `.venv/bin/python -m chunkvault.bench.compare --only small` (see --help).
BENCH_SCALE ?= 1
bench: $(STAMP)
	@command -v restic >/dev/null && command -v rclone >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq restic rclone; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(BIN)/python -m chunkvault.bench.compare --scale $(BENCH_SCALE)

# Three local S3 peers (moto) on loopback and a config for them in .demo/; Ctrl-C stops them.
peers: $(STAMP)
	$(BIN)/python -m chunkvault.localpeers --count 3 --config .demo/chunkvault.yaml

format: $(STAMP)
	$(BIN)/ruff format chunkvault tests
	$(BIN)/ruff check --fix chunkvault tests

clean:
	rm -rf $(VENV) build wheels *.egg-info .pytest_cache .ruff_cache .hypothesis
