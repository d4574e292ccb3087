"""Conn.read, write and wait_readable return hand-written awaitables, not
coroutines: each way of leaving one (result, error, close, throw, dropped
unawaited or half-way) must release the buffer and the fdMutex, and they
must behave like coroutines for every driver (await, next/send, tracing)."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

import netpoll
from netpoll._netpoll import Park

from support import run
from support.net import stream_pair


def exported(buf: bytearray) -> bool:
    """Whether someone still holds a buffer export of ``buf``."""
    try:
        buf += b"x"
    except BufferError:
        return True
    del buf[-1]
    return False


def test_bad_arguments_fail_at_the_call(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            with pytest.raises(TypeError, match="writable buffer"):
                c.read(b"read-only")
            with pytest.raises(TypeError, match="not str"):
                c.write("text")
            with pytest.raises(TypeError):
                c.write(12)

    run(backend_name, main)


def test_awaiting_twice_is_an_error(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            op = s.write(b"hi")
            assert await op == 2
            with pytest.raises(RuntimeError, match="already awaited"):
                await op
            buf = bytearray(8)
            op = c.read(buf)
            assert await op == 2
            assert not exported(buf)
            with pytest.raises(RuntimeError, match="already awaited"):
                await op

    run(backend_name, main)


def test_an_unawaited_call_holds_nothing(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            buf = bytearray(8)
            op = c.read(buf)  # lazy: no lock, no syscall until awaited
            await s.write(b"abc")
            other = bytearray(8)
            assert await c.read(other) == 3
            assert exported(buf)
            del op
            assert not exported(buf)

    run(backend_name, main)


@pytest.mark.parametrize("leave", ["close", "throw", "drop"])
def test_leaving_a_parked_read_releases_lock_buffer_and_semaphore(backend_name, leave):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            buf = bytearray(8)
            op = c.read(buf)
            park = op.send(None)  # nothing to read: it parks on the poll descriptor
            assert isinstance(park, Park)
            assert exported(buf)
            if leave == "close":
                op.close()
            elif leave == "throw":
                with pytest.raises(ValueError, match="boom"):
                    op.throw(ValueError("boom"))
            else:
                del op, park
            assert not exported(buf)
            # The lock is free and the semaphore clean: a new read parks and
            # is woken by the data.
            g = netpoll.go(c.read(buf))
            await netpoll.sleep(0.02)
            await s.write(b"xyz")
            assert await g == 3
            assert bytes(buf[:3]) == b"xyz"

    run(backend_name, main)


def test_drivers_other_than_await(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            # Nothing queued (the peek says so): it parks.
            it = c.wait_readable().__await__()
            assert isinstance(next(it), Park)
            it.close()
            it = s.write(b"hello").__await__()
            with pytest.raises(StopIteration) as e:
                next(it)
            assert e.value.value == 5
            buf = bytearray(8)
            await c.wait_readable()
            with pytest.raises(StopIteration) as e:
                c.read(buf).send(None)
            assert e.value.value == 5
            # The read emptied the stream: it parks again.
            it = c.wait_readable().__await__()
            assert isinstance(next(it), Park)
            it.close()
            await s.write(b"!")
            await c.wait_readable()
            assert await c.read(buf) == 1

    run(backend_name, main)


def test_under_a_trace_function(backend_name):
    # With a trace function set, CPython's await uses __next__ / send instead
    # of the am_send slot; parking and results must work the same.
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            buf = bytearray(8)

            async def reader():
                return await c.read(buf), await c.read(buf)

            g = netpoll.go(reader())
            await netpoll.sleep(0.02)
            assert await s.write(b"one") == 3
            await netpoll.sleep(0.02)
            assert await s.write(b"four") == 4
            assert await g == (3, 4)

    calls = []

    def tracer(frame, event, arg):
        calls.append(event)
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        run(backend_name, main)
    finally:
        sys.settrace(old)
    assert calls


def test_errors_are_wrapped_and_release_everything(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        with ln, s:
            buf = bytearray(8)
            c.set_read_deadline(netpoll.now() + 0.02)
            with pytest.raises(netpoll.DeadlineExceededError) as e:
                await c.read(buf)
            assert "read" in str(e.value)
            assert not exported(buf)
            c.set_read_deadline(None)
            g = netpoll.go(c.read(buf))
            await netpoll.sleep(0.02)
            c.close()
            with pytest.raises(netpoll.ClosedError):
                await g
            assert not exported(buf)
            with pytest.raises(netpoll.ClosedError):
                await c.write(b"x")

    run(backend_name, main)


def test_run_ending_closes_goroutines_parked_on_the_lock_and_on_the_poller(backend_name):
    # run() closes leftover goroutines: one parked in the poll descriptor and
    # one queued for the read lock behind it must both give back the buffer
    # they hold, and the lock queue must not keep the second one.
    bufs = [bytearray(8), bytearray(8)]
    fds = []

    async def main():
        ln, c, s = await stream_pair()
        fds.extend((ln, c, s))

        async def reader(buf):
            await c.read(buf)

        for b in bufs:
            netpoll.go(reader(b))
        await netpoll.sleep(0.02)
        assert all(exported(b) for b in bufs)

    run(backend_name, main)
    assert not any(exported(b) for b in bufs)
    for x in fds:
        x.close()


def test_write_nbytes_sends_a_prefix_of_the_buffer(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            buf = bytearray(b"abcdefgh")
            assert await s.write(buf, 3) == 3
            assert await s.write(buf, nbytes=len(buf)) == 8
            assert await s.write(memoryview(buf)[2:], 2) == 2
            assert await s.write(b"zz", None) == 2
            assert await s.write(buf, 0) == 0
            assert not exported(buf)
            got = bytearray(32)
            n = 0
            while n < 15:
                n += await c.read(memoryview(got)[n:])
            assert bytes(got[:n]) == b"abc" + b"abcdefgh" + b"cd" + b"zz"

    run(backend_name, main)


def test_write_nbytes_larger_than_a_socket_buffer_loops(backend_name):
    # The partial-write loop stops at nbytes, not at the buffer's end.
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            data = bytes(range(256)) * 4096  # 1 MiB
            want = len(data) - 12345

            async def reader():
                got = bytearray()
                buf = bytearray(65536)
                while n := await c.read(buf):
                    got += buf[:n]
                return bytes(got)

            g = netpoll.go(reader())
            assert await s.write(data, want) == want
            s.close_write()
            assert await g == data[:want]

    run(backend_name, main)


@pytest.mark.parametrize("nbytes, error, words", [
    (-1, ValueError, "nbytes must not be negative, got -1"),
    (-(1 << 70), ValueError, "nbytes must not be negative"),
    (9, ValueError, r"nbytes 9 is larger than the buffer \(8 bytes\)"),
    (1 << 70, ValueError, "is larger than the buffer"),
    (2.0, TypeError, "nbytes must be an int or None, not float"),
    ("2", TypeError, "nbytes must be an int or None, not str"),
    (True, TypeError, "nbytes must be an int or None, not bool"),
])
def test_bad_write_nbytes_fails_at_the_call_and_holds_nothing(backend_name, nbytes, error, words):
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            buf = bytearray(8)
            with pytest.raises(error, match=words) as e:
                s.write(buf, nbytes)
            assert "write()" in str(e.value)
            del e
            assert not exported(buf)
            # Nothing was sent and the write side is free.
            assert await s.write(b"ok") == 2
            got = bytearray(8)
            assert await c.read(got) == 2 and bytes(got[:2]) == b"ok"

    run(backend_name, main)


def test_a_finished_call_is_reused_only_once_nothing_else_holds_it(backend_name):
    # The FD keeps its last finished call per side for the next one. A call
    # someone still holds is never handed out again: awaiting it again
    # still fails, and the new call is a new object.
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            op1 = s.write(b"a")
            assert await op1 == 1
            assert op1 in gc.get_referents(s)  # kept by the FD (alive: its id is its own)
            op2 = s.write(b"b")
            assert op2 is not op1
            with pytest.raises(RuntimeError, match="already awaited"):
                await op1
            assert await op2 == 1
            del op1
            kept = id(op2)
            del op2  # the FD's reference is now the only one
            op3 = s.write(b"c")
            assert id(op3) == kept  # the same object, handed out again
            assert op3 not in gc.get_referents(s)  # taken out while it runs
            assert await op3 == 1
            del op3
            # read and wait_readable share the read side's.
            w = c.wait_readable()
            await w
            kept = id(w)
            del w
            buf = bytearray(8)
            r = c.read(buf)
            assert id(r) == kept
            got = await r
            while got < 3:
                got += await c.read(memoryview(buf)[got:])
            assert bytes(buf[:3]) == b"abc"

    run(backend_name, main)


def test_a_reused_call_starts_clean_after_an_error(backend_name):
    # A call that failed (deadline) is kept like one that succeeded; the
    # next call through it parks, is woken and returns its own result.
    async def main():
        ln, c, s = await stream_pair()
        with ln, c, s:
            buf = bytearray(8)
            c.set_read_deadline(netpoll.now() + 0.02)
            with pytest.raises(netpoll.DeadlineExceededError):
                await c.read(buf)
            c.set_read_deadline(None)
            assert not exported(buf)
            other = bytearray(8)
            g = netpoll.go(c.read(other))
            await netpoll.sleep(0.02)
            await s.write(b"xy")
            assert await g == 2
            assert bytes(other[:2]) == b"xy"
            assert not exported(buf) and not exported(other)

    run(backend_name, main)


def test_a_conn_is_freed_without_the_cycle_collector(backend_name):
    # The kept call holds neither the FD nor a buffer: a closed conn dropped
    # by its last reference is freed at once, not by the cycle collector.
    async def main():
        ln, c, s = await stream_pair()
        with ln:
            buf = bytearray(8)
            await s.write(b"hi", 1)
            assert await c.read(buf) == 1
            c.close()
            s.close()
            refs = weakref.ref(c), weakref.ref(s)
            del c, s
            assert [r() for r in refs] == [None, None]
            assert not exported(buf)

    gc.disable()
    try:
        run(backend_name, main)
    finally:
        gc.enable()
