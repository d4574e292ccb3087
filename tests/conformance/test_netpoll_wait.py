"""Backend conformance: how netpoll(delay) waits, netpollbreak, and signals.

Timing checks are lower bounds (netpoll never returns before its delay) with
loose upper bounds: the machines are small and noisy.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from support import MS
from support.conformance import Waiter, settle_edges, wait_for

PROMPT = 1.0  # "returns promptly", in seconds: loose on purpose


class Later:
    """Run ``fn`` on a thread after ``delay`` seconds; records when it ran."""

    def __init__(self, delay: float, fn) -> None:
        self.delay = delay
        self.fn = fn
        self.at = None
        self.error = None
        self._cancel = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self._cancel.wait(self.delay):
            return
        try:
            self.at = time.monotonic()
            self.fn()
        except BaseException as e:  # reported by join()
            self.error = e

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._cancel.set()
        self._t.join(10)
        assert not self._t.is_alive()
        if self.error is not None and exc[0] is None:
            raise self.error


def timed_netpoll(backend, delay):
    t0 = time.monotonic()
    got = backend.netpoll(delay)
    return got, t0, time.monotonic()


# -- delays ------------------------------------------------------------------------

def test_netpoll_zero_returns_at_once(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    assert pd.park("r", Waiter("r")) is False
    t0 = time.monotonic()
    for _ in range(20):
        assert backend.netpoll(0) == []
    assert time.monotonic() - t0 < PROMPT


@pytest.mark.parametrize("delay_ns", [50 * MS, 1_500_000, 1])
def test_netpoll_waits_at_least_its_delay(backend, delay_ns):
    for _ in range(3):
        got, t0, t1 = timed_netpoll(backend, delay_ns)
        assert got == []
        assert t1 - t0 >= delay_ns / 1e9, f"netpoll({delay_ns}) returned after {t1 - t0:.6f} s"
        assert t1 - t0 < delay_ns / 1e9 + PROMPT


def test_short_delay_neither_spins_nor_returns_early(backend):
    delay = 100_000  # 100 µs
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i in range(200):
        got, t0, t1 = timed_netpoll(backend, delay)
        assert got == []
        assert t1 - t0 >= delay / 1e9, f"call {i} returned after {(t1 - t0) * 1e6:.1f} µs"
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    assert cpu < 0.5 * wall, f"{cpu:.3f} s of CPU over {wall:.3f} s: netpoll spins"


def test_huge_delay_does_not_overflow(backend):
    # Any delay, however large, still blocks (it is capped, not wrapped).
    for delay in (10**15, 2**62, 2**63 - 1):
        with Later(0.1, backend.netpollbreak) as brk:
            got, t0, t1 = timed_netpoll(backend, delay)
        assert got == []
        assert brk.at is not None and t1 >= brk.at, f"netpoll({delay}) returned before the break"


# -- blocking and netpollbreak -------------------------------------------------------

def test_blocking_netpoll_returns_on_an_event(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    with Later(0.1, lambda: b.send(b"x")) as send:
        got, t0, t1 = timed_netpoll(backend, -1)
    assert got == [r]
    assert send.at is not None and t1 >= send.at, "netpoll(-1) returned before the event"


def test_blocking_netpoll_returns_on_a_break_from_another_thread(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    assert pd.park("r", Waiter("r")) is False  # a waiter that nothing wakes
    with Later(0.1, backend.netpollbreak) as brk:
        got, t0, t1 = timed_netpoll(backend, -1)
    assert got == []
    assert brk.at is not None and t1 >= brk.at, "netpoll(-1) returned before the break"
    assert t1 - brk.at < PROMPT


def test_break_wakes_a_timed_netpoll(backend):
    with Later(0.05, backend.netpollbreak) as brk:
        got, t0, t1 = timed_netpoll(backend, 10 * 1_000 * MS)
    assert got == []
    assert brk.at is not None and brk.at <= t1 < brk.at + PROMPT


def test_many_breaks_coalesce(backend):
    nthreads, each = 4, 250
    go = threading.Barrier(nthreads)

    def storm():
        go.wait(5)
        for _ in range(each):
            backend.netpollbreak()

    threads = [threading.Thread(target=storm) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    got, t0, t1 = timed_netpoll(backend, -1)
    assert got == [] and t1 - t0 < PROMPT, "the 1000 breaks did not wake netpoll(-1)"
    got, t0, t1 = timed_netpoll(backend, 50 * MS)
    assert t1 - t0 >= 0.05, "a wakeup was left over after the one the breaks coalesced into"
    got, t0, t1 = timed_netpoll(backend, 50 * MS)
    assert t1 - t0 >= 0.05


def test_break_before_blocking_netpoll_is_not_lost(backend):
    backend.netpollbreak()
    got, t0, t1 = timed_netpoll(backend, -1)
    assert got == [] and t1 - t0 < PROMPT
    got, t0, t1 = timed_netpoll(backend, 50 * MS)
    assert t1 - t0 >= 0.05, "the break was consumed twice"


def test_nonblocking_netpoll_leaves_the_break_pending(backend):
    backend.netpollbreak()
    for _ in range(3):
        assert backend.netpoll(0) == []
    got, t0, t1 = timed_netpoll(backend, -1)
    assert got == [] and t1 - t0 < PROMPT, "netpoll(0) consumed the break"


def test_timed_netpoll_consumes_the_break(backend):
    backend.netpollbreak()
    got, t0, t1 = timed_netpoll(backend, 5_000 * MS)
    assert t1 - t0 < PROMPT
    got, t0, t1 = timed_netpoll(backend, 50 * MS)
    assert t1 - t0 >= 0.05, "a blocking netpoll that saw the break left it pending"
    backend.netpollbreak()  # and breaking works again afterwards
    got, t0, t1 = timed_netpoll(backend, -1)
    assert t1 - t0 < PROMPT


def test_break_and_event_together(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    b.send(b"x")
    backend.netpollbreak()
    got = wait_for(backend, r)
    assert got == [r], "a break must not hide, or duplicate, the event beside it"


# -- signals -----------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _kill_main(sig=signal.SIGUSR1):
    signal.pthread_kill(threading.main_thread().ident, sig)


@pytest.fixture
def usr1():
    calls = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        yield calls
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_signal_during_blocking_netpoll_is_not_an_error(backend, usr1):
    def kick_then_break():
        for _ in range(3):
            _kill_main()
            time.sleep(0.02)
        time.sleep(0.05)
        backend.netpollbreak()

    with Later(0.05, kick_then_break):
        got = None
        for _ in range(5):  # an empty result after a signal is allowed
            got, t0, t1 = timed_netpoll(backend, -1)
            if usr1 and got == []:
                break
    assert got == []
    assert usr1, "the no-op handler never ran"


def test_signal_during_timed_netpoll_returns_empty_or_waits(backend, usr1):
    with Later(0.05, _kill_main) as kick:
        got, t0, t1 = timed_netpoll(backend, 300 * MS)
    assert got == []
    assert kick.at is not None
    assert usr1 == [signal.SIGUSR1]
    assert t1 - t0 < 0.3 + PROMPT


def test_raising_signal_handler_propagates_out_of_netpoll(backend):
    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with Later(0.1, _kill_main) as kick:
            with pytest.raises(Interrupted):
                backend.netpoll(-1)
            assert kick.at is not None, "netpoll(-1) returned before the signal"
    finally:
        signal.signal(signal.SIGUSR1, old)
    # The backend still works afterwards.
    backend.netpollbreak()
    got, t0, t1 = timed_netpoll(backend, -1)
    assert got == [] and t1 - t0 < PROMPT


def test_raising_signal_handler_propagates_out_of_timed_netpoll(backend):
    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with Later(0.1, _kill_main):
            with pytest.raises(Interrupted):
                backend.netpoll(5_000 * MS)
    finally:
        signal.signal(signal.SIGUSR1, old)
