"""Goroutines parked in a poll descriptor (pd.wait): readiness, deadlines,
close, lost-wakeup races, double waits and descriptor reuse, through the
scheduler and a real backend."""

from __future__ import annotations

import socket
import threading

import pytest

import netpoll
from netpoll import _sched
from netpoll._netpoll import (POLL_ERR_CLOSING, POLL_ERR_TIMEOUT, POLL_NO_ERROR, monotonic_ns,
                              pollclose)

from rtutil import MS, Pair, after, drain, parked_on


def run(main, backend_name):
    return netpoll.run(main(), backend=backend_name)


async def settle(n: int = 3) -> None:
    """Let every runnable goroutine get as far as it can (park)."""
    for _ in range(n):
        await netpoll.sleep(0)


async def expect_timeout(p: Pair, mode: str = "r"):
    """Block in ``mode`` until a DeadlineExceededError; return when (ns)."""
    with pytest.raises(netpoll.DeadlineExceededError) as info:
        if mode == "r":
            await p.read()
        else:
            await p.write(b"x" * 65536)
    return monotonic_ns(), info.value


# ---------------------------------------------------------------------------
# Readiness
# ---------------------------------------------------------------------------


def test_wait_read_wakes_on_data(backend_name):
    async def main():
        p = Pair()
        try:
            r = netpoll.go(p.read())
            await settle()
            assert parked_on(p.pd, "r", r)
            assert _sched.current().backend.waiters == 1
            p.b.send(b"hello")
            data = await r
            assert _sched.current().backend.waiters == 0
            return data
        finally:
            p.close()

    assert run(main, backend_name) == b"hello"


def test_wait_write_wakes_when_peer_drains(backend_name):
    async def main():
        p = Pair()
        try:
            n = p.fill()
            w = netpoll.go(p.write(b"tail"))
            await settle()
            assert parked_on(p.pd, "w", w)
            got = 0
            for _ in range(1000):
                got += drain(p.b)
                if w.done:
                    break
                await netpoll.sleep(0.001)
            await w
            got += drain(p.b)
            return n + 4, got
        finally:
            p.close()

    want, got = run(main, backend_name)
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

    assert run(main, backend_name) == "ok"


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
# Deadlines while blocked
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["minus-one", "absolute-past"])
def test_past_deadline_wakes_blocked_reader_at_once(backend_name, how):
    async def main():
        p = Pair()
        try:
            r = netpoll.go(expect_timeout(p))
            await settle()
            assert parked_on(p.pd, "r", r)
            t0 = monotonic_ns()
            p.set_deadline(-1 if how == "minus-one" else t0 - 5 * MS, "r")
            t1, err = await r
            return t1 - t0, err
        finally:
            p.close()

    took, err = run(main, backend_name)
    assert took < 200 * MS
    assert isinstance(err, TimeoutError)
    assert isinstance(err, netpoll.DeadlineExceededError)
    assert str(err) == "i/o timeout"


def test_deadline_fires_not_before_it_is_due(backend_name):
    async def main():
        p = Pair()
        try:
            d = after(50)
            p.set_deadline(d, "r")
            t1, _ = await expect_timeout(p)
            return t1 - d
        finally:
            p.close()

    late = run(main, backend_name)
    assert 0 <= late < 500 * MS


def test_deadline_set_before_the_wait_applies_to_it(backend_name):
    async def main():
        p = Pair()
        try:
            d = after(30)
            p.set_deadline(d, "r")
            await netpoll.sleep(0.01)
            t1, _ = await expect_timeout(p)
            return t1 - d
        finally:
            p.close()

    assert 0 <= run(main, backend_name) < 500 * MS


def test_extending_deadline_keeps_reader_blocked(backend_name):
    async def main():
        p = Pair()
        try:
            t0 = monotonic_ns()
            p.set_deadline(t0 + 50 * MS, "r")
            r = netpoll.go(expect_timeout(p))
            await netpoll.sleep(0.01)
            new = t0 + 200 * MS
            p.set_deadline(new, "r")
            await netpoll.sleep(0.1)  # past the first deadline
            assert not r.done, "woke at the old deadline"
            assert parked_on(p.pd, "r", r)
            t1, _ = await r
            return t1 - new
        finally:
            p.close()

    assert 0 <= run(main, backend_name) < 500 * MS


