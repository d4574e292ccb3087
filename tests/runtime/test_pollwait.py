"""Goroutines parked in a poll descriptor (pd.wait): readiness, close,
lost-wakeup races, double waits and descriptor reuse, through the scheduler
and a real backend.

Deadlines: their semantics in tests/runtime/test_wait_deadlines.py, the
backend's part in tests/conformance/test_deadlines.py, the conn API in
tests/net/test_deadline.py."""

from __future__ import annotations

import socket
import threading

import pytest

import netpoll
from netpoll import _sched
from netpoll._netpoll import pollclose

from support import after, drain, run
from support.runtime import Pair, parked_on, settle


# ---------------------------------------------------------------------------
# Readiness
# ---------------------------------------------------------------------------


def test_wait_read_wakes_on_data(backend_name):
    async def main():
        with Pair() as p:
            r = netpoll.go(p.read())
            await settle()
            assert parked_on(p.pd, "r", r)
            assert _sched.current().backend.waiters == 1
            p.b.send(b"hello")
            data = await r
            assert _sched.current().backend.waiters == 0
            return data

    assert run(backend_name, main) == b"hello"


def test_wait_write_wakes_when_peer_drains(backend_name):
    async def main():
        with Pair() as p:
            n = p.fill()
            w = netpoll.go(p.write(b"tail"))
            await settle()
            assert parked_on(p.pd, "w", w)
            got = 0
            for _ in range(1000):
                got += len(drain(p.b))
                if w.done:
                    break
                await netpoll.sleep(0.001)
            await w
            got += len(drain(p.b))
            return n + 4, got

    want, got = run(backend_name, main)
    assert got == want


def test_ping_pong_between_goroutines(backend_name):
    async def side(p, first, n):
        for i in range(n):
            if first:
                await p.write(b"p")
                assert await p.read() == b"q"
            else:
                assert await p.read() == b"p"
                await p.write(b"q")

    async def main():
        s = _sched.current()
        x, y = socket.socketpair()
        try:
            x.setblocking(False)
            y.setblocking(False)
            px, py = _Wrap(s, x), _Wrap(s, y)
            a = netpoll.go(side(px, True, 500))
            b = netpoll.go(side(py, False, 500))
            await a
            await b
            px.close()
            py.close()
        finally:
            x.close()
            y.close()
        return "ok"

    assert run(backend_name, main) == "ok"


class _Wrap(Pair):
    """A Pair over an existing socket (no peer of its own)."""

    def __init__(self, sched, sock):
        self.sched = sched
        self.a = sock
        self.b = None
        self.pd = sched.pollopen(sock.fileno())
        self.closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            self.evict()
            pollclose(self.pd)


# ---------------------------------------------------------------------------
# Close (evict)
# ---------------------------------------------------------------------------


def test_close_wakes_blocked_reader_and_writer(backend_name):
    async def blocked(coro):
        with pytest.raises(netpoll.ClosedError) as info:
            await coro
        return info.value

    async def main():
        with Pair() as p:
            p.fill()
            p.set_deadline(after(10_000), "rw")
            r = netpoll.go(blocked(p.read()))
            w = netpoll.go(blocked(p.write(b"x")))
            await settle()
            assert parked_on(p.pd, "r", r) and parked_on(p.pd, "w", w)
            woken = p.pd.evict()
            assert sorted(g.goid for g in woken) == sorted([r.goid, w.goid])
            _sched.current().wake(woken)
            er, ew = await r, await w
            s = _sched.current()
            assert s.backend.waiters == 0
            assert len(s.timers) == 0, "close must stop the deadline timers"
            # Every later wait and prepare fails with ClosedError too.
            for m in "rw":
                with pytest.raises(netpoll.ClosedError):
                    await p.pd.wait(m)
                with pytest.raises(netpoll.ClosedError):
                    p.pd.prepare(m)
                assert p.pd.check(m) == 1
            # Closing twice is a broken invariant (the FD layer closes once).
            with pytest.raises(netpoll.NetpollError):
                p.pd.evict()
            return er, ew

    er, ew = run(backend_name, main)
    for e in (er, ew):
        assert isinstance(e, netpoll.ClosedError)
        assert isinstance(e, OSError)
        assert str(e) == "use of closed network connection"


def test_pollclose_requires_evict_first(backend_name):
    async def main():
        with Pair() as p:
            with pytest.raises(netpoll.NetpollError):
                pollclose(p.pd)
        return "ok"

    assert run(backend_name, main) == "ok"


# ---------------------------------------------------------------------------
# Descriptor reuse: stale timers and events do nothing to the new owner
# ---------------------------------------------------------------------------


