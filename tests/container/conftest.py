"""The container tier (``make test-container``): the image ``make image-offline`` built, run
as users run it. Every test here is marked ``container``; ``make test`` deselects them
(pyproject's addopts), ``make test-container`` selects them after building the image."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.container)
