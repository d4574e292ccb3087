"""netpoll.aio: the loop on netpoll's scheduler, the bridge, and their error paths."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import tempfile
import threading

import pytest

import netpoll
from netpoll import _sched, aio, net


def run(coro, backend_name, **kw):
    return aio.run(coro, backend=backend_name, **kw)


# -- the loop -----------------------------------------------------------------

def test_new_event_loop_is_an_asyncio_loop_on_the_backend(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop.backend == backend_name
        assert loop.runtime.backend.name == backend_name
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()
    assert loop.runtime.backend.closed


def test_default_backend_is_netpolls_choice():
    loop = aio.new_event_loop()
    try:
        assert loop.backend == netpoll.BACKEND
    finally:
        loop.close()


def test_runner_with_loop_factory(backend_name):
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=lambda: aio.new_event_loop(backend=backend_name)) as r:
        assert r.run(main()) is aio.EventLoop
        assert r.run(main()) is aio.EventLoop


def test_run_returns_and_raises(backend_name):
    async def ok():
        return "v"

    async def bad():
        raise KeyError("k")

    assert run(ok(), backend_name) == "v"
    with pytest.raises(KeyError):
        run(bad(), backend_name)


def test_run_debug_flag(backend_name):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert run(main(), backend_name, debug=True) is True
    assert run(main(), backend_name, debug=False) is False


def test_run_bad_backend_closes_the_coroutine():
    async def main():
        raise AssertionError("must not run")

    coro = main()
    with pytest.raises(netpoll.BackendError, match="nosuch"):
        aio.run(coro, backend="nosuch")
    assert coro.cr_frame is None  # closed: no "never awaited" warning


def test_run_needs_a_coroutine():
    with pytest.raises(ValueError, match="coroutine was expected"):
        aio.run(lambda: None)


def test_timers_fire_in_order_and_cancel(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        for d in (0.03, 0.01, 0.02):
            loop.call_later(d, seen.append, d)
        h = loop.call_later(0.015, seen.append, "cancelled")
        h.cancel()
        t0 = loop.time()
        await asyncio.sleep(0.05)
        return seen, loop.time() - t0

    seen, took = run(main(), backend_name)
    assert seen == [0.01, 0.02, 0.03]
    assert took >= 0.05


def test_idle_loop_wakes_for_call_soon_threadsafe(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        t = threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, "hi"))
        loop.call_later(0.02, t.start)
        try:
            return await asyncio.wait_for(fut, 10)
        finally:
            t.join()

    assert run(main(), backend_name) == "hi"


def test_add_reader_is_level_triggered(backend_name):
    # One byte per callback: the callback must be called again while bytes
    # remain, with no new data arriving (edge-triggered backends probe).
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        got = bytearray()
        done = loop.create_future()

        def reader():
            got.extend(a.recv(1))
            if len(got) == 10:
                loop.remove_reader(a)
                done.set_result(None)

        try:
            loop.add_reader(a, reader)
            b.send(b"0123456789")
            await asyncio.wait_for(done, 10)
            return bytes(got)
        finally:
            a.close()
            b.close()

    assert run(main(), backend_name) == b"0123456789"


def test_add_writer_until_removed(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        calls = []
        done = loop.create_future()

        def writer():
            calls.append(1)
            if len(calls) == 3:
                loop.remove_writer(a)
                loop.call_later(0.02, done.set_result, None)

        try:
            loop.add_writer(a, writer)
            await asyncio.wait_for(done, 10)
            return len(calls)
        finally:
            a.close()
            b.close()

    assert run(main(), backend_name) == 3


def test_add_reader_replaces_the_callback(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        fut = loop.create_future()
        try:
            loop.add_reader(a, lambda: fut.set_result("old"))
            loop.add_reader(a, lambda: fut.done() or fut.set_result("new"))
            b.send(b"x")
            return await asyncio.wait_for(fut, 10)
        finally:
            loop.remove_reader(a)
            a.close()
            b.close()

    assert run(main(), backend_name) == "new"


def test_add_reader_on_a_regular_file_is_refused(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        with tempfile.TemporaryFile() as f:
            with pytest.raises(PermissionError, match="not pollable"):
                loop.add_reader(f.fileno(), lambda: None)
            assert not loop.remove_reader(f.fileno())

    run(main(), backend_name)


def test_remove_reader_of_an_already_closed_fd(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        fd = a.fileno()
        loop.add_reader(fd, lambda: None)
        a.close()
        b.close()
        assert loop.remove_reader(fd)

    run(main(), backend_name)


def test_stop_from_a_goroutine_wakes_the_idle_loop(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        async def stopper():
            await netpoll.sleep(0.02)
            loop.stop()

        async def start():
            netpoll.go(stopper())
        loop.run_until_complete(start())
        loop.run_forever()  # returns only through the goroutine's stop()
    finally:
        loop.close()


def test_goroutine_lives_across_run_until_complete_calls(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        ch = netpoll.Chan()

        async def gor():
            return await ch.recv() * 2

        async def start():
            return netpoll.go(gor())

        async def finish(g):
            await aio.wrap_goroutine(netpoll.go(ch.send(21)))
            return await aio.wrap_goroutine(g)

        g = loop.run_until_complete(start())
        assert not g.done
        assert loop.run_until_complete(finish(g)) == 42
    finally:
        loop.close()


def test_keyboard_interrupt_in_a_callback_leaves_the_loop_usable(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        def boom():
            raise KeyboardInterrupt

        loop.call_soon(boom)
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert loop.run_until_complete(asyncio.sleep(0.01, result="again")) == "again"
    finally:
        loop.close()


def test_close_ends_leftover_goroutines(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    ended = []

    async def forever():
        try:
            await netpoll.sleep(3600)
        finally:
            ended.append(True)

    async def start():
        netpoll.go(forever())
        await asyncio.sleep(0)
    loop.run_until_complete(start())
    loop.close()
    assert ended == [True]
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()


def test_signal_handler(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, fut.set_result, "usr1")
        try:
            loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
            return await asyncio.wait_for(fut, 10)
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)

    assert run(main(), backend_name) == "usr1"


# -- goroutines and tasks together ----------------------------------------------

def test_goroutine_conn_and_task_streams_share_the_loop(backend_name):
    async def echo(r, w):
        while data := await r.read(1024):
            w.write(data)
            await w.drain()
        w.close()

    async def goroutine_client(port):
        c = await net.dial("tcp", f"127.0.0.1:{port}")
        try:
            out = bytearray()
            for i in range(20):
                await c.write(b"g%02d" % i)
                buf = bytearray(3)
                n = await c.read(buf)
                out += buf[:n]
            return bytes(out)
        finally:
            c.close()

    async def task_client(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        out = bytearray()
        for i in range(20):
            w.write(b"t%02d" % i)
            out += await r.readexactly(3)
        w.close()
        await w.wait_closed()
        return bytes(out)

    async def main():
        srv = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        g = netpoll.go(goroutine_client(port))
        t = asyncio.ensure_future(task_client(port))
        res = await asyncio.gather(aio.wrap_goroutine(g), t)
        srv.close()
        await srv.wait_closed()
        return res

    g, t = run(main(), backend_name)
    assert g == b"".join(b"g%02d" % i for i in range(20))
    assert t == b"".join(b"t%02d" % i for i in range(20))


def test_goroutine_and_task_exchange_through_chan_and_future(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        ch = netpoll.Chan()
        fut = loop.create_future()

        async def goroutine():
            v = await aio.wrap_future(fut)       # an asyncio future
            for i in range(v):
                await ch.send(i)
            ch.close()
            return await aio.wrap_future(asyncio.sleep(0.01, result="coro"))

        g = netpoll.go(goroutine())
        loop.call_later(0.01, fut.set_result, 5)
        got = []
        while True:
            v, ok = await aio.wrap_goroutine(netpoll.go(ch.recv2()))
            if not ok:
                break
            got.append(v)
        return got, await aio.wrap_goroutine(g)

    assert run(main(), backend_name) == ([0, 1, 2, 3, 4], "coro")


def test_wrap_goroutine_delivers_the_exception(backend_name):
    async def bad():
        await netpoll.sleep(0.001)
        raise ValueError("from goroutine")

    async def main():
        with pytest.raises(ValueError, match="from goroutine"):
            await aio.wrap_goroutine(netpoll.go(bad()))

    run(main(), backend_name)


def test_wrap_goroutine_cancelled_future_reports_the_failure(backend_name):
    async def bad():
        await netpoll.sleep(0.01)
        raise ValueError("late failure")

    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        fut = aio.wrap_goroutine(netpoll.go(bad()))
        fut.cancel()
        await asyncio.sleep(0.05)
        return seen

    seen = run(main(), backend_name)
    assert len(seen) == 1 and isinstance(seen[0]["exception"], ValueError)
    assert "cancelled" in seen[0]["message"]


def test_lost_goroutine_failure_is_raised_by_run(backend_name):
    async def bad():
        raise OSError("nobody awaits me")

    async def main():
        netpoll.go(bad())
        await asyncio.sleep(0.05)

    with pytest.raises(OSError, match="nobody awaits me"):
        run(main(), backend_name)


def test_wrap_future_exception_and_cancellation(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        failing = loop.create_future()
        cancelled = loop.create_future()

        async def goroutine():
            out = []
            for f in (failing, cancelled):
                try:
                    await aio.wrap_future(f)
                except BaseException as e:
                    out.append(type(e))
            return out

        g = netpoll.go(goroutine())
        loop.call_soon(failing.set_exception, ZeroDivisionError())
        loop.call_later(0.01, cancelled.cancel)
        return await aio.wrap_goroutine(g)

    assert run(main(), backend_name) == [ZeroDivisionError, asyncio.CancelledError]


def test_wrap_future_goroutine_sees_the_task_cancelled(backend_name):
    # aio.run cancels the tasks left at the end; the goroutine waiting for
    # one gets CancelledError.
    state = {}

    async def slow():
        await asyncio.sleep(3600)

    async def goroutine():
        try:
            await aio.wrap_future(slow())
        except asyncio.CancelledError:
            state["goroutine"] = "cancelled"

    async def main():
        netpoll.go(goroutine())
        await asyncio.sleep(0.01)

    run(main(), backend_name)
    assert state == {"goroutine": "cancelled"}


def test_wrap_future_task_is_cancelled_when_the_goroutine_is_closed(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        async def goroutine():
            await aio.wrap_future(asyncio.sleep(3600))

        async def start():
            netpoll.go(goroutine())
            await asyncio.sleep(0.01)
            return asyncio.all_tasks() - {asyncio.current_task()}
        tasks = loop.run_until_complete(start())
        assert len(tasks) == 1
    finally:
        loop.close()
    assert [t.cancelling() for t in tasks] == [1]


def test_bridge_misuse_errors(backend_name):
    async def on_netpoll():
        with pytest.raises(TypeError, match="goroutine handle"):
            aio.wrap_goroutine(object())

    run(on_netpoll(), backend_name)

    async def on_stdlib():
        with pytest.raises(TypeError, match="netpoll.aio event loop"):
            aio.wrap_goroutine(_sched.G.__new__(_sched.G))

    asyncio.run(on_stdlib())

    async def goroutine():
        with pytest.raises(RuntimeError, match="netpoll.aio loop runs"):
            await aio.wrap_future(asyncio.Future)
        return True

    assert netpoll.run(goroutine(), backend=backend_name)


def test_no_loop_garbage(backend_name):
    # A closed loop leaves no watcher, timer or goroutine cycle behind.
    loop = aio.new_event_loop(backend=backend_name)
    loop.run_until_complete(asyncio.sleep(0.001))
    loop.close()
    gc.collect()
    assert loop.runtime.backend.waiters == 0
    assert len(loop.runtime.timers) == 0


def test_goroutine_cancellation_cancels_the_wrap_goroutine_future(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        gone.cancel()

        async def goroutine():
            await aio.wrap_future(gone)   # raises CancelledError, not caught

        fut = aio.wrap_goroutine(netpoll.go(goroutine()))
        with pytest.raises(asyncio.CancelledError):
            await fut
        await asyncio.sleep(0.01)
        return fut.cancelled()

    assert run(main(), backend_name) is True


def test_loop_that_never_opened_leaves_no_unraisable(backend_name):
    seen = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with pytest.raises(netpoll.BackendError):
            aio.EventLoop(backend="nosuch")
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert seen == []


def test_registry_refuses_bad_registrations(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    sel = loop._selector
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError, match="Invalid events"):
            sel.register(a, 0)
        with pytest.raises(ValueError, match="Invalid file descriptor"):
            sel.register(-1, 1)
        with pytest.raises(ValueError, match="Invalid file object"):
            sel.register("not a file", 1)
        sel.register(a, 1, (None, None))
        with pytest.raises(KeyError, match="already registered"):
            sel.register(a.fileno(), 1, (None, None))
        with pytest.raises(ValueError, match="Invalid events"):
            sel.modify(a, 8, (None, None))
        sel.unregister(a)
        with pytest.raises(KeyError, match="not registered"):
            sel.unregister(a)
        with pytest.raises(KeyError, match="not registered"):
            sel.modify(a, 1, (None, None))
        with pytest.raises(RuntimeError, match="not select"):
            sel.select(0)
    finally:
        a.close()
        b.close()
        loop.close()


def test_cancelled_reader_handle_unregisters_itself(backend_name):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        try:
            h = loop._add_reader(a.fileno(), lambda: pytest.fail("a cancelled handle ran"))
            h.cancel()
            b.send(b"x")
            for _ in range(100):
                await asyncio.sleep(0.005)
                if a.fileno() not in loop._selector.get_map():
                    return True
            return False
        finally:
            loop.remove_reader(a)
            a.close()
            b.close()

    assert run(main(), backend_name) is True


def test_error_event_reaches_the_reader(backend_name):
    # A connected UDP socket whose peer port is closed: the ICMP error comes
    # as an error event (on epoll: EPOLLERR alone); the reader must be
    # called so that its recv reports it, as after select().
    async def main():
        loop = asyncio.get_running_loop()
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        got = loop.create_future()

        def reader():
            try:
                s.recv(100)
            except OSError as e:
                if not got.done():
                    got.set_result(type(e))
                loop.remove_reader(s)

        try:
            loop.add_reader(s, reader)
            s.send(b"ping")
            return await asyncio.wait_for(got, 10)
        finally:
            loop.remove_reader(s)
            s.close()

    assert run(main(), backend_name) is ConnectionRefusedError
