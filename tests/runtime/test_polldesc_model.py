"""Property test of the poll descriptor state machine, at the PollDesc level.

No scheduler: a backend instance, a Timers heap on a virtual clock, and
waiters that are plain objects. Hypothesis generates interleavings of
readiness (the peer writes; ``backend.netpoll(0)``), waits (``pd.park``),
deadlines (past, future, cleared; timers fired by ``run_due``), close
(``evict``) and reuse (``pollclose`` and ``pollopen`` of a new socket), and a
small model checks that

- every parked waiter is handed back exactly once, by exactly one of the
  calls that return waiters, with the right outcome: readiness leaves
  pdReady for the next park to consume, a timeout leaves ``check == 2``, a
  close ``check == 1``;
- no waiter of an old incarnation is ever handed back after its descriptor
  was reused;
- a park consumes a pending readiness, reports close and deadlines, and a
  second waiter in one direction is a double wait;
- deadlines and their timers follow Go's pollSetDeadline (one timer per
  armed direction, one shared when both deadlines are equal).

The waits follow the FD layer's protocol: a reader parks only after a read
that would block (the socket is drained first), and the writer's socket has a
full send buffer, so the peer's writes are the only source of readiness.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import netpoll
from netpoll._netpoll import Timers, lookup_token, pollclose, pollopen

from support import drain, fill

NIL, READY = 0, 1
STEP = 1_000  # virtual nanoseconds per clock step
VT0 = 10**15  # the virtual clock's origin: any positive absolute time works


class Waiter:
    __slots__ = ("n", "mode", "inc")

    def __init__(self, n, mode, inc):
        self.n, self.mode, self.inc = n, mode, inc

    def __repr__(self):
        return f"<waiter {self.n} {self.mode} of incarnation {self.inc}>"


class Incarnation:
    """One life of the descriptor: its sockets and the model's view of it."""

    def __init__(self, backend, timers, n):
        self.n = n
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.a.setblocking(False)
        self.b.setblocking(False)
        fill(self.a, settle=0)  # never writable: the writer only wakes by deadline or close
        self.pd = pollopen(backend, self.a.fileno(), timers)
        self.closing = False
        self.dl = {"r": 0, "w": 0}
        self.sema = {"r": NIL, "w": NIL}
        self.parked = {"r": None, "w": None}
        self.data = False          # unread data in a (written since the last drain)
        self.edge = False          # written since the last netpoll(0)
        self.must_wake = False     # the reader parked, then the peer wrote
        self.may_wake = False      # the reader parked with an undelivered write

    def close_sockets(self):
        self.a.close()
        self.b.close()