def test_deadline_moved_after_timer_fired_but_before_reader_ran(backend_name):
    # The read timer fires and readies the reader; before the reader runs,
    # another goroutine moves the deadline into the future. The reader must
    # notice that no error is left and wait on (Go's pollWait retry loop).
    async def mover(p, d, new):
        while monotonic_ns() < d + 2 * MS:  # bounded: d is 30 ms away
            pass
        await netpoll.sleep(0)  # the timers fire now; the reader queues behind us
        assert p.pd.deadlines()[0] == -1, "the read timer should have fired"
        p.set_deadline(new, "r")

    async def main():
        p = Pair()
        try:
            t0 = monotonic_ns()
            d = t0 + 30 * MS
            new = t0 + 150 * MS
            p.set_deadline(d, "r")
            r = netpoll.go(expect_timeout(p))
            await settle()
            m = netpoll.go(mover(p, d, new))
            await m
            await netpoll.sleep(0.05)
            assert not r.done, "the reader returned a timeout for a deadline that was moved"
            t1, _ = await r
            return t1 - new
        finally:
            p.close()

    assert 0 <= run(main, backend_name) < 500 * MS


def test_shortening_deadline_to_past_wakes_reader(backend_name):
    async def main():
        p = Pair()
        try:
            p.set_deadline(after(10_000), "r")
            r = netpoll.go(expect_timeout(p))
            await netpoll.sleep(0.02)
            assert parked_on(p.pd, "r", r)
            t0 = monotonic_ns()
            p.set_deadline(-1, "r")
            t1, _ = await r
            return t1 - t0, len(_sched.current().timers)
        finally:
            p.close()

    took, timers = run(main, backend_name)
    assert took < 200 * MS
    assert timers == 0, "the 10 s read timer should have been stopped"


def test_shortening_deadline_to_near_future(backend_name):
    async def main():
        p = Pair()
        try:
            p.set_deadline(after(10_000), "r")
            r = netpoll.go(expect_timeout(p))
            await netpoll.sleep(0.01)
            d = after(30)
            p.set_deadline(d, "r")
            t1, _ = await r
            return t1 - d
        finally:
            p.close()

    assert 0 <= run(main, backend_name) < 500 * MS


def test_clearing_deadline_makes_reads_block_again(backend_name):
    async def main():
        p = Pair()
        try:
            p.set_deadline(-1, "r")
            await expect_timeout(p)
            assert p.pd.check("r") == POLL_ERR_TIMEOUT
            p.set_deadline(0, "r")
            assert p.pd.check("r") == POLL_NO_ERROR
            assert p.pd.deadlines()[0] == 0
            r = netpoll.go(p.read())
            await netpoll.sleep(0.05)
            assert not r.done
            assert parked_on(p.pd, "r", r)
            p.b.send(b"after clear")
            return await r
        finally:
            p.close()

    assert run(main, backend_name) == b"after clear"


def test_clearing_armed_deadline_stops_its_timer(backend_name):
    async def main():
        p = Pair()
        try:
            s = _sched.current()
            p.set_deadline(after(30), "r")
            p.set_deadline(after(40), "w")
            assert len(s.timers) == 2
            p.set_deadline(0, "rw")
            assert len(s.timers) == 0
            r = netpoll.go(p.read())
            await netpoll.sleep(0.08)
            assert not r.done, "a cleared deadline fired"
            p.b.send(b"z")
            return await r
        finally:
            p.close()

    assert run(main, backend_name) == b"z"


def test_expired_deadline_fails_fast_even_with_data_ready(backend_name):
    async def main():
        p = Pair()
        try:
            p.b.send(b"ready")
            await netpoll.sleep(0.01)
            p.set_deadline(-1, "r")
            with pytest.raises(netpoll.DeadlineExceededError):
                p.pd.prepare("r")
            with pytest.raises(netpoll.DeadlineExceededError):
                await p.pd.wait("r")
            p.set_deadline(0, "r")
            p.pd.prepare("r")
            return await p.read()
        finally:
            p.close()

    assert run(main, backend_name) == b"ready"


