"""Black holes: from some moment on, every packet between the two ends is
dropped (nftables ``drop`` on the server end of the link, both ways), with
no RST, no FIN and no ICMP: the peer has vanished. Deadlines end reads,
writes and dials at their time; with no deadline, TCP keep-alive (short
settings on the conn's socket) ends a read; close() of a conn stuck there
returns at once and wakes its goroutines, and the runtime keeps running.

Heavy: test_keep_alive_* waits about 3 s for the kernel's probes.
"""

from __future__ import annotations

import errno
import socket

import netpoll
from netpoll import net

from nfutil import SLACK, addr, close_all, listen, pair, read_full, run, set_keep_alive

DEADLINE = 0.5


async def timed(coro):
    """(the exception coro raised, seconds it took); fails if it returned."""
    t0 = netpoll.now()
    try:
        r = await coro
    except Exception as e:
        return e, netpoll.now() - t0
    raise AssertionError(f"returned {r!r} instead of failing")


def assert_deadline(e: BaseException, op: str, took: float, wanted: float) -> None:
    assert isinstance(e, netpoll.DeadlineExceededError), repr(e)
    assert isinstance(e, net.OpError) and e.op == op, repr(e)
    assert wanted - 0.01 <= took <= wanted + SLACK, f"{op} ended after {took:.3f} s, deadline {wanted} s"


def test_read_with_a_deadline_times_out_in_a_black_hole(backend_name, path):
    async def main():
        ln, c, s = await pair(path)
        try:
            await c.write(b"ping")
            assert await read_full(s, 4) == b"ping"
            holes = path.black_hole()
            await c.write(b"lost")  # into the kernel's buffer, then dropped
            s.set_read_deadline(netpoll.now() + DEADLINE)
            c.set_read_deadline(netpoll.now() + DEADLINE)
            server = netpoll.go(timed(s.read(bytearray(16))))
            e, took = await timed(c.read(bytearray(16)))
            assert_deadline(e, "read", took, DEADLINE)
            e, took = await server
            assert_deadline(e, "read", took, DEADLINE)
            assert path.hits(holes[0]) > 0, "the black hole dropped nothing"
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)


def test_write_into_a_black_hole_blocks_until_its_deadline(backend_name, path):
    big = b"w" * (64 << 20)  # more than any socket buffer holds

    async def main():
        ln, c, s = await pair(path)
        try:
            holes = path.black_hole()
            for conn in (c, s):
                conn.set_write_deadline(netpoll.now() + DEADLINE)
                e, took = await timed(conn.write(big))
                assert_deadline(e, "write", took, DEADLINE)
            assert path.hits(holes[0]) > 0 and path.hits(holes[1]) > 0
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)


def test_dial_to_a_black_hole_ends_at_its_timeout(backend_name, path):
    async def main():
        ln = listen(path)
        try:
            holes = path.black_hole(f"tcp dport {ln.addr.port}")
            accepted = netpoll.go(timed(ln.accept()))
            e, took = await timed(net.dial("tcp", addr(path, ln), timeout=DEADLINE))
            assert_deadline(e, "dial", took, DEADLINE)
            assert path.hits(holes[0]) > 0, "no SYN reached the black hole"
            # Nothing got through to the listener.
            ln.set_deadline(netpoll.now() + 0.1)
            e, _ = await accepted
            assert isinstance(e, netpoll.DeadlineExceededError), repr(e)
        finally:
            ln.close()

    run(path, backend_name, main)


def test_keep_alive_detects_a_dead_peer_with_no_deadline(backend_name, path):
    async def main():
        ln, c, s = await pair(path)
        done = [False]

        async def close_if_stuck():
            # Bounds the test when keep-alive never fires: the read then
            # ends with ClosedError and the test fails on it.
            limit = netpoll.now() + 12.0
            while not done[0] and netpoll.now() < limit:
                await netpoll.sleep(0.05)
            c.close()

        watchdog = None
        try:
            set_keep_alive(c, idle=1, interval=1, count=2)
            await c.write(b"ping")
            assert await read_full(s, 4) == b"ping"
            holes = path.black_hole()
            watchdog = netpoll.go(close_if_stuck())
            e, took = await timed(c.read(bytearray(16)))  # no deadline
            done[0] = True
            # The kernel gave up: ETIMEDOUT after idle + count * interval s.
            assert not isinstance(e, netpoll.ClosedError), "keep-alive never ended the read"
            assert isinstance(e, net.OpError) and e.op == "read", repr(e)
            assert e.errno == errno.ETIMEDOUT, repr(e)
            assert isinstance(e, TimeoutError) and not isinstance(e, netpoll.DeadlineExceededError)
            assert 1.5 <= took <= 3.0 + 3 * SLACK, f"keep-alive took {took:.2f} s"
            assert path.hits(holes[0]) >= 2, "fewer than 2 keep-alive probes were dropped"
        finally:
            done[0] = True
            if watchdog is not None:
                await watchdog
            close_all(c, s, ln)

    run(path, backend_name, main)


def test_dialed_and_accepted_conns_have_go_keep_alive_defaults(backend_name, path):
    """What protects a conn with no deadline unless the user says otherwise:
    keep-alive on, probes after 15 s of silence (Go's defaults)."""

    async def main():
        ln, c, s = await pair(path)
        try:
            for conn in (c, s):
                sock = socket.socket(fileno=conn.fileno())
                try:
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
                finally:
                    sock.detach()
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)


def test_close_of_a_conn_stuck_in_a_black_hole_returns_at_once(backend_name, path):
    big = b"c" * (64 << 20)

    async def main():
        ln, c, s = await pair(path)
        ticks = [0]
        stop = [False]

        async def ticker():
            while not stop[0]:
                await netpoll.sleep(0.01)
                ticks[0] += 1

        try:
            path.black_hole()
            t = netpoll.go(ticker())
            reader = netpoll.go(timed(c.read(bytearray(16))))
            writer = netpoll.go(timed(c.write(big)))
            await netpoll.sleep(0.3)  # both parked in the black hole
            before = ticks[0]
            t0 = netpoll.now()
            c.close()
            took = netpoll.now() - t0
            for g, op in ((reader, "read"), (writer, "write")):
                e, _ = await g
                assert isinstance(e, netpoll.ClosedError), f"{op}: {e!r}"
            woke = netpoll.now() - t0
            await netpoll.sleep(0.1)
            stop[0] = True
            await t
            assert took < 0.5, f"close() took {took:.3f} s"
            assert woke < 0.5 + SLACK, f"blocked goroutines woke {woke:.3f} s after close()"
            assert before >= 5, f"the runtime was held while the conn was stuck ({before} ticks)"
            assert ticks[0] > before, "the runtime stopped after close()"
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)
