"""The ``chunkvault`` command line: one module per command group, wired in main.py."""

import os

# pydantic looks for plugins among every installed distribution's entry points when the
# first model is built (~20-40 ms of each command, measured with -X importtime); the
# command uses none. Only when the user has not chosen otherwise.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