class Machine:
    def __init__(self, backend_name):
        self.backend = netpoll.backend_class(backend_name)()
        self.timers = Timers()
        self.now = VT0
        self.nwaiters = 0
        self.incs = 0
        self.woken = {}       # waiter -> how many times handed back
        self.parked_ever = []
        self.old = set()      # waiters of earlier incarnations
        self.cur = self._open()

    def _open(self):
        self.incs += 1
        return Incarnation(self.backend, self.timers, self.incs)

    # -- checking what a call handed back ----------------------------------

    def _take(self, got, expect, outcome):
        c = self.cur
        for g in got:
            assert g not in self.old, f"{g} handed back after its descriptor was reused"
            assert isinstance(g, Waiter), f"unknown waiter {g!r}"
            self.woken[g] = self.woken.get(g, 0) + 1
            assert self.woken[g] == 1, f"{g} handed back twice"
        assert sorted(got, key=id) == sorted(expect, key=id), (got, expect)
        for g in got:
            m = g.mode
            assert c.parked[m] is g
            c.parked[m] = None
            if outcome == "ready":
                c.sema[m] = READY
                assert c.pd.sema(m) == READY
            elif outcome == "timeout":
                assert c.pd.sema(m) in (NIL, READY)
                assert c.pd.check(m) == 2
            else:
                assert c.pd.check(m) == 1

    def _verify(self):
        c = self.cur
        for m in "rw":
            if c.parked[m] is not None:
                assert c.pd.sema(m) is c.parked[m]
            else:
                assert c.pd.sema(m) == c.sema[m], (m, c.pd.sema(m), c.sema[m])
            if c.closing:
                assert c.pd.check(m) == 1
            else:
                assert c.pd.check(m) == (2 if c.dl[m] < 0 else 0)
        assert c.pd.deadlines() == (c.dl["r"], c.dl["w"])
        if c.closing:
            assert len(self.timers) == 0
        else:
            armed = [d for d in c.dl.values() if d > 0]
            want = len(armed) - (1 if len(armed) == 2 and armed[0] == armed[1] else 0)
            assert len(self.timers) == want, (c.dl, len(self.timers))
        assert self.backend.waiters == sum(p is not None for p in c.parked.values())

    # -- operations --------------------------------------------------------

    def write(self):
        c = self.cur
        c.b.send(b"x")
        c.data = True
        c.edge = True
        if c.parked["r"] is not None:
            c.must_wake = True

    def poll(self):
        c = self.cur
        got = self.backend.netpoll(0)
        r = c.parked["r"]
        expect = []
        if r is not None:
            if c.must_wake:
                expect = [r]
            elif c.may_wake and r in got:
                expect = [r]  # a write edge from before the park: a spurious wakeup
        self._take(got, expect, "ready")
        if r is None and c.sema["r"] == NIL and c.pd.sema("r") == READY:
            # No waiter: the readiness is kept pending, if the backend reports
            # it at all (a level-triggered one only reports armed interest).
            assert c.data or c.edge, "readiness reported with nothing written"
            c.sema["r"] = READY
        c.edge = False
        c.must_wake = c.may_wake = False

    def wait(self, m):
        c = self.cur
        if m == "r" and not c.closing and c.dl["r"] >= 0 and c.parked["r"] is None:
            drain(c.a)  # the read that saw EAGAIN
            c.data = False
        w = Waiter(self.nwaiters, m, c.n)
        self.nwaiters += 1
        if c.closing:
            with pytest.raises(netpoll.ClosedError):
                c.pd.park(m, w)
            return
        if c.dl[m] < 0:
            with pytest.raises(netpoll.DeadlineExceededError):
                c.pd.park(m, w)
            return
        if c.parked[m] is not None:
            with pytest.raises(netpoll.NetpollError, match="double wait"):
                c.pd.park(m, w)
            return
        consumed = c.pd.park(m, w)
        if c.sema[m] == READY:
            assert consumed is True
            c.sema[m] = NIL
            return
        assert consumed is False
        c.parked[m] = w
        self.parked_ever.append(w)
        if m == "r":
            c.must_wake = False
            c.may_wake = c.edge

    def deadline(self, mode, kind):
        c = self.cur
        if kind == "past":
            d = -1
        elif kind == "clear":
            d = 0
        else:
            d = self.now + kind * STEP  # kind <= 0: a positive time already due
        got = c.pd.set_deadline(d, mode)
        if c.closing:
            assert got == []
            return
        expect = []
        for m in ("r", "w") if mode == "rw" else (mode,):
            c.dl[m] = d
            if d < 0 and c.parked[m] is not None:
                expect.append(c.parked[m])
        self._take(got, expect, "timeout")

    def advance(self, steps):
        c = self.cur
        self.now += steps * STEP
        got = self.timers.run_due(self.now)
        expect = []
        if not c.closing:
            for m in "rw":
                if 0 < c.dl[m] <= self.now:
                    c.dl[m] = -1
                    if c.parked[m] is not None:
                        expect.append(c.parked[m])
        self._take(got, expect, "timeout")

    def close(self):
        c = self.cur
        if c.closing:
            with pytest.raises(netpoll.NetpollError):
                c.pd.evict()
            return
        got = c.pd.evict()
        c.closing = True
        self._take(got, [p for p in c.parked.values() if p is not None], "closed")

    def reuse(self):
        c = self.cur
        if not c.closing:
            self.close()
        old_pd, old_seq, old_token = c.pd, c.pd.fdseq, c.pd.token
        assert lookup_token(old_token) is old_pd
        pollclose(c.pd)
        c.close_sockets()
        self.old.update(self.parked_ever)
        self.cur = self._open()
        # A kernel cookie of the old incarnation names nothing any more.
        assert lookup_token(old_token) is None
        assert lookup_token(self.cur.pd.token) is self.cur.pd
        if self.cur.pd is old_pd:
            assert self.cur.pd.fdseq != old_seq, "a reused PollDesc kept its fdseq"

    def finish(self):
        try:
            if not self.cur.closing:
                self.close()
                self._verify()
            pollclose(self.cur.pd)
        finally:
            self.cur.close_sockets()
            self.backend.close()
        missing = [w for w in self.parked_ever if self.woken.get(w) != 1]
        assert not missing, f"parked waiters never handed back: {missing}"

    def abandon(self):
        try:
            self.cur.close_sockets()
        finally:
            self.backend.close()


deadlines = st.one_of(st.sampled_from(["past", "clear"]), st.integers(-2, 8))

operations = st.lists(
    st.one_of(
        st.just(("write",)),
        st.just(("poll",)),
        st.tuples(st.just("wait"), st.sampled_from("rw")),
        st.tuples(st.just("wait"), st.just("r")),
        st.tuples(st.just("deadline"), st.sampled_from(["r", "w", "rw"]), deadlines),
        st.tuples(st.just("deadline"), st.sampled_from(["r", "w", "rw"]), st.integers(1, 4)),
        st.tuples(st.just("advance"), st.integers(0, 4)),
        st.just(("close",)),
        st.just(("reuse",)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations)
# Sequences worth trying every time: the combined read+write timer being
# split and joined, a deadline moved after its timer fired, a pending
# readiness next to a double wait, a reuse with a deadline still armed.
@example(ops=[("deadline", "rw", 2), ("deadline", "w", 4), ("advance", 2), ("advance", 2)])
@example(ops=[("deadline", "w", 1), ("deadline", "r", 1), ("advance", 1)])
@example(ops=[("deadline", "r", 1), ("deadline", "w", 1), ("deadline", "r", 3),
              ("advance", 1), ("advance", 2)])
@example(ops=[("wait", "r"), ("wait", "w"), ("deadline", "rw", 2), ("deadline", "r", 0),
              ("advance", 3), ("wait", "r"), ("write",), ("poll",), ("wait", "r")])
@example(ops=[("wait", "r"), ("write",), ("wait", "r"), ("poll",), ("wait", "r"), ("wait", "r")])
@example(ops=[("write",), ("poll",), ("deadline", "r", "past"), ("wait", "r"),
              ("deadline", "r", "clear"), ("wait", "r"), ("wait", "r")])
@example(ops=[("wait", "r"), ("deadline", "rw", 2), ("reuse",), ("wait", "r"), ("wait", "w"),
              ("advance", 3), ("write",), ("poll",), ("close",), ("close",), ("reuse",)])
def test_poll_descriptor_state_machine(backend_name, ops):
    m = Machine(backend_name)
    try:
        for op in ops:
            getattr(m, op[0])(*op[1:])
            m._verify()
    except BaseException:
        m.abandon()
        raise
    m.finish()
