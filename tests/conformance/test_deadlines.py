"""Backend conformance: deadlines and eviction at the PollDesc level.

A Timers heap stands in for the scheduler's timers: run_due(now) fires what
is due at ``now`` and returns the waiters it woke.

Also: tests/runtime/test_wait_deadlines.py holds the deadline semantics that do
not depend on the backend (goroutines in pd.wait under the scheduler);
tests/net/test_deadline.py the conn API and Go's timeout tests.
"""

from __future__ import annotations

import socket
import time

import pytest

import netpoll
from support import MS
from support.conformance import Waiter, settle_edges, wait_for
from netpoll._netpoll import POLL_ERR_TIMEOUT, POLL_NO_ERROR, Timers, monotonic_ns


@pytest.fixture
def timed(backend, kit):
    a, b = kit.socketpair()
    timers = Timers()
    pd = kit.open(a, timers)
    return pd, timers, a, b


def test_past_deadline_wakes_the_waiter_and_fails_the_next_park(backend, timed):
    pd, timers, a, b = timed
    r = Waiter("r")
    assert pd.park("r", r) is False
    assert pd.set_deadline(-1, "r") == [r]
    assert pd.sema("r") == 0, "a timeout leaves no pending readiness"
    with pytest.raises(netpoll.DeadlineExceededError):
        pd.park("r", Waiter("r2"))
    with pytest.raises(netpoll.DeadlineExceededError):
        pd.prepare("r")
    assert pd.check("r") == POLL_ERR_TIMEOUT
    assert pd.check("w") == POLL_NO_ERROR, "the write direction has no deadline"
    assert pd.deadlines()[0] < 0
    # Data that arrives later does not bring the timed-out reader back.
    b.send(b"x")
    assert backend.netpoll(20 * MS) == []
    # Clearing the deadline makes the descriptor usable again, and the data's
    # readiness reaches the next reader: kept as pdReady (an edge, or an
    # interest the timed-out reader had armed) or seen once its park arms.
    assert pd.set_deadline(0, "r") == []
    r3 = Waiter("r3")
    if pd.park("r", r3) is False:
        assert wait_for(backend, r3) == [r3]


def test_future_deadline_fires_through_the_timers(backend, timed):
    pd, timers, a, b = timed
    now = monotonic_ns()
    when = now + 50 * MS
    assert pd.set_deadline(when, "r") == []
    assert pd.deadlines() == (when, 0)
    assert timers.next_deadline() == when
    r = Waiter("r")
    assert pd.park("r", r) is False
    assert timers.run_due(now) == []
    assert timers.run_due(when - 1) == []
    assert pd.sema("r") is r
    assert timers.run_due(when) == [r]
    assert len(timers) == 0
    with pytest.raises(netpoll.DeadlineExceededError):
        pd.park("r", Waiter("r2"))
    assert pd.deadlines()[0] < 0


def test_one_deadline_for_both_directions(backend, timed):
    pd, timers, a, b = timed
    settle_edges(backend, [pd])
    now = monotonic_ns()
    assert pd.set_deadline(now + 10 * MS, "rw") == []
    r = Waiter("r")
    assert pd.park("r", r) is False
    fired = timers.run_due(now + 10 * MS)
    assert fired == [r]
    for mode in ("r", "w"):
        with pytest.raises(netpoll.DeadlineExceededError):
            pd.park(mode, Waiter(mode))


def test_moving_a_deadline_makes_the_old_timer_a_noop(backend, timed):
    pd, timers, a, b = timed
    now = monotonic_ns()
    assert pd.set_deadline(now + 50 * MS, "r") == []
    r = Waiter("r")
    assert pd.park("r", r) is False
    assert pd.set_deadline(now + 200 * MS, "r") == []
    assert timers.run_due(now + 100 * MS) == [], "the old deadline fired"
    assert pd.sema("r") is r
    assert pd.check("r") == POLL_NO_ERROR
    assert timers.run_due(now + 200 * MS) == [r]


