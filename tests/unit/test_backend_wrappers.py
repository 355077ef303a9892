"""RetryPeer, LimitPeer and HealthPeer around a MemoryPeer with injected faults.

No real sleeping: RetryPeer gets a recording sleep, HealthPeer a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from chunkvault.backends import (
    HealthPeer,
    LimitPeer,
    MalformedReply,
    MemoryPeer,
    NotFound,
    Peer,
    PeerDown,
    PermanentError,
    RetryPeer,
    TransientError,
)
from chunkvault.backends.health import SLOW_PROBE_SECONDS


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def in_thread(fn: Callable[[], object], timeout: float = 2.0) -> bool:
    """Run ``fn`` in a thread; True if it finished within ``timeout`` (i.e. did not block)."""
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()


# -- RetryPeer ------------------------------------------------------------------------------


def retry_peer(mem: MemoryPeer, retries: int = 3, rng: float = 0.5) -> tuple[RetryPeer, list]:
    sleeps: list[float] = []
    return RetryPeer(mem, retries, sleep=sleeps.append, rng=lambda: rng), sleeps


def test_retry_recovers_from_transient_failures() -> None:
    mem = MemoryPeer()
    peer, sleeps = retry_peer(mem)
    mem.fail_next(2)
    peer.put("a/b", b"x")
    assert mem.calls == ["put", "put", "put"]
    assert len(sleeps) == 2
    assert peer.get("a/b") == b"x"


def test_retry_gives_up_after_retries() -> None:
    mem = MemoryPeer()
    peer, sleeps = retry_peer(mem, retries=3)
    mem.fail_next(10)
    with pytest.raises(TransientError):
        peer.get("a/b")
    assert mem.calls == ["get"] * 4  # the first attempt + 3 retries
    assert len(sleeps) == 3


def test_retry_zero_means_one_attempt() -> None:
    mem = MemoryPeer()
    peer, sleeps = retry_peer(mem, retries=0)
    mem.fail_next(1)
    with pytest.raises(TransientError):
        peer.stat("a/b")
    assert (mem.calls, sleeps) == (["stat"], [])


@pytest.mark.parametrize(
    "error", [PermanentError, PeerDown, PermanentError("memory", "quota"), PeerDown("m", "down")]
)
def test_retry_does_not_retry_permanent_errors_or_peer_down(error: object) -> None:
    mem = MemoryPeer()
    peer, sleeps = retry_peer(mem)
    mem.fail_next(1, error)  # type: ignore[arg-type]
    with pytest.raises(PermanentError if "Permanent" in repr(error) else PeerDown):
        peer.put("a/b", b"x")
    assert (mem.calls, sleeps) == (["put"], [])


def test_retry_does_not_retry_not_found() -> None:
    mem = MemoryPeer()
    peer, sleeps = retry_peer(mem)
    with pytest.raises(NotFound):
        peer.get("no/such")
    assert (mem.calls, sleeps) == (["get"], [])


def test_backoff_is_exponential_capped_and_jittered() -> None:
    peer = RetryPeer(MemoryPeer(), 8, base_delay=0.2, max_delay=5.0, rng=lambda: 1.0)
    assert [peer.backoff(n) for n in range(7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5, 5])
    assert RetryPeer(MemoryPeer(), rng=lambda: 0.0).backoff(5) == 0
    jittered = RetryPeer(MemoryPeer())  # the real random source
    delays = [jittered.backoff(n) for n in range(12) for _ in range(20)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 200  # full jitter: spread, not a fixed schedule


def test_retry_sleeps_between_attempts_with_backoff() -> None:
    mem = MemoryPeer()
    peer, sleeps = retry_peer(mem, retries=3, rng=1.0)
    mem.fail_next(3)
    peer.delete("a/b")
    assert sleeps == pytest.approx([0.2, 0.4, 0.8])


def test_retry_resumes_a_listing_without_duplicates() -> None:
    mem = MemoryPeer(page_size=2)
    for key in ("k/1", "k/2", "k/3", "k/4", "k/5"):
        mem.put(key, b"x")
    peer, sleeps = retry_peer(mem)
    mem.fail_next(1, ops={"list"}, skip=1)  # the second page fails
    assert [i.key for i in peer.list("k/")] == ["k/1", "k/2", "k/3", "k/4", "k/5"]
    assert len(sleeps) == 1


def test_retry_listing_gives_up() -> None:
    mem = MemoryPeer()
    mem.put("k/1", b"x")
    peer, sleeps = retry_peer(mem, retries=2)
    mem.fail_next(5, ops={"list"})
    with pytest.raises(TransientError):
        list(peer.list())
    assert len(sleeps) == 2


def test_wrappers_validate_before_calling_inner() -> None:
    mem = MemoryPeer()
    peer = HealthPeer(RetryPeer(LimitPeer(mem, 1)), down_after_failures=1)
    for call in (
        lambda: peer.put("../x", b""),
        lambda: peer.get(""),
        lambda: peer.get("a", max_size=-1),
        lambda: peer.get("a", max_size=True),
        lambda: peer.get("a", max_size=1.5),  # type: ignore[arg-type]
        lambda: peer.put("a", b"", {"A": "x"}),
        lambda: peer.list("../"),
    ):
        with pytest.raises(ValueError):
            call()
    assert mem.calls == [] and peer.is_up


def test_wrappers_pass_the_get_cap_and_a_malformed_reply_is_an_answer() -> None:
    mem = MemoryPeer()
    mem.put("k/big", b"x" * 100)
    sleeps: list[float] = []
    peer = HealthPeer(RetryPeer(LimitPeer(mem, 1), 3, sleep=sleeps.append), 1)
    assert peer.get("k/big", max_size=100) == b"x" * 100
    for _ in range(3):
        with pytest.raises(MalformedReply, match="more than the 99 expected"):
            peer.get("k/big", max_size=99)
    # Not retried (asking again cannot shrink the body) and not a sign of a dead peer.
    assert mem.calls.count("get") == 4 and sleeps == [] and peer.is_up


def test_a_listing_that_breaks_the_contract_is_not_retried() -> None:
    mem = MemoryPeer(page_size=2)
    mem.max_listing = 3
    for key in ("k/1", "k/2", "k/3", "k/4"):
        mem.put(key, b"x")
    sleeps: list[float] = []
    peer = HealthPeer(RetryPeer(LimitPeer(mem, 1), 3, sleep=sleeps.append), 1)
    seen = []
    with pytest.raises(MalformedReply, match="more than 3 objects"):
        for info in peer.list("k/"):
            seen.append(info.key)
    assert seen == ["k/1", "k/2", "k/3"] and sleeps == [] and peer.is_up


# -- LimitPeer ------------------------------------------------------------------------------


def test_limit_caps_concurrent_requests() -> None:
    mem = MemoryPeer()
    lock = threading.Lock()
    active = peak = 0

    def hook(op: str) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1

    mem.hook = hook
    peer = LimitPeer(mem, 3)
    threads = [threading.Thread(target=lambda i=i: peer.put(f"k/{i}", b"x")) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3
    assert len(list(mem.list())) == 12


def test_limit_releases_the_slot_on_errors() -> None:
    mem = MemoryPeer()
    peer = LimitPeer(mem, 1)
    mem.fail_next(3)
    for _ in range(3):
        with pytest.raises(TransientError):
            peer.get("a")
    with pytest.raises(NotFound):
        peer.get("a")
    assert in_thread(lambda: peer.put("a", b"x"))


def test_limit_holds_no_slot_between_listing_pages() -> None:
    mem = MemoryPeer()
    mem.put("k/1", b"x")
    mem.put("k/2", b"x")
    peer = LimitPeer(mem, 1)
    listing = peer.list("k/")
    assert next(listing).key == "k/1"
    assert in_thread(lambda: peer.put("k/3", b"x"))  # would deadlock if the slot were held
    assert [i.key for i in listing] == ["k/2"]  # a snapshot taken at the first page


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LimitPeer(MemoryPeer(), 0)


# -- HealthPeer -----------------------------------------------------------------------------


def health_peer(failures: int = 3, seconds: float = 30) -> tuple[HealthPeer, MemoryPeer, FakeClock]:
    mem, clock = MemoryPeer(), FakeClock()
    return HealthPeer(mem, failures, seconds, clock=clock), mem, clock


def test_health_marks_down_after_consecutive_failures_and_fails_fast() -> None:
    peer, mem, clock = health_peer(failures=3)
    mem.down = True
    for n in range(3):
        assert peer.is_up
        with pytest.raises(TransientError) as err:
            peer.get("a")
        assert not isinstance(err.value, PeerDown)
        assert peer.consecutive_failures == n + 1
    assert not peer.is_up
    assert "peer is down" in (peer.last_error or "")
    before = len(mem.calls)
    clock.advance(29)
    with pytest.raises(PeerDown, match=r"next probe in 1\.0s"):
        peer.put("a", b"x")
    with pytest.raises(PeerDown):
        list(peer.list())
    assert len(mem.calls) == before  # the inner peer was not touched


def test_health_answers_are_not_failures() -> None:
    peer, mem, _ = health_peer(failures=3)
    mem.fail_next(2)
    for _ in range(2):
        with pytest.raises(TransientError):
            peer.get("a")
    with pytest.raises(NotFound):
        peer.get("a")  # the peer answered: the streak is broken
    assert peer.consecutive_failures == 0
    mem.fail_next(2)
    mem.fail_next(1, PermanentError)
    for error in (TransientError, TransientError, PermanentError):
        with pytest.raises(error):
            peer.stat("a")
    assert peer.is_up and peer.consecutive_failures == 0
    assert peer.last_latency is not None


def test_health_half_open_probe_then_recovery() -> None:
    peer, mem, clock = health_peer(failures=2, seconds=30)
    mem.down = True
    for _ in range(2):
        with pytest.raises(TransientError):
            peer.get("a")
    assert not peer.is_up
    clock.advance(30)
    calls = len(mem.calls)
    with pytest.raises(TransientError) as err:  # the probe went through, and failed
        peer.get("a")
    assert not isinstance(err.value, PeerDown) and len(mem.calls) == calls + 1
    with pytest.raises(PeerDown):  # down again for another cool-off
        peer.get("a")
    assert peer.down_for == 30
    clock.advance(30)
    mem.down = False
    peer.put("a", b"x")  # probe succeeds
    assert peer.is_up and peer.consecutive_failures == 0 and peer.down_for == 0
    assert peer.get("a") == b"x"


def test_health_lets_exactly_one_probe_through() -> None:
    peer, mem, clock = health_peer(failures=1, seconds=5)
    mem.fail_next(1)
    with pytest.raises(TransientError):
        peer.get("a")
    clock.advance(5)
    entered, release = threading.Event(), threading.Event()

    def hook(op: str) -> None:
        entered.set()
        release.wait(5)

    mem.hook = hook
    probe = threading.Thread(target=lambda: peer.put("a", b"x"))
    probe.start()
    try:
        assert entered.wait(5)
        with pytest.raises(PeerDown, match="probe is in flight"):
            peer.get("a")
    finally:
        release.set()
        probe.join()
    mem.hook = None
    assert peer.is_up and peer.get("a") == b"x"


def test_health_unused_listing_does_not_hold_the_probe() -> None:
    peer, mem, clock = health_peer(failures=1, seconds=5)
    mem.fail_next(1)
    with pytest.raises(TransientError):
        peer.get("a")
    clock.advance(5)
    listing = peer.list()  # created, never iterated
    peer.put("a", b"x")  # is the probe
    assert peer.is_up
    assert [i.key for i in listing] == ["a"]


def test_health_explicit_probe() -> None:
    peer, mem, clock = health_peer(failures=1, seconds=30)
    assert peer.probe() >= 0 and peer.last_latency is not None
    mem.down = True
    with pytest.raises(TransientError):
        peer.probe()
    assert not peer.is_up
    clock.advance(10)
    with pytest.raises(TransientError):
        peer.probe()  # runs even while down (no PeerDown) and re-arms the cool-off
    assert peer.down_for == 30
    mem.down = False
    assert peer.probe() == 0.0  # fake clock: no time passes
    assert peer.is_up
    assert mem.calls[-1] == "stat"


def test_health_probe_of_an_uncreated_container_is_an_answer_but_not_up() -> None:
    mem = MemoryPeer(created=False)
    peer = HealthPeer(mem, 1, 30, clock=FakeClock())
    with pytest.raises(PermanentError, match="peers init"):
        peer.probe()
    # An answer: nothing is marked down, requests still go through...
    assert peer.down_for == 0 and peer.consecutive_failures == 0
    # ...but a peer that refuses its probe is not up, and says why.
    assert not peer.is_up and "peers init" in (peer.error or "")
    with pytest.raises(PermanentError):
        peer.put("a", b"x")  # refused again: still not up
    assert not peer.is_up
    assert mem.create_container()
    peer.put("a", b"x")
    assert peer.is_up and peer.error is None


def test_health_one_failed_probe_marks_the_peer_down() -> None:
    # `status` saw a killed peer as up: its one failed probe was 1 of 3 failures. A probe
    # has been retried already (RetryPeer is inside); its verdict counts at once.
    peer, mem, _ = health_peer(failures=3, seconds=30)
    mem.down = True
    with pytest.raises(TransientError):
        peer.probe()
    assert not peer.is_up and peer.down_for == 30
    assert "peer is down" in (peer.error or "")
    with pytest.raises(PeerDown):
        peer.get("a")


def test_health_check_probes_unless_fresh_or_cooling_off() -> None:
    peer, mem, clock = health_peer(failures=3, seconds=30)
    peer.check()  # max_age 0: always probes
    assert mem.calls == ["stat"] and peer.is_up
    peer.check(max_age=5)
    assert mem.calls == ["stat"]  # probed 0 s ago
    clock.advance(5)
    peer.check(max_age=5)
    assert mem.calls == ["stat"] * 2
    mem.down = True
    clock.advance(5)
    peer.check(max_age=5)  # fails: down, no exception
    assert not peer.is_up and mem.calls == ["stat"] * 3
    clock.advance(10)
    mem.down = False
    peer.check(max_age=5)  # in its cool-off: known down, not probed
    assert not peer.is_up and len(mem.calls) == 3
    peer.check()  # max_age 0 (the CLI): probes anyway, and it is back
    assert peer.is_up and len(mem.calls) == 4


def test_health_check_sends_one_probe_at_a_time() -> None:
    peer, mem, clock = health_peer()
    entered, release = threading.Event(), threading.Event()
    probes: list[str] = []

    def hook(op: str) -> None:
        probes.append(op)
        entered.set()
        release.wait(5)

    mem.hook = hook
    first = threading.Thread(target=peer.check, kwargs={"max_age": 5})
    first.start()
    try:
        assert entered.wait(5)
        # A GET /status caller does not queue up behind the probe in flight...
        assert in_thread(lambda: peer.check(max_age=5))
        assert probes == ["stat"]
        # ...and a hung peer is not up once its probe has waited SLOW_PROBE_SECONDS.
        assert peer.is_up
        clock.advance(SLOW_PROBE_SECONDS)
        assert not peer.is_up and peer.error == "no answer to a probe for 5s"
        assert peer.down_for == 0  # a verdict for status, not a cool-off for traffic
        # The CLI's check (max_age 0) waits for it, then probes itself.
        cli = threading.Thread(target=peer.check)
        cli.start()
        time.sleep(0.05)
        assert cli.is_alive() and probes == ["stat"]
    finally:
        release.set()
        first.join()
    cli.join()
    assert probes == ["stat", "stat"] and peer.is_up and peer.error is None


# -- get_range_into through every wrapper -----------------------------------------------------

PACK = bytes(range(256)) * 4


def read_range(peer: Peer, offset: int, length: int, spare: int = 16) -> bytearray:
    """A ranged read into a buffer with ``spare`` sentinel bytes after the range, which
    it checks are untouched."""
    buf = bytearray(b"\x5a" * (length + spare))
    peer.get_range_into("v/packs/p", memoryview(buf), offset, length)
    assert buf[length:] == b"\x5a" * spare
    return buf[:length]


def test_wrappers_validate_a_ranged_read_before_calling_inner() -> None:
    mem = MemoryPeer()
    peer = HealthPeer(RetryPeer(LimitPeer(mem, 1)), down_after_failures=1)
    buf = memoryview(bytearray(10))
    for call in (
        lambda: peer.get_range_into("../x", buf, 0, 1),
        lambda: peer.get_range_into("a", buf, -1, 1),
        lambda: peer.get_range_into("a", buf, 0, 0),
        lambda: peer.get_range_into("a", buf, 0, 11),
        lambda: peer.get_range_into("a", memoryview(bytes(10)), 0, 1),
    ):
        with pytest.raises(ValueError):
            call()
    assert mem.calls == [] and peer.is_up


def test_retry_retries_a_transient_ranged_read() -> None:
    mem = MemoryPeer()
    mem.put("v/packs/p", PACK)
    peer, sleeps = retry_peer(mem, retries=3)
    mem.fail_next(2, ops={"get_range"})
    assert read_range(peer, 300, 100) == PACK[300:400]
    assert mem.calls == ["put"] + ["get_range"] * 3 and len(sleeps) == 2
    mem.fail_next(10, ops={"get_range"})
    with pytest.raises(TransientError):
        read_range(peer, 300, 100)
    assert mem.calls.count("get_range") == 3 + 4 and len(sleeps) == 2 + 3


def test_retry_does_not_retry_a_ranged_read_past_the_end_or_of_a_missing_object() -> None:
    mem = MemoryPeer()
    mem.put("v/packs/p", PACK)
    peer, sleeps = retry_peer(mem, retries=3)
    with pytest.raises(MalformedReply, match="ends before the range"):
        read_range(peer, len(PACK) - 10, 11)
    mem.delete("v/packs/p")
    with pytest.raises(NotFound):
        read_range(peer, 0, 1)
    assert mem.calls.count("get_range") == 2 and sleeps == []


def test_health_counts_failed_ranged_reads_and_their_answers() -> None:
    peer, mem, clock = health_peer(failures=2, seconds=30)
    mem.put("v/packs/p", PACK)
    mem.fail_next(1, ops={"get_range"})
    with pytest.raises(TransientError):
        read_range(peer, 0, 10)
    assert peer.consecutive_failures == 1
    # A range past the end is the peer's answer (a short copy), not a sign it is down.
    with pytest.raises(MalformedReply):
        read_range(peer, len(PACK), 1)
    assert peer.consecutive_failures == 0 and peer.is_up
    mem.fail_next(2, ops={"get_range"})
    for _ in range(2):
        with pytest.raises(TransientError):
            read_range(peer, 0, 10)
    assert not peer.is_up
    before = len(mem.calls)
    with pytest.raises(PeerDown):
        read_range(peer, 0, 10)
    assert len(mem.calls) == before  # failed fast: nothing sent
    clock.advance(30)
    assert read_range(peer, 1000, 24) == PACK[1000:]  # the half-open probe, and it is back
    assert peer.is_up and peer.last_latency is not None


def test_limit_holds_a_slot_for_a_ranged_read() -> None:
    mem = MemoryPeer()
    mem.put("v/packs/p", PACK)
    entered, release = threading.Event(), threading.Event()

    def hook(op: str) -> None:
        if op == "get_range":
            entered.set()
            release.wait(5)

    mem.hook = hook
    peer = LimitPeer(mem, 1)
    reader = threading.Thread(target=lambda: read_range(peer, 0, 10))
    reader.start()
    try:
        assert entered.wait(5)
        assert not in_thread(lambda: peer.put("v/other", b"x"), timeout=0.3)  # slot taken
    finally:
        release.set()
        reader.join()
    mem.hook = None
    mem.fail_next(1, ops={"get_range"})
    with pytest.raises(TransientError):
        read_range(peer, 0, 10)
    assert in_thread(lambda: peer.put("v/other", b"y"))  # released on the error
