"""The background repair's rate limit (chunkvault.healing): copies go out at most at
``repair.bytes_per_second``, and an idle spell does not save up a burst."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chunkvault import healing
from chunkvault.healing import Healer


def healer(waits: list[float]) -> Healer:
    vault = SimpleNamespace(config=SimpleNamespace(replication=SimpleNamespace(replicas=2)),
                            peers=[])  # fmt: skip
    return Healer(vault, 1_000_000, wait=lambda s: waits.append(s) or False)  # type: ignore[arg-type]


def test_copies_are_paced_to_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(healing.time, "monotonic", lambda: now[0])
    waits: list[float] = []
    h = healer(waits)
    h._throttle(500_000)  # half a second's worth, at once
    assert waits == [pytest.approx(0.5)]
    now[0] += 0.5
    h._throttle(250_000)
    assert waits[-1] == pytest.approx(0.25)


def test_an_idle_spell_saves_up_no_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(healing.time, "monotonic", lambda: now[0])
    waits: list[float] = []
    h = healer(waits)
    now[0] += 3600  # an hour with nothing to heal
    assert h._throttle(0) is False and waits == []
    h._throttle(2_000_000)  # then two seconds' worth: paced from now, not from an hour ago
    assert waits == [pytest.approx(2.0)]
