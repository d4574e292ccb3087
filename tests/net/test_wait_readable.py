"""Conn.wait_readable: park without a buffer until a read will find data,
EOF or an error; every way out of the wait, and no lost readiness."""

from __future__ import annotations

import pytest

import netpoll

from support import run
from support.net import conn_pair, stream_pair


def test_waits_for_data_after_a_short_read_then_read_finds_it(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"a")
            buf = bytearray(64)
            assert await c.read(buf) == 1  # short: the stream is empty now
            woke = []

            async def waiter():
                await c.wait_readable()
                woke.append(netpoll.now())

            g = netpoll.go(waiter())
            await netpoll.sleep(0.05)
            assert not woke, "wait_readable returned with nothing to read"
            t = netpoll.now()
            await s.write(b"bc")
            await g
            assert woke and woke[0] >= t
            assert await c.read(buf) == 2 and buf[:2] == b"bc"

    run(backend_name, main)


def test_returns_at_once_when_data_is_already_there(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"xyz")
            await netpoll.sleep(0.01)
            await c.wait_readable()
            await c.wait_readable()  # nothing consumed: still readable
            buf = bytearray(8)
            assert await c.read(buf) == 3

    run(backend_name, main)


def test_peer_close_wakes_it_and_read_gives_eof(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        try:
            await s.write(b"x")
            assert await c.read(bytearray(8)) == 1
            g = netpoll.go(c.wait_readable())
            await netpoll.sleep(0.02)
            s.close()
            await g
            assert await c.read(bytearray(8)) == 0
        finally:
            c.close()
            ln.close()

    run(backend_name, main)


@pytest.mark.parametrize("parked", [False, True], ids=["reset-first", "parked-then-reset"])
def test_a_reset_reaches_the_read_after_it(backend_name, parked):
    """The peer resets (linger 0) with data unread: wait_readable returns,
    and the read after it raises ConnectionResetError; the wait consumes
    nothing, neither data nor the socket's pending error (a reset read as
    EOF would pass for a clean end of a truncated stream)."""
    async def main():
        async with conn_pair() as (ln, c, s):
            await c.write(b"unread by s")
            await s.write(b"x")
            assert await c.read(bytearray(8)) == 1
            await netpoll.sleep(0.01)
            g = netpoll.go(c.wait_readable()) if parked else None
            await netpoll.sleep(0.01 if parked else 0)
            s.set_linger(0)
            s.close()
            await netpoll.sleep(0.02)
            await (g if parked else c.wait_readable())
            await c.wait_readable()  # again: still nothing consumed
            with pytest.raises(ConnectionResetError):
                await c.read(bytearray(8))

    run(backend_name, main)


def test_close_and_deadline_end_the_wait(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"x")
            assert await c.read(bytearray(8)) == 1
            c.set_read_deadline(netpoll.now() + 0.05)
            t = netpoll.now()
            with pytest.raises(netpoll.DeadlineExceededError):
                await c.wait_readable()
            assert netpoll.now() - t >= 0.045
            c.set_read_deadline(None)
            g = netpoll.go(c.wait_readable())
            await netpoll.sleep(0.02)
            c.close()
            with pytest.raises(netpoll.ClosedError):
                await g

    run(backend_name, main)


def test_a_past_deadline_or_a_closed_conn_fail_even_with_nothing_to_wait_for(backend_name):
    # Nothing read yet, so nothing says the stream is empty and it would
    # return at once; a past deadline and a close still fail it, as they
    # fail a read.
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"x")
            c.set_read_deadline(netpoll.now() - 1)
            with pytest.raises(netpoll.DeadlineExceededError):
                await c.wait_readable()
            c.set_read_deadline(None)
            await c.wait_readable()
            c.close()
            with pytest.raises(netpoll.ClosedError):
                await c.wait_readable()

    run(backend_name, main)


def test_echo_with_pooled_buffers_loses_nothing(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        pool: list = []

        async def server():
            while True:
                await s.wait_readable()
                buf = pool.pop() if pool else bytearray(512)
                try:
                    n = await s.read(buf)
                    if not n:
                        return
                    await s.write(memoryview(buf)[:n])
                finally:
                    pool.append(buf)

        g = netpoll.go(server())
        try:
            sent = bytearray()
            got = bytearray()
            buf = bytearray(4096)
            for i in range(200):
                msg = bytes([i % 251]) * (1 + (i * 37) % 700)
                sent += msg
                await c.write(msg)
                while len(got) < len(sent):
                    got += buf[:await c.read(buf)]
            assert got == sent
            c.close_write()
            await g
            assert len(pool) == 1, "one buffer served every message"
        finally:
            for x in (c, s, ln):
                x.close()

    run(backend_name, main)
