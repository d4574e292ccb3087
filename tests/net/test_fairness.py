"""A goroutine whose I/O never waits still lets the others run, and still
meets its deadlines.

The writer sends datagrams on a dialed UDP conn to a socket nobody reads:
on loopback sendto never says EAGAIN (a full receiver drops), so the writer
never parks. Bounds are counts and generous times, never speeds.
"""

from __future__ import annotations

import netpoll
from netpoll import net

from support import SLACK, run

# Far more operations than any budget; the old behaviour ran all of them
# before a timer could fire.
CAP = 200_000


async def _udp_sink():
    sink = net.listen_packet("udp", "127.0.0.1:0")
    c = await net.dial("udp", sink.local_addr)
    return sink, c


def test_busy_writer_lets_a_ticking_goroutine_run(backend_name):
    async def main():
        sink, c = await _udp_sink()
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                await netpoll.sleep(0.001)
                ticks += 1

        t = netpoll.go(ticker())
        try:
            data = b"x" * 64
            writes = 0
            # Never awaits anything but the write itself.
            while ticks < 3 and writes < CAP:
                await c.write(data)
                writes += 1
            assert ticks >= 3, f"the ticker never ran during {writes} writes"
        finally:
            stop = True
            await t
            c.close()
            sink.close()

    run(backend_name, main)


def test_busy_reader_lets_a_ticking_goroutine_run(backend_name):
    # The mirror case: reads that always find data (a large queue of
    # datagrams refilled by nobody; the loop stops when it runs dry).
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        c = await net.dial("udp", pc.local_addr)
        ticks = 0
        try:
            # Fewer datagrams than a default receive buffer holds, more
            # than a budget.
            for _ in range(250):
                await c.write(b"y")
            await netpoll.sleep(0.01)

            async def ticker():
                nonlocal ticks
                ticks += 1

            t = netpoll.go(ticker())
            buf = bytearray(8)
            seen_before_tick = 0
            while ticks == 0:
                pc.set_read_deadline(netpoll.now() + SLACK)
                await pc.read_from(buf)
                seen_before_tick += 1
            await t
            # A goroutine that was runnable all along ran after at most one
            # budget of ready reads, not after the whole queue.
            assert seen_before_tick < 200, seen_before_tick
        finally:
            c.close()
            pc.close()

    run(backend_name, main)


def test_deadline_passes_during_a_run_of_non_blocking_writes(backend_name):
    async def main():
        sink, c = await _udp_sink()
        try:
            deadline = netpoll.now() + 0.01
            c.set_write_deadline(deadline)
            data = b"z" * 64
            writes = 0
            while True:
                try:
                    await c.write(data)
                except TimeoutError as e:
                    assert isinstance(e, net.OpError) and e.timeout()
                    break
                writes += 1
                assert netpoll.now() < deadline + SLACK, (
                    f"still writing {SLACK} s past the deadline ({writes} writes)")
            late = netpoll.now() - deadline
            assert 0 <= late < SLACK, late
        finally:
            c.close()
            sink.close()

    run(backend_name, main)


def test_read_deadline_checked_by_the_clock_at_start(backend_name):
    # A deadline that has passed by the clock fails the next read even if
    # no timer had a chance to fire (the goroutine never yielded since).
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        c = await net.dial("udp", pc.local_addr)
        try:
            for _ in range(4):
                await c.write(b"q")
            await netpoll.sleep(0.01)  # queued
            pc.set_read_deadline(netpoll.now() + 0.02)
            t0 = netpoll.now()
            while netpoll.now() < t0 + 0.05:
                pass  # the deadline passes while this goroutine holds the CPU
            try:
                await pc.read_from(bytearray(8))
            except TimeoutError:
                pass
            else:
                raise AssertionError("a read past its deadline (by the clock) succeeded")
        finally:
            c.close()
            pc.close()

    run(backend_name, main)