def test_clearing_a_deadline_stops_its_timer(backend, timed):
    pd, timers, a, b = timed
    now = monotonic_ns()
    pd.set_deadline(now + 10 * MS, "r")
    r = Waiter("r")
    assert pd.park("r", r) is False
    assert pd.set_deadline(0, "r") == []
    assert timers.run_due(now + 10**12) == []
    assert len(timers) == 0
    assert pd.sema("r") is r
    b.send(b"x")
    assert wait_for(backend, r) == [r], "readiness still wakes the waiter"


def test_readiness_before_the_deadline_wins(backend, timed):
    pd, timers, a, b = timed
    settle_edges(backend, [pd])
    now = monotonic_ns()
    pd.set_deadline(now + 10**10, "r")
    r = Waiter("r")
    assert pd.park("r", r) is False
    b.send(b"x")
    assert wait_for(backend, r) == [r]
    pd.prepare("r")
    assert timers.run_due(now) == []
    assert pd.check("r") == POLL_NO_ERROR


def test_evict_wakes_both_waiters_and_later_parks_fail(backend, timed):
    pd, timers, a, b = timed
    # Fresh registration, nothing polled yet: both directions park.
    r, w = Waiter("r"), Waiter("w")
    assert pd.park("r", r) is False
    assert pd.park("w", w) is False
    pd.set_deadline(monotonic_ns() + 10**10, "r")
    woken = pd.evict()
    assert sorted(map(id, woken)) == sorted([id(r), id(w)])
    assert pd.closing
    for mode in ("r", "w"):
        with pytest.raises(netpoll.ClosedError):
            pd.park(mode, Waiter(mode))
        with pytest.raises(netpoll.ClosedError):
            pd.prepare(mode)
        assert pd.check(mode) == 1
    assert len(timers) == 0, "evict stops the deadline timers"
    assert pd.set_deadline(-1, "rw") == [], "deadlines on a closing descriptor do nothing"
    with pytest.raises(netpoll.NetpollError):
        pd.evict()
    b.send(b"x")
    assert backend.netpoll(20 * MS) == [], "an evicted descriptor wakes nobody"


def test_double_wait_is_an_invariant_error(backend, timed):
    pd, timers, a, b = timed
    assert pd.park("r", Waiter("r")) is False
    with pytest.raises(netpoll.NetpollError):
        pd.park("r", Waiter("again"))


# -- the clock ----------------------------------------------------------------

def test_the_timer_clock_is_the_clock_of_netpoll_now():
    # nanotime() (monotonic_ns) must read the clock behind time.monotonic(),
    # which netpoll.now() returns: on macOS that is mach_absolute_time, not
    # CLOCK_MONOTONIC, and the two drift apart by every sleep of the machine.
    # Each reading is taken between two readings of the other clock; any
    # offset or rate difference between two clocks shows up as a reading
    # outside its bracket.
    for _ in range(1000):
        a = time.monotonic_ns()
        n = monotonic_ns()
        b = time.monotonic_ns()
        assert a <= n <= b, f"timer clock {n} outside time.monotonic_ns() [{a}, {b}]"
        t0 = netpoll.now()
        n = monotonic_ns()
        t1 = netpoll.now()
        # now() is a float: allow its rounding (well under a microsecond).
        assert t0 - 1e-6 <= n / 1e9 <= t1 + 1e-6, f"timer clock {n} outside now() [{t0}, {t1}]"


def test_a_deadline_in_now_seconds_fires_when_now_reaches_it(backend_name):
    # End to end: a deadline given as netpoll.now() + 0.1 fails the read when
    # now() has passed it, never before.
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            from netpoll import _fd
            f = _fd.FD(a)
            try:
                at = netpoll.now() + 0.1
                f._set_deadline(at)
                with pytest.raises(netpoll.DeadlineExceededError):
                    await f.read(bytearray(1))
                return netpoll.now() - at
            finally:
                f.close()
        finally:
            b.close()

    late = netpoll.run(main(), backend=backend_name)
    assert late >= 0, f"the deadline fired {-late:.6f} s before now() reached it"