def test_old_readiness_does_nothing_after_close_and_fd_reuse(backend_name):
    async def main():
        p1 = Pair()
        fd = p1.a.fileno()
        p1.b.send(b"old data")  # an event for the old incarnation, maybe undelivered
        p1.close()
        with Pair() as p2:
            if p2.a.fileno() != fd:
                pytest.skip("the kernel did not hand out the same fd number")
            r = netpoll.go(p2.read())
            await netpoll.sleep(0.05)
            assert not r.done, "an event of the old descriptor woke the new one's reader"
            p2.b.send(b"new data")
            return await r

    assert run(backend_name, main) == b"new data"


# ---------------------------------------------------------------------------
# No lost wakeups
# ---------------------------------------------------------------------------


def test_no_lost_wakeup_with_thread_ping_pong(backend_name):
    # Another thread writes a byte and waits for the reply, in a tight loop:
    # its writes race with the reader's EAGAIN -> park window. A lost wakeup
    # would hang; the read deadline turns that into a failure.
    N = 2000

    def peer(sock, out):
        try:
            sock.settimeout(5)
            for i in range(N):
                sock.sendall(b"p")
                if sock.recv(1) != b"q":
                    out.append("bad reply")
                    return
            out.append("done")
        except OSError as e:
            out.append(repr(e))

    async def main():
        p = Pair()
        out = []
        t = threading.Thread(target=peer, args=(p.b, out))
        try:
            p.set_deadline(after(10_000), "rw")
            t.start()
            for _ in range(N):
                assert await p.read(1) == b"p"
                await p.write(b"q")
        finally:
            t.join(10)
            p.close()
        return out

    assert run(backend_name, main) == ["done"]


def test_no_lost_wakeup_with_thread_stream(backend_name):
    N = 20_000

    def peer(sock):
        sock.setblocking(True)
        for i in range(0, N, 7):
            sock.sendall(b"x" * min(7, N - i))

    async def main():
        p = Pair()
        t = threading.Thread(target=peer, args=(p.b,))
        got = 0
        try:
            p.set_deadline(after(10_000), "r")
            t.start()
            while got < N:
                data = await p.read()
                assert data
                got += len(data)
        finally:
            t.join(10)
            p.close()
        return got

    assert run(backend_name, main) == N


@pytest.mark.parametrize("yields", [0, 1, 2])
def test_no_lost_wakeup_when_writer_is_scheduled_before_the_park(backend_name, yields):
    # The reader sees EAGAIN, starts the writer goroutine (which will run
    # before the scheduler next polls) and only then parks.
    N = 300

    async def writer(b):
        for _ in range(yields):
            await netpoll.sleep(0)
        b.send(b"w")

    async def main():
        with Pair() as p:
            p.set_deadline(after(10_000), "r")
            for _ in range(N):
                started = False
                while True:
                    try:
                        data = p.a.recv(10)
                        break
                    except BlockingIOError:
                        if not started:
                            netpoll.go(writer(p.b))
                            started = True
                        await p.pd.wait("r")
                assert data == b"w"
        return "ok"

    assert run(backend_name, main) == "ok"


def test_no_lost_wakeup_when_data_arrives_between_eagain_and_park(backend_name):
    N = 300

    async def main():
        with Pair() as p:
            p.set_deadline(after(10_000), "r")
            for i in range(N):
                got = None
                while got is None:
                    try:
                        got = p.a.recv(10)
                    except BlockingIOError:
                        p.b.send(b"%d" % (i % 10))  # after the EAGAIN, before the park
                        await p.pd.wait("r")
                assert got == b"%d" % (i % 10)
        return "ok"

    assert run(backend_name, main) == "ok"


# ---------------------------------------------------------------------------
# Double wait
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["r", "w"])
def test_double_wait_is_an_error(backend_name, mode):
    async def second(p):
        await p.pd.wait(mode)

    async def main():
        with Pair() as p:
            if mode == "w":
                p.fill()
            first = netpoll.go(p.read() if mode == "r" else p.write(b"x"))
            await settle()
            assert parked_on(p.pd, mode, first)
            h = netpoll.go(second(p))
            with pytest.raises(netpoll.NetpollError) as info:
                await h
            assert str(info.value) == "netpoll: double wait"
            # The first waiter is still parked and still works.
            assert parked_on(p.pd, mode, first)
            if mode == "r":
                p.b.send(b"first")
            else:
                for _ in range(1000):
                    drain(p.b)
                    if first.done:
                        break
                    await netpoll.sleep(0.001)
            await first
            return str(info.value)

    assert run(backend_name, main) == "netpoll: double wait"
