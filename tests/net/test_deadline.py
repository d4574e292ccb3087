"""Deadlines on read, write, accept, read_from and dial: Go's TestReadTimeout,
TestWriteTimeout, TestWriteTimeoutMustNotReturn, TestAcceptTimeout,
TestAcceptTimeoutMustReturn, TestReadFromTimeout, TestUDPReadTimeout,
TestDialTimeout, TestDialTimeoutMaxDuration.

Timing checks are lower bounds (never before the deadline) with loose upper
bounds (SLACK).

Also: tests/runtime/test_wait_deadlines.py holds the deadline semantics that do
not depend on the backend (moving, clearing, per-direction, expiry against
ready data, close, descriptor reuse) at the poll descriptor;
tests/conformance/test_deadlines.py what each backend's events do to a
timed-out or evicted descriptor."""

from __future__ import annotations

import errno
import socket
import time

import pytest

import netpoll
from netpoll import net
from netpoll.socktest import Switch

from support import SHORT, SLACK, read_full, run
from support.net import conn_pair, fill_conn, small_buffers, stream_pair


def assert_timeout(e: BaseException, op: str) -> None:
    assert isinstance(e, netpoll.DeadlineExceededError), repr(e)
    assert isinstance(e, TimeoutError)
    assert isinstance(e, net.OpError), repr(e)
    assert e.op == op
    assert e.timeout()
    assert "i/o timeout" in str(e)


