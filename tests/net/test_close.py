"""Shutdown, reset and close: Go's TestCloseWrite, TestConnClose,
TestListenerClose, TestPacketConnClose, TestTCPListenAfterClose, and the
fdMutex contract as the public API shows it."""

from __future__ import annotations

import socket

import pytest

import netpoll
from netpoll import net
from netpoll.socktest import Switch

from support import read_full, run
from support.net import conn_pair, fd_is_open, fill_conn, linger_reset, small_buffers, stream_pair

CLOSED_TEXT = "use of closed network connection"


def assert_closed_error(e: BaseException, op: str) -> None:
    assert isinstance(e, netpoll.ClosedError), repr(e)
    assert isinstance(e, net.OpError), repr(e)
    assert e.op == op
    assert CLOSED_TEXT in str(e)
    assert not isinstance(e, TimeoutError)


# -- close_write / EOF / reset -------------------------------------------------

def test_close_write_eof_then_write_back(backend_name):
    # Go's TestCloseWrite.
    async def main():
        async with conn_pair() as (ln, c, s):
            await c.write(b"hello")
            c.close_write()
            assert await read_full(s, 5) == b"hello"
            assert await s.read(bytearray(10)) == 0
            assert await s.read(bytearray(10)) == 0  # EOF is sticky
            await s.write(b"bye")
            s.close_write()
            assert await read_full(c, 3) == b"bye"
            assert await c.read(bytearray(10)) == 0

    run(backend_name, main)


