"""close() closes the OS descriptor at once, even with a goroutine parked on
it (Go's TestClosingListener): a server can listen on its port again right
after closing. The parked operations wake with ClosedError and touch
nothing of the descriptor's next owner: not its fd number, not its poll
descriptor.
"""

from __future__ import annotations

import netpoll
from netpoll import net

from support import read_full, run
from support.net import fd_is_open, stream_pair


async def _parked(coro):
    g = netpoll.go(coro)
    await netpoll.sleep(0.01)
    assert not g.done, "the operation did not park"
    return g


async def _expect_closed(g) -> None:
    try:
        await g
    except netpoll.ClosedError:
        return
    raise AssertionError("the parked operation was not woken with ClosedError")


def test_relisten_after_closing_a_listener_with_a_parked_accept(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        fd = ln.fileno()
        g = await _parked(ln.accept())
        ln.close()
        assert not fd_is_open(fd) or fd != ln.fileno()
        # The same address at once: the old socket is gone.
        ln2 = net.listen("tcp", str(ln.addr))
        try:
            assert ln2.addr == ln.addr
            await _expect_closed(g)
            # The new listener works, and the old acceptor took nothing of it.
            c = await net.dial("tcp", ln2.addr)
            s = await ln2.accept()
            await c.write(b"ok")
            assert await read_full(s, 2) == b"ok"
            c.close()
            s.close()
        finally:
            ln2.close()

    run(backend_name, main)


def test_rebind_after_closing_a_packet_conn_with_a_parked_read_from(backend_name):
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        g = await _parked(pc.read_from(bytearray(16)))
        pc.close()
        pc2 = net.listen_packet("udp", str(pc.local_addr))
        try:
            await _expect_closed(g)
            c = await net.dial("udp", pc2.local_addr)
            await c.write(b"dgram")
            buf = bytearray(16)
            pc2.set_deadline(netpoll.now() + 5)
            n, _ = await pc2.read_from(buf)
            assert bytes(buf[:n]) == b"dgram"
            c.close()
        finally:
            pc2.close()

    run(backend_name, main)


def test_parked_read_does_not_touch_the_conn_that_reuses_its_fd(backend_name):
    # The parked read's fd number (and most likely its poll descriptor) go to
    # the next socket before the read runs again; it must fail on the closed
    # flag and leave the new conn's data and waiters alone.
    async def main():
        ln, c, s = await stream_pair()
        try:
            fd = s.fileno()
            old = await _parked(s.read(bytearray(16)))
            s.close()
            assert not fd_is_open(fd)
            c2 = await net.dial("tcp", ln.addr)
            s2 = await ln.accept()
            reused = [x for x in (c2, s2) if x.fileno() == fd]
            assert reused, "no new socket took the closed fd number"
            new = reused[0]
            other = s2 if new is c2 else c2
            reader = await _parked(read_full(new, 4))
            await _expect_closed(old)
            await other.write(b"data")
            assert await reader == b"data"
            c2.close()
            s2.close()
        finally:
            c.close()
            ln.close()

    run(backend_name, main)


def test_parked_write_and_lock_waiter_leave_after_close(backend_name):
    # A writer parked on a full send path and a second writer parked on the
    # write lock: close returns with the descriptor closed, both leave with
    # ClosedError, and the fdMutex is consistent (close twice is a no-op,
    # a new op fails at once).
    async def main():
        ln, c, s = await stream_pair()
        try:
            from support.net import fill_conn, small_buffers

            small_buffers(c, s)
            await fill_conn(c)
            fd = c.fileno()
            w1 = await _parked(c.write(bytes(1 << 20)))
            w2 = await _parked(c.write(b"x"))
            c.close()
            assert not fd_is_open(fd)
            await _expect_closed(w1)
            await _expect_closed(w2)
            c.close()
            try:
                await c.write(b"y")
            except netpoll.ClosedError:
                pass
            else:
                raise AssertionError("write after close did not fail")
        finally:
            s.close()
            ln.close()

    run(backend_name, main)