def test_read_deadline_does_not_touch_writer(backend_name):
    async def main():
        p = Pair()
        try:
            n = p.fill()
            w = netpoll.go(p.write(b"w"))
            r = netpoll.go(expect_timeout(p, "r"))
            await settle()
            assert parked_on(p.pd, "w", w) and parked_on(p.pd, "r", r)
            p.set_deadline(-1, "r")
            await r
            await netpoll.sleep(0.03)
            assert not w.done and parked_on(p.pd, "w", w)
            assert p.pd.check("w") == POLL_NO_ERROR
            got = 0
            for _ in range(1000):
                got += drain(p.b)
                if w.done:
                    break
                await netpoll.sleep(0.001)
            await w
            return got + drain(p.b) == n + 1
        finally:
            p.close()

    assert run(main, backend_name)


def test_write_deadline_does_not_touch_reader(backend_name):
    async def main():
        p = Pair()
        try:
            p.fill()
            r = netpoll.go(p.read())
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            assert parked_on(p.pd, "w", w) and parked_on(p.pd, "r", r)
            p.set_deadline(after(20), "w")
            _, err = await w
            assert isinstance(err, netpoll.DeadlineExceededError)
            await netpoll.sleep(0.03)
            assert not r.done and parked_on(p.pd, "r", r)
            assert p.pd.check("r") == POLL_NO_ERROR
            with pytest.raises(netpoll.DeadlineExceededError):
                await p.pd.wait("w")
            p.b.send(b"still reading")
            return await r
        finally:
            p.close()

    assert run(main, backend_name) == b"still reading"


@pytest.mark.parametrize("how", ["rw", "r-then-w", "w-then-r"])
def test_equal_read_write_deadline_fires_both(backend_name, how):
    async def main():
        p = Pair()
        try:
            p.fill()
            r = netpoll.go(expect_timeout(p, "r"))
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            assert parked_on(p.pd, "r", r) and parked_on(p.pd, "w", w)
            d = after(40)
            if how == "rw":
                p.set_deadline(d, "rw")
            else:
                for m in how.split("-then-"):
                    p.set_deadline(d, m)
            tr, _ = await r
            tw, _ = await w
            return tr - d, tw - d, p.pd.deadlines()
        finally:
            p.close()

    lr, lw, dl = run(main, backend_name)
    assert 0 <= lr < 500 * MS
    assert 0 <= lw < 500 * MS
    assert dl == (-1, -1)


def test_equal_deadlines_then_write_moved_later(backend_name):
    async def main():
        p = Pair()
        try:
            p.fill()
            r = netpoll.go(expect_timeout(p, "r"))
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            d = after(30)
            p.set_deadline(d, "rw")
            dw = after(120)
            p.set_deadline(dw, "w")
            tr, _ = await r
            assert not w.done, "the write deadline was moved, the writer must wait on"
            tw, _ = await w
            return tr - d, tw - dw
        finally:
            p.close()

    lr, lw = run(main, backend_name)
    assert 0 <= lr < 500 * MS
    assert 0 <= lw < 500 * MS


def test_read_and_write_deadlines_fire_at_their_own_times(backend_name):
    async def main():
        p = Pair()
        try:
            p.fill()
            r = netpoll.go(expect_timeout(p, "r"))
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            dr, dw = after(80), after(20)
            p.set_deadline(dr, "r")
            p.set_deadline(dw, "w")
            tw, _ = await w
            assert not r.done
            tr, _ = await r
            return tr - dr, tw - dw
        finally:
            p.close()

    lr, lw = run(main, backend_name)
    assert 0 <= lr < 500 * MS
    assert 0 <= lw < 500 * MS


def test_deadline_on_closed_descriptor_is_ignored(backend_name):
    async def main():
        p = Pair()
        try:
            p.evict()
            assert p.pd.set_deadline(after(10), "r") == []
            assert p.pd.set_deadline(-1, "rw") == []
            assert len(_sched.current().timers) == 0
            assert p.pd.check("r") == POLL_ERR_CLOSING
        finally:
            p.close()
        return "ok"

    assert run(main, backend_name) == "ok"