def test_write_after_close_write_fails(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.close_write()
            with pytest.raises(net.OpError) as ei:
                await c.write(b"x")
            e = ei.value
            assert e.op == "write" and e.net == "tcp"
            assert isinstance(e, BrokenPipeError), repr(e)
            assert e.source == c.local_addr and e.addr == c.remote_addr

    run(backend_name, main)


def test_close_read_then_read_returns_zero_or_error(backend_name):
    # Go's TestCloseRead: after CloseRead a Read does not block.
    async def main():
        async with conn_pair() as (ln, c, s):
            c.close_read()
            c.set_read_deadline(netpoll.now() + 2)
            assert await c.read(bytearray(10)) == 0

    run(backend_name, main)


@pytest.mark.parametrize("blocked", [False, True], ids=["after", "blocked"])
def test_reset_is_an_error_not_eof(backend_name, blocked):
    async def read_once(conn):
        return await conn.read(bytearray(100))

    async def main():
        async with conn_pair() as (ln, c, s):
            if blocked:
                g = netpoll.go(read_once(c))
                await netpoll.sleep(0.02)
                linger_reset(s)
            else:
                linger_reset(s)
                await netpoll.sleep(0.02)
                g = netpoll.go(read_once(c))
            with pytest.raises(ConnectionResetError) as ei:
                await g
            e = ei.value
            assert isinstance(e, net.OpError), repr(e)
            assert e.op == "read" and e.net == "tcp"
            assert e.source == c.local_addr and e.addr == c.remote_addr
            assert not e.temporary()  # Go's TestNotTemporaryRead
            assert not e.timeout()

    run(backend_name, main)


def test_peer_close_unblocks_read_with_eof(backend_name):
    # Go's TestCloseUnblocksRead.
    async def main():
        async with conn_pair() as (ln, c, s):
            g = netpoll.go(c.read(bytearray(10)))
            await netpoll.sleep(0.02)
            s.close()
            assert await g == 0

    run(backend_name, main)


# -- close wakes blocked operations ----------------------------------------------

async def _blocked(coro):
    """Start ``coro`` and give it time to block; returns its handle."""
    g = netpoll.go(coro)
    await netpoll.sleep(0.03)
    return g


def test_close_unblocks_read(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            g = await _blocked(c.read(bytearray(10)))
            c.close()
            with pytest.raises(netpoll.ClosedError) as ei:
                await g
            assert_closed_error(ei.value, "read")

    run(backend_name, main)


def test_close_unblocks_write(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            g = await _blocked(c.write(bytes(1 << 20)))
            c.close()
            with pytest.raises(netpoll.ClosedError) as ei:
                await g
            assert_closed_error(ei.value, "write")

    run(backend_name, main)


def test_close_unblocks_accept(backend_name):
    # Go's TestListenerClose.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            g = await _blocked(ln.accept())
            ln.close()
            with pytest.raises(netpoll.ClosedError) as ei:
                await g
            assert_closed_error(ei.value, "accept")
            assert ei.value.source is None and ei.value.addr == ln.addr
        finally:
            ln.close()

    run(backend_name, main)


def test_close_unblocks_read_from(backend_name):
    # Go's TestPacketConnClose.
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            g = await _blocked(pc.read_from(bytearray(10)))
            pc.close()
            with pytest.raises(netpoll.ClosedError) as ei:
                await g
            assert_closed_error(ei.value, "read")
        finally:
            pc.close()

    run(backend_name, main)


def test_close_unblocks_goroutines_waiting_for_the_read_lock(backend_name):
    # One reader waits in the poller, two more wait for the read lock.
    async def main():
        async with conn_pair() as (ln, c, s):
            gs = [netpoll.go(c.read(bytearray(10))) for _ in range(3)]
            await netpoll.sleep(0.03)
            c.close()
            for g in gs:
                with pytest.raises(netpoll.ClosedError):
                    await g

    run(backend_name, main)


def test_accept_after_close_with_queued_connections(backend_name):
    # Go's TestTCPListenAfterClose: connections dialed before Close are not
    # accepted after it.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        clients = []
        try:
            for _ in range(3):
                clients.append(await net.dial("tcp", ln.addr))
            ln.close()
            for _ in range(2):
                with pytest.raises(netpoll.ClosedError) as ei:
                    await ln.accept()
                assert_closed_error(ei.value, "accept")
            # The queued connections were dropped with the listener.
            for c in clients:
                c.set_read_deadline(netpoll.now() + 2)
                try:
                    n = await c.read(bytearray(1))
                except ConnectionResetError:
                    n = 0
                assert n == 0
        finally:
            ln.close()
            for c in clients:
                c.close()

    run(backend_name, main)


def test_close_twice_is_a_no_op(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        for fd in (c, s, ln, pc):
            fd.close()
            fd.close()
            assert fd.closed

    run(backend_name, main)


def test_operations_after_close_raise_closed_error(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        for fd in (c, s, ln, pc):
            fd.close()
        checks = [
            ("read", c.read(bytearray(1))),
            ("write", c.write(b"x")),
            ("writev", c.writev([b"x"])),
            ("accept", ln.accept()),
            ("read", pc.read_from(bytearray(1))),
            ("write", pc.write_to(b"x", "127.0.0.1:9")),
        ]
        for op, coro in checks:
            with pytest.raises(netpoll.ClosedError) as ei:
                await coro
            assert_closed_error(ei.value, op)
        for call in (lambda: c.set_deadline(netpoll.now() + 1),
                     lambda: c.set_read_deadline(None),
                     lambda: ln.set_deadline(None),
                     lambda: pc.set_deadline(None)):
            with pytest.raises(netpoll.ClosedError) as ei:
                call()
            assert_closed_error(ei.value, "set")
        for call in (c.close_write, c.close_read):
            with pytest.raises(netpoll.ClosedError) as ei:
                call()
            assert_closed_error(ei.value, "close")
        with pytest.raises(netpoll.ClosedError):
            c.set_no_delay(True)

    run(backend_name, main)


# -- fdMutex through the public API ------------------------------------------------

def test_two_readers_serialise_and_both_complete(backend_name):
    async def reader(conn):
        return await read_full(conn, 10)

    async def main():
        async with conn_pair() as (ln, c, s):
            r1 = netpoll.go(reader(c))
            r2 = netpoll.go(reader(c))
            await netpoll.sleep(0.02)
            await s.write(b"a" * 10)
            await netpoll.sleep(0.02)
            await s.write(b"b" * 10)
            got = sorted([await r1, await r2])
            assert got == [b"a" * 10, b"b" * 10]

    run(backend_name, main)


def test_read_and_write_run_concurrently(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            reader = netpoll.go(c.read(bytearray(100)))
            await netpoll.sleep(0.02)
            # The reader is blocked in the poller holding the read lock; a
            # write on the same conn still goes through at once.
            c.set_write_deadline(netpoll.now() + 2)
            assert await c.write(b"ping") == 4
            assert await read_full(s, 4) == b"ping"
            await s.write(b"pong")
            assert await reader == 4

    run(backend_name, main)


def test_close_with_blocked_read_and_write_closes_fd_at_once(backend_name):
    events: list[str] = []

    def on_close(st):
        events.append("close(2)")

    async def op(name, coro):
        try:
            await coro
        except netpoll.ClosedError:
            events.append(name + " left")
            return
        raise AssertionError(f"{name} was not woken by close")

    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            fd = c.fileno()
            r = netpoll.go(op("read", c.read(bytearray(10))))
            w = netpoll.go(op("write", c.write(bytes(1 << 20))))
            await netpoll.sleep(0.03)
            assert fd_is_open(fd)  # not before close was called
            c.close()
            events.append("close() returned")
            # As Go's Close: the descriptor is closed when close() returns,
            # with both operations still parked; they leave afterwards with
            # ClosedError, without touching the (reusable) fd number.
            assert not fd_is_open(fd), "descriptor still open after close() returned"
            await r
            await w
            assert events == ["close(2)", "close() returned", "read left", "write left"], events

    with Switch() as sw:
        sw.set("close", lambda st: on_close(st))
        run(backend_name, main)
    assert not sw.sockets()


def test_close_without_inflight_ops_closes_fd_at_once(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        fds = [c.fileno(), s.fileno(), ln.fileno()]
        for fd in (c, s, ln):
            fd.close()
        assert not any(fd_is_open(fd) for fd in fds)

    run(backend_name, main)


def test_conn_close_sends_fin_not_rst(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        try:
            await s.write(b"last words")
            s.close()
            assert await read_full(c, 10) == b"last words"
            assert await c.read(bytearray(1)) == 0
        finally:
            c.close()
            ln.close()

    run(backend_name, main)


def test_linger_values(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            import struct

            def linger():
                raw = c._control(lambda so: so.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
                return struct.unpack("ii", raw)

            c.set_linger(5)
            assert linger() == (1, 5)
            c.set_linger(None)
            assert linger()[0] == 0
            c.set_linger(-1)
            assert linger()[0] == 0

    run(backend_name, main)
