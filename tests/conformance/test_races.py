"""Races of pollWait against close, deadlines and readiness, made deterministic.

pollWait checks for close and deadlines first, publishes pdWait, and checks
again (Go's netpollblock: close and deadlines store their state first and
read the semaphore second, so one side always sees the other). A level-
triggered backend's netpollarm runs between the two checks, as in Go; a
backend subclass whose netpollarm first runs `between` stands for whatever
another thread does in that window, under every backend (the edge-triggered
ones get a netpollarm that does only that).

The other half of the table: a readiness that arrives once its waiter has
left (timed out, or cancelled) is kept as pdReady for the next wait, on the
level-triggered backends too, whose interest the departed waiter left armed.
"""

from __future__ import annotations

import socket

import pytest

import netpoll
from support import MS, Kit
from support.conformance import PD_NIL, PD_READY, Waiter, collect, settle_edges
from netpoll import _fd, _sched
from netpoll._netpoll import Timers


def interposed(backend_name: str):
    """A backend of ``backend_name`` whose netpollarm first runs ``between(pd)``
    once, then does what the backend's own does (nothing, edge-triggered)."""
    base = netpoll.backend_class(backend_name)

    class Interposed(base):
        needs_arm = True

        def __init__(self):
            self.between = None
            self.ran = 0
            super().__init__()

        def netpollarm(self, pd, mode):
            f, self.between = self.between, None
            if f is not None:
                self.ran += 1
                f(pd)
            # A close in the window may have freed the registration already.
            if base.needs_arm and not pd.closing:
                super().netpollarm(pd, mode)

    return Interposed()


@pytest.fixture
def ibackend(backend_name):
    b = interposed(backend_name)
    kit = Kit(b)
    try:
        yield b, kit
    finally:
        kit.cleanup()
        b.close()


# -- C1: close or deadline between the first check and the re-check ------------

@pytest.mark.parametrize("what", ["close", "deadline"])
@pytest.mark.parametrize("mode", ["r", "w"])
def test_close_or_deadline_between_the_checks_fails_the_wait(ibackend, what, mode):
    b, kit = ibackend
    a, _ = kit.socketpair()
    pd = kit.open(a, Timers())
    settle_edges(b, [pd])
    if what == "close":
        b.between = lambda pd: pd.evict()
        exc = netpoll.ClosedError
    else:
        b.between = lambda pd: pd.set_deadline(-1, mode)
        exc = netpoll.DeadlineExceededError
    with pytest.raises(exc):
        pd.park(mode, Waiter(mode))
    assert b.ran == 1, "the window between the checks was not exercised"
    assert pd.sema(mode) == PD_NIL, "the waiter was left in the semaphore"
    assert b.waiters == 0, "the waiter was left counted as parked"


@pytest.mark.parametrize("what", ["close", "deadline"])
def test_a_goroutine_whose_conn_closes_between_the_checks_does_not_hang(backend_name, what):
    # The same window through the scheduler and the FD layer (a read that got
    # EAGAIN and waits): without the re-check the goroutine would sleep in a
    # closed or expired descriptor that nothing wakes again.
    b = interposed(backend_name)
    sched = _sched.Sched(b)

    async def main():
        a, peer = socket.socketpair()
        a.setblocking(False)
        try:
            f = _fd.FD(a)
            if what == "close":
                b.between = lambda pd: f.close()
                exc = netpoll.ClosedError
            else:
                b.between = lambda pd: f._set_deadline(netpoll.now() - 1)
                exc = netpoll.DeadlineExceededError
            try:
                with pytest.raises(exc):
                    await f.read(bytearray(10))
                assert b.ran == 1
            finally:
                if not f.closed:
                    f.close()
        finally:
            peer.close()

    sched.run(main())


# -- B5/C2: a readiness after its waiter left is kept ---------------------------

@pytest.mark.parametrize("leave", ["timeout", "cancel"])
def test_readiness_after_its_waiter_left_is_kept(backend, kit, leave):
    a, peer = kit.socketpair()
    pd = kit.open(a, Timers())
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    if leave == "timeout":
        assert pd.set_deadline(-1, "r") == [r]
        with pytest.raises(netpoll.DeadlineExceededError):
            pd.resume("r")  # the woken waiter runs and leaves with its error
        assert pd.set_deadline(0, "r") == []
    else:
        pd.wait("r").close()  # the parked goroutine is cancelled (run() ending)
    assert backend.waiters == 0 and pd.sema("r") == PD_NIL
    peer.send(b"x")
    got = collect(backend, lambda g: pd.sema("r") == PD_READY, timeout=2.0, step_ns=10 * MS)
    assert got == [], "nobody waits, so nobody is woken"
    assert pd.sema("r") == PD_READY, "a readiness that came after its waiter left was dropped"
    assert pd.park("r", Waiter("r2")) is True, "the next wait takes it without parking"
    assert a.recv(10) == b"x"