async def expect_timeout(coro, op: str, deadline: float | None = None) -> float:
    """Await ``coro``, which must fail with a deadline error no sooner than
    ``deadline`` (default: at once); returns the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        await coro
    t1 = time.monotonic()
    assert_timeout(ei.value, op)
    if deadline is not None:
        assert t1 >= deadline, f"timed out {deadline - t1:.6f} s early"
        assert t1 - deadline < SLACK
    else:
        assert t1 - t0 < SHORT, f"a past deadline took {t1 - t0:.3f} s"
    return t1 - t0


# -- read --------------------------------------------------------------------

def test_read_past_deadline_fails_at_once_with_data_queued(backend_name):
    # Go's TestReadTimeout, first half.
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"queued")
            await netpoll.sleep(0.01)
            c.set_read_deadline(netpoll.now() - 1)
            for _ in range(3):
                await expect_timeout(c.read(bytearray(10)), "read")
            # A deadline exactly "now" is in the past too.
            c.set_read_deadline(netpoll.now())
            await expect_timeout(c.read(bytearray(10)), "read")
            # A later deadline lets the queued data through, then times out.
            d = netpoll.now() + SHORT
            c.set_read_deadline(d)
            assert await read_full(c, 6) == b"queued"
            await expect_timeout(c.read(bytearray(10)), "read", d)

    run(backend_name, main)


def test_read_short_deadline_fires_not_before_it(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            for delay in (0.001, 0.02, SHORT):
                d = netpoll.now() + delay
                c.set_read_deadline(d)
                await expect_timeout(c.read(bytearray(10)), "read", d)

    run(backend_name, main)


def test_set_deadline_covers_read_and_write(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_deadline(netpoll.now() - 1)
            await expect_timeout(c.read(bytearray(1)), "read")
            await expect_timeout(c.write(b"x"), "write")

    run(backend_name, main)


def test_read_deadline_extended_while_blocked(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            t0 = netpoll.now()
            c.set_read_deadline(t0 + 0.05)
            g = netpoll.go(expect_timeout(c.read(bytearray(10)), "read", t0 + 0.25))
            await netpoll.sleep(0.02)
            c.set_read_deadline(t0 + 0.25)
            await g

    run(backend_name, main)


def test_read_deadline_moved_to_past_wakes_blocked_read(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_read_deadline(netpoll.now() + 10)
            g = netpoll.go(c.read(bytearray(10)))
            await netpoll.sleep(0.02)
            t = netpoll.now()
            c.set_read_deadline(t - 1)
            await expect_timeout(g, "read")
            assert netpoll.now() - t < SHORT

    run(backend_name, main)


def test_read_deadline_cleared_after_expiry_blocks_again(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_read_deadline(netpoll.now() - 1)
            await expect_timeout(c.read(bytearray(10)), "read")
            c.set_read_deadline(None)
            g = netpoll.go(read_full(c, 3))
            await netpoll.sleep(SHORT)
            assert not g.done, "a read with a cleared deadline returned"
            await s.write(b"abc")
            assert await g == b"abc"
            # A cleared deadline stays cleared: a read blocks past the old one.
            g = netpoll.go(read_full(c, 1))
            await netpoll.sleep(SHORT)
            assert not g.done
            await s.write(b"z")
            assert await g == b"z"

    run(backend_name, main)


def test_inf_deadline_never_expires(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_deadline(float("inf"))
            g = netpoll.go(read_full(c, 2))
            await netpoll.sleep(SHORT)
            assert not g.done
            await s.write(b"ok")
            assert await g == b"ok"
            assert await c.write(b"w") == 1
            # -inf is in the past.
            c.set_read_deadline(float("-inf"))
            await expect_timeout(c.read(bytearray(1)), "read")

    run(backend_name, main)


def test_huge_deadline_does_not_overflow(backend_name):
    # Go's TestDialTimeoutMaxDuration, for I/O deadlines.
    async def main():
        async with conn_pair() as (ln, c, s):
            for t in (1e12, 1e300, netpoll.now() + 1e10):
                c.set_read_deadline(t)
                g = netpoll.go(read_full(c, 1))
                await netpoll.sleep(0.01)
                await s.write(b"x")
                assert await g == b"x"

    run(backend_name, main)


def test_nan_deadline_is_value_error(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            for call in (c.set_deadline, c.set_read_deadline, c.set_write_deadline,
                         ln.set_deadline, pc.set_deadline):
                with pytest.raises(ValueError, match="NaN"):
                    call(float("nan"))
            with pytest.raises(TypeError, match="deadline"):
                c.set_deadline("soon")
            # The conn is unaffected.
            await s.write(b"k")
            assert await read_full(c, 1) == b"k"
        finally:
            c.close()
            s.close()
            ln.close()
            pc.close()

    run(backend_name, main)


def test_read_and_write_deadlines_are_independent(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_read_deadline(netpoll.now() - 1)
            assert await c.write(b"w") == 1
            c.set_read_deadline(None)
            c.set_write_deadline(netpoll.now() - 1)
            await s.write(b"r")
            assert await read_full(c, 1) == b"r"
            await expect_timeout(c.write(b"x"), "write")

    run(backend_name, main)


# -- write ---------------------------------------------------------------------

def test_write_past_deadline_fails_at_once_with_buffer_space(backend_name):
    # Go's TestWriteTimeout, first half: nothing is written.
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_write_deadline(netpoll.now() - 1)
            for _ in range(3):
                await expect_timeout(c.write(b"lost"), "write")
                await expect_timeout(c.writev([b"lost"]), "writev")
            c.set_write_deadline(None)
            await c.write(b"kept")
            assert await read_full(s, 4) == b"kept"

    run(backend_name, main)


def test_write_deadline_with_full_buffer(backend_name):
    # Go's TestWriteTimeout, second half, and TestWriteTimeoutFluctuation.
    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            d = netpoll.now() + SHORT
            c.set_write_deadline(d)
            await expect_timeout(c.write(bytes(1 << 20)), "write", d)
            # The deadline stays expired for later writes.
            await expect_timeout(c.write(b"x"), "write")

    run(backend_name, main)


def test_write_deadline_extended_while_blocked(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            t0 = netpoll.now()
            c.set_write_deadline(t0 + 0.05)
            g = netpoll.go(expect_timeout(c.write(bytes(1 << 20)), "write", t0 + 0.25))
            await netpoll.sleep(0.02)
            c.set_write_deadline(t0 + 0.25)
            await g

    run(backend_name, main)


def test_blocked_write_with_expired_read_deadline_is_woken_by_close(backend_name):
    # Go's TestWriteTimeoutMustNotReturn.
    async def writer(c):
        for _ in range(10_000):
            await c.write(bytes(1 << 16))
        raise AssertionError("the send buffer never filled")

    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            c.set_read_deadline(netpoll.now() - 1)
            c.set_write_deadline(None)
            g = netpoll.go(writer(c))
            await netpoll.sleep(SHORT)
            c.close()
            with pytest.raises(netpoll.ClosedError) as ei:
                await g
            assert not isinstance(ei.value, TimeoutError)
            assert not ei.value.timeout() and not ei.value.temporary()

    run(backend_name, main)


# -- accept ----------------------------------------------------------------------

def test_accept_past_deadline_fails_with_pending_connection(backend_name):
    # Go's TestAcceptTimeout.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = None
        try:
            c = await net.dial("tcp", ln.addr)
            await netpoll.sleep(0.01)
            ln.set_deadline(netpoll.now() - 1)
            for _ in range(2):
                await expect_timeout(ln.accept(), "accept")
            d = netpoll.now() + 0.05
            ln.set_deadline(d)
            s = await ln.accept()  # the pending one
            s.close()
            await expect_timeout(ln.accept(), "accept", d)
        finally:
            if c is not None:
                c.close()
            ln.close()

    run(backend_name, main)


def test_accept_timeout_must_return(backend_name):
    # Go's TestAcceptTimeoutMustReturn.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            ln.set_deadline(None)
            d = netpoll.now() + 0.05
            ln.set_deadline(d)
            await expect_timeout(ln.accept(), "accept", d)
        finally:
            ln.close()

    run(backend_name, main)


def test_accept_deadline_extended_and_cleared(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = None
        try:
            t0 = netpoll.now()
            ln.set_deadline(t0 + 0.05)
            g = netpoll.go(ln.accept())
            await netpoll.sleep(0.02)
            ln.set_deadline(None)
            await netpoll.sleep(0.1)  # past the first deadline: still waiting
            assert not g.done
            c = await net.dial("tcp", ln.addr)
            s = await g
            s.close()
        finally:
            if c is not None:
                c.close()
            ln.close()

    run(backend_name, main)


def test_accept_error_loop_every_error_is_timeout(backend_name):
    # Go's TestAcceptError, scaled down: repeated short deadlines, each
    # failure is a timeout, connections arriving between them are accepted.
    async def dialer(addr, n):
        conns = []
        for _ in range(n):
            await netpoll.sleep(0.015)
            conns.append(await net.dial("tcp", addr))
        return conns

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        conns = []
        try:
            g = netpoll.go(dialer(ln.addr, 4))
            accepted, timeouts = 0, 0
            for _ in range(200):
                ln.set_deadline(netpoll.now() + 0.005)
                try:
                    s = await ln.accept()
                except net.OpError as e:
                    assert e.timeout() and e.temporary(), repr(e)
                    timeouts += 1
                    continue
                s.close()
                accepted += 1
                if accepted == 4:
                    break
            conns = await g
            assert accepted == 4 and timeouts > 0
        finally:
            for c in conns:
                c.close()
            ln.close()

    run(backend_name, main)


# -- UDP -------------------------------------------------------------------------

def test_read_from_deadlines(backend_name):
    # Go's TestReadFromTimeout and TestUDPReadTimeout.
    async def main():
        a = net.listen_packet("udp", "127.0.0.1:0")
        b = net.listen_packet("udp", "127.0.0.1:0")
        try:
            await b.write_to(b"dgram", a.local_addr)
            await netpoll.sleep(0.01)
            a.set_read_deadline(netpoll.now() - 1)
            await expect_timeout(a.read_from(bytearray(10)), "read")
            d = netpoll.now() + SHORT
            a.set_read_deadline(d)
            buf = bytearray(10)
            n, addr = await a.read_from(buf)
            assert (bytes(buf[:n]), addr) == (b"dgram", b.local_addr)
            await expect_timeout(a.read_from(buf), "read", d)
            a.set_deadline(None)
            g = netpoll.go(a.read_from(buf))
            await netpoll.sleep(0.02)
            await b.write_to(b"again", a.local_addr)
            assert await g == (5, b.local_addr)
        finally:
            a.close()
            b.close()

    run(backend_name, main)


def test_write_to_past_deadline(backend_name):
    # Go's TestWriteToTimeout.
    async def main():
        a = net.listen_packet("udp", "127.0.0.1:0")
        b = net.listen_packet("udp", "127.0.0.1:0")
        try:
            a.set_write_deadline(netpoll.now() - 1)
            await expect_timeout(a.write_to(b"x", b.local_addr), "write")
            a.set_write_deadline(None)
            assert await a.write_to(b"y", b.local_addr) == 1
            buf = bytearray(4)
            b.set_read_deadline(netpoll.now() + SLACK)
            assert await b.read_from(buf) == (1, a.local_addr)
            assert buf[:1] == b"y"
        finally:
            a.close()
            b.close()

    run(backend_name, main)


# -- dial ----------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [-5.0, -1e18, float("-inf")])
def test_dial_timeout_negative_fails_at_once(backend_name, timeout):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            with Switch() as sw:
                await expect_timeout(net.dial("tcp", ln.addr, timeout=timeout), "dial")
            assert sw.total("opened") == 0  # no socket was even created
        finally:
            ln.close()

    run(backend_name, main)


def test_dial_timeout_nan_is_value_error(backend_name):
    async def main():
        with pytest.raises(ValueError, match="NaN"):
            await net.dial("tcp", "127.0.0.1:1", timeout=float("nan"))

    run(backend_name, main)


@pytest.mark.parametrize("timeout", [1e12, float("inf"), 2.0])
def test_dial_large_timeout_connects(backend_name, timeout):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            c = await net.dial("tcp", ln.addr, timeout=timeout)
            s = await ln.accept()
            # The connect deadline does not stay on the conn.
            g = netpoll.go(read_full(c, 1))
            await netpoll.sleep(0.02)
            await s.write(b"x")
            assert await g == b"x"
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_dial_timeout_against_full_backlog(backend_name):
    # Go's TestDialTimeout: a listener that never accepts, its queue full.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0", backlog=0)
        fillers: list[socket.socket] = []
        try:
            # Fill the accept queue (and the SYN queue behind it) with plain
            # non-blocking connects; none is ever accepted.
            for _ in range(16):
                s = socket.socket()
                s.setblocking(False)
                fillers.append(s)
                s.connect_ex(ln.addr.sockaddr())
            await netpoll.sleep(0.05)
            t0 = netpoll.now()
            timeout = 0.2
            try:
                c = await net.dial("tcp", ln.addr, timeout=timeout)
            except TimeoutError as e:
                assert_timeout(e, "dial")
                assert e.addr == ln.addr
                t1 = netpoll.now()
                assert t1 >= t0 + timeout
                assert t1 - t0 < timeout + SLACK
                return
            c.close()
            pytest.skip("the kernel completed a connect to a listener with a full backlog")
        finally:
            for s in fillers:
                s.close()
            ln.close()

    with Switch() as sw:
        run(backend_name, main)
    assert not sw.sockets()


def test_dial_timeout_covers_only_connect(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            c = await net.dial("tcp", ln.addr, timeout=0.05)
            s = await ln.accept()
            await netpoll.sleep(0.1)  # past the connect timeout
            await s.write(b"late")
            assert await read_full(c, 4) == b"late"
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_dial_refused_with_timeout_is_refused_not_timeout(backend_name):
    from support.net import refused_port

    async def main():
        s, port = refused_port()
        try:
            with pytest.raises(ConnectionRefusedError) as ei:
                await net.dial("tcp", f"127.0.0.1:{port}", timeout=2)
            assert not isinstance(ei.value, TimeoutError)
            assert ei.value.errno == errno.ECONNREFUSED
        finally:
            s.close()

    run(backend_name, main)


# -- timers, reuse and races ----------------------------------------------------------

def test_deadline_timer_after_close_and_fd_reuse_is_harmless(backend_name):
    # A timer armed for a closed conn must not touch the conn that reuses
    # its descriptor number (the poll descriptor's sequence check).
    async def main():
        ln, c, s = await stream_pair()
        try:
            c.set_deadline(netpoll.now() + 0.05)
            c.close()
            s.close()
            # The next sockets take the lowest free numbers, normally fd's.
            ln2, c2, s2 = await stream_pair()
            try:
                g = netpoll.go(read_full(c2, 1))
                h = netpoll.go(read_full(s2, 1))
                acc = netpoll.go(ln2.accept())
                await netpoll.sleep(0.15)  # well past the old deadline
                assert not g.done and not h.done and not acc.done
                await s2.write(b"a")
                await c2.write(b"b")
                assert await g == b"a" and await h == b"b"
                ln2.close()
                with pytest.raises(netpoll.ClosedError):
                    await acc
            finally:
                c2.close()
                s2.close()
                ln2.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_various_deadlines_always_end_in_timeout(backend_name):
    # Go's TestVariousDeadlines, scaled: a reader copying from a conn fed by
    # a never-ending writer always ends with a timeout, whatever the deadline.
    async def feeder(conn, stop):
        chunk = bytes(4096)
        while not stop:
            try:
                await conn.write(chunk)
            except OSError:
                return

    async def main():
        ln, c, s = await stream_pair()
        stop: list[bool] = []
        g = netpoll.go(feeder(s, stop))
        try:
            buf = bytearray(65536)
            for d in (1e-9, 1e-6, 1e-4, 1e-3, 5e-3, 0.02, 0.05):
                c.set_read_deadline(netpoll.now() + d)
                with pytest.raises(TimeoutError):
                    for _ in range(1_000_000):
                        await c.read(buf)
                    raise AssertionError("copy never timed out")
        finally:
            stop.append(True)
            c.close()
            s.close()
            ln.close()
            await g

    run(backend_name, main)


def test_read_write_deadline_race(backend_name):
    # Go's TestReadWriteDeadlineRace, scaled: tiny deadlines set over and
    # over while a read and a write are blocked; no hang, no stray error.
    async def loop(op, n):
        timeouts = 0
        for _ in range(n):
            try:
                await op()
            except TimeoutError:
                timeouts += 1
        return timeouts

    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            n = 200
            rbuf = bytearray(1)
            r = netpoll.go(loop(lambda: c.read(rbuf), n))
            w = netpoll.go(loop(lambda: c.write(bytes(65536)), n))
            for _ in range(4 * n):
                if r.done and w.done:
                    break
                c.set_deadline(netpoll.now() + 2e-6)
                await netpoll.sleep(0)
                c.set_deadline(netpoll.now() + 1e-4)
                await netpoll.sleep(0.0001)
            c.set_deadline(netpoll.now() - 1)  # whatever is left ends now
            assert await r == n
            assert await w == n

    run(backend_name, main)


def test_prolonged_deadlines_during_exchanges(backend_name):
    # Go's TestReadWriteProlongedTimeout, scaled: one side keeps pushing its
    # deadlines out while the peer runs request/response exchanges.
    async def extender(conn, stop):
        while not stop:
            conn.set_read_deadline(netpoll.now() + 3600)
            conn.set_write_deadline(netpoll.now() + 3600)
            await netpoll.sleep(0)

    async def main():
        ln, c, s = await stream_pair()
        stop: list[bool] = []
        ext = netpoll.go(extender(s, stop))
        try:
            buf = bytearray(1)
            for i in range(300):
                await c.write(b"q")
                assert await read_full(s, 1) == b"q"
                await s.write(b"r")
                assert await c.read(buf) == 1
        finally:
            stop.append(True)
            await ext
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_concurrent_set_deadline_many_conns(backend_name):
    # Go's TestConcurrentSetDeadline, scaled: steadily earlier deadlines on
    # many conns from several goroutines, with reads blocked on each.
    async def setter(conns, tries):
        for i in range(tries):
            for c in conns:
                c.set_deadline(netpoll.now() + 1.0 - i * 0.005)
            await netpoll.sleep(0)

    async def main():
        pairs = [await stream_pair() for _ in range(10)]
        conns = [c for _, c, _ in pairs]
        try:
            readers = [netpoll.go(c.read(bytearray(1))) for c in conns]
            setters = [netpoll.go(setter(conns, 100)) for _ in range(4)]
            for g in setters:
                await g
            for c in conns:
                c.set_deadline(netpoll.now() + 0.02)
            for g in readers:
                with pytest.raises(TimeoutError):
                    await g
        finally:
            for ln, c, s in pairs:
                c.close()
                s.close()
                ln.close()

    run(backend_name, main)


@pytest.mark.parametrize("cleared", ["read", "write"])
def test_equal_deadlines_then_one_cleared(backend_name, cleared):
    # Equal read and write deadlines share one timer (Go's "combo"); clearing
    # one of them must leave the other armed, and only the other.
    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            d = netpoll.now() + 0.1
            c.set_deadline(d)
            if cleared == "read":
                c.set_read_deadline(None)
            else:
                c.set_write_deadline(None)
            r = netpoll.go(c.read(bytearray(1)))
            w = netpoll.go(c.write(bytes(1 << 20)))
            expiring, staying = (w, r) if cleared == "read" else (r, w)
            op = "write" if cleared == "read" else "read"
            await expect_timeout(expiring, op, d)
            await netpoll.sleep(0.1)
            assert not staying.done, f"the cleared {cleared} deadline fired"
            c.close()
            with pytest.raises(netpoll.ClosedError):
                await staying

    run(backend_name, main)


def test_equal_deadlines_then_one_moved(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            t0 = netpoll.now()
            c.set_deadline(t0 + 0.3)
            c.set_write_deadline(t0 + 0.05)  # split: the write deadline comes first
            r = netpoll.go(expect_timeout(c.read(bytearray(1)), "read", t0 + 0.3))
            await expect_timeout(c.write(bytes(1 << 20)), "write", t0 + 0.05)
            assert not r.done
            await r
            # And back together again.
            t1 = netpoll.now()
            c.set_read_deadline(t1 + 0.3)
            c.set_write_deadline(t1 + 0.3)
            c.set_deadline(t1 + 0.05)
            await expect_timeout(c.read(bytearray(1)), "read", t1 + 0.05)
            await expect_timeout(c.write(b"x"), "write")

    run(backend_name, main)
