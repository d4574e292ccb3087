"""Misuse is a clear error, never a hang or a corruption."""

from __future__ import annotations

import gc
import inspect
import warnings

import pytest

import netpoll
from netpoll import net

from support import read_full, run
from support.net import fill_conn, small_buffers, stream_pair


def test_second_await_of_one_read_is_refused_and_the_first_survives(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        try:
            buf = bytearray(8)
            op = s.read(buf)

            async def await_it():
                return await op

            first = netpoll.go(await_it())
            await netpoll.sleep(0.01)
            second = netpoll.go(await_it())
            with pytest.raises(RuntimeError, match="being awaited already"):
                await second
            # The first is still parked and still reachable by data.
            assert not first.done
            await c.write(b"hey")
            assert await first == 3 and bytes(buf[:3]) == b"hey"
            # And the read lock went back: the next read works.
            await c.write(b"!")
            assert await read_full(s, 1) == b"!"
            with pytest.raises(RuntimeError, match="already awaited"):
                await op
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_await_of_a_read_run_as_a_goroutine_is_refused(backend_name):
    # go(conn.read(buf)) drives the awaitable without awaiting it; awaiting
    # it elsewhere too is the same misuse.
    async def main():
        ln, c, s = await stream_pair()
        try:
            op = s.read(bytearray(8))
            g = netpoll.go(op)
            await netpoll.sleep(0.01)

            async def await_it():
                return await op

            with pytest.raises(RuntimeError, match="being awaited already"):
                await netpoll.go(await_it())
            await c.write(b"ab")
            assert await g == 2
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_second_await_refused_then_close_reaches_the_first(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        try:
            op = s.read(bytearray(8))

            async def await_it():
                return await op

            first = netpoll.go(await_it())
            await netpoll.sleep(0.01)
            with pytest.raises(RuntimeError):
                await netpoll.go(await_it())
            s.close()
            with pytest.raises(netpoll.ClosedError):
                await first
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_deadlock_detection_survives_a_refused_second_await(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        op = s.read(bytearray(8))

        async def await_it():
            return await op

        first = netpoll.go(await_it())
        await netpoll.sleep(0.01)
        with pytest.raises(RuntimeError):
            await netpoll.go(await_it())
        await c.write(b"x")
        assert await first == 1
        c.close()
        s.close()
        ln.close()
        # Only goroutines that can never wake are left.
        await netpoll.Chan().recv()

    with pytest.raises(netpoll.DeadlockError):
        run(backend_name, main)


def test_writev_holds_its_buffers_while_parked(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        try:
            small_buffers(c, s)
            await fill_conn(c)
            a = bytearray(b"a" * 300_000)
            b = bytearray(b"b" * 1000)
            w = netpoll.go(c.writev([a, b]))
            await netpoll.sleep(0.01)
            assert not w.done, "writev did not park"
            with pytest.raises(BufferError):
                a.extend(b"more")
            with pytest.raises(BufferError):
                del b[:10]

            async def drain():
                buf = bytearray(1 << 16)
                got = 0
                while True:
                    n = await s.read(buf)
                    if not n:
                        return got
                    got += n

            d = netpoll.go(drain())
            assert await w == 301_000
            # Released once done.
            a.extend(b"x")
            del b[:10]
            c.close_write()
            assert await d >= 301_000
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_read_into_a_non_contiguous_buffer_says_not_contiguous(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            strided = memoryview(bytearray(16))[::2]
            assert not strided.readonly
            with pytest.raises(TypeError, match="not contiguous") as ei:
                s.read(strided)
            assert "read-only" not in str(ei.value)
            with pytest.raises(TypeError, match="not contiguous"):
                await pc.read_from(strided)
            with pytest.raises(TypeError, match="read-only"):
                s.read(b"immutable")
        finally:
            pc.close()
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


async def _never_run():
    raise AssertionError("this coroutine must never run")


def _closed_without_warning(make_call):
    coro = _never_run()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError) as ei:
            make_call(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        del coro
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught
    return ei.value


def test_nested_run_closes_its_coroutine(backend_name):
    async def main():
        err = _closed_without_warning(lambda coro: netpoll.run(coro, backend=backend_name))
        assert "running netpoll runtime" in str(err)

    run(backend_name, main)


def test_go_threadsafe_on_an_ended_runtime_closes_its_coroutine(backend_name):
    async def main():
        return netpoll.current_runtime()

    rt = run(backend_name, main)
    err = _closed_without_warning(rt.go_threadsafe)
    assert "ended" in str(err)
