"""``python -m chunkvault`` is the same as the ``chunkvault`` command."""

from chunkvault.cli.main import entry

entry()
