"""``python -m chunkvault`` is the same as the ``chunkvault`` command."""

import sys

from chunkvault.cli.main import main

sys.exit(main())