# ---------------------------------------------------------------------------
# Close (evict)
# ---------------------------------------------------------------------------


def test_close_wakes_blocked_reader_and_writer(backend_name):
    async def blocked(coro):
        with pytest.raises(netpoll.ClosedError) as info:
            await coro
        return info.value

    async def main():
        p = Pair()
        try:
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
        finally:
            p.close()

    er, ew = run(main, backend_name)
    for e in (er, ew):
        assert isinstance(e, netpoll.ClosedError)
        assert isinstance(e, OSError)
        assert str(e) == "use of closed network connection"


def test_close_takes_precedence_over_expired_deadline(backend_name):
    async def main():
        p = Pair()
        try:
            p.set_deadline(-1, "rw")
            p.evict()
            with pytest.raises(netpoll.ClosedError):
                await p.pd.wait("r")
            with pytest.raises(netpoll.ClosedError):
                await p.pd.wait("w")
        finally:
            p.close()
        return "ok"

    assert run(main, backend_name) == "ok"


def test_pollclose_requires_evict_first(backend_name):
    async def main():
        p = Pair()
        try:
            with pytest.raises(netpoll.NetpollError):
                pollclose(p.pd)
        finally:
            p.close()
        return "ok"

    assert run(main, backend_name) == "ok"


# ---------------------------------------------------------------------------
# Descriptor reuse: stale timers and events do nothing to the new owner
# ---------------------------------------------------------------------------


def test_old_deadline_does_nothing_after_close_and_fd_reuse(backend_name):
    async def main():
        s = _sched.current()
        p1 = Pair()
        fd, pd1, seq1 = p1.a.fileno(), p1.pd, p1.pd.fdseq
        p1.set_deadline(after(30), "rw")
        p1.close()
        p2 = Pair()
        try:
            if p2.a.fileno() != fd:
                pytest.skip("the kernel did not hand out the same fd number")
            assert p2.pd.check("r") == POLL_NO_ERROR and p2.pd.deadlines() == (0, 0)
            if p2.pd is pd1:
                assert p2.pd.fdseq != seq1
            r = netpoll.go(p2.read())
            await netpoll.sleep(0.1)  # well past the old deadline
            assert not r.done, "a timer of the old descriptor woke the new one's reader"
            assert parked_on(p2.pd, "r", r)
            assert len(s.timers) == 0
            p2.b.send(b"new")
            return await r
        finally:
            p2.close()

    assert run(main, backend_name) == b"new"


def test_old_readiness_does_nothing_after_close_and_fd_reuse(backend_name):
    async def main():
        p1 = Pair()
        fd = p1.a.fileno()
        p1.b.send(b"old data")  # an event for the old incarnation, maybe undelivered
        p1.close()
        p2 = Pair()
        try:
            if p2.a.fileno() != fd:
                pytest.skip("the kernel did not hand out the same fd number")
            r = netpoll.go(p2.read())
            await netpoll.sleep(0.05)
            assert not r.done, "an event of the old descriptor woke the new one's reader"
            p2.b.send(b"new data")
            return await r
        finally:
            p2.close()

    assert run(main, backend_name) == b"new data"


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

    assert run(main, backend_name) == ["done"]


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

    assert run(main, backend_name) == N


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
        p = Pair()
        try:
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
        finally:
            p.close()
        return "ok"

    assert run(main, backend_name) == "ok"


def test_no_lost_wakeup_when_data_arrives_between_eagain_and_park(backend_name):
    N = 300

    async def main():
        p = Pair()
        try:
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
        finally:
            p.close()
        return "ok"

    assert run(main, backend_name) == "ok"


# ---------------------------------------------------------------------------
# Double wait
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["r", "w"])
def test_double_wait_is_an_error(backend_name, mode):
    async def second(p):
        await p.pd.wait(mode)

    async def main():
        p = Pair()
        try:
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
        finally:
            p.close()

    assert run(main, backend_name) == "netpoll: double wait"
