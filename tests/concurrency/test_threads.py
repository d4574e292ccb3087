"""Other threads and the runtime: close and deadlines from a thread wake the
parked goroutine; descriptors and channels of another runtime error at the
await; hold; a to_thread whose thread cannot start; the injection queue."""

from __future__ import annotations

import threading
import time

import pytest

import netpoll
from netpoll import ClosedError, NetpollError, net


def run(coro, backend_name):
    return netpoll.run(coro, backend=backend_name)


async def pair():
    ln = net.listen("tcp", "127.0.0.1:0")
    conn = await net.dial("tcp", str(ln.addr))
    peer = await ln.accept()
    return ln, conn, peer


def later(delay, fn, *args):
    """Run fn(*args) in a new thread after delay; the thread's outcome. A
    close or set_deadline there waits for the runtime to perform it, so the
    runtime's thread must not block in join: await to_thread(t.join)."""
    out = {}

    def body():
        time.sleep(delay)
        try:
            out["result"] = fn(*args)
            out["thread"] = threading.get_ident()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=body)
    t.start()
    return t, out


def test_close_from_a_thread_wakes_the_parked_reader(backend_name):
    async def main():
        ln, conn, peer = await pair()
        try:
            t, out = later(0.05, conn.close)
            with pytest.raises(ClosedError):
                await conn.read(bytearray(16))
            await netpoll.to_thread(t.join)
            return out, conn.closed
        finally:
            conn.close()
            peer.close()
            ln.close()

    out, closed = run(main(), backend_name)
    assert "error" not in out, out
    assert closed


def test_set_deadline_from_a_thread_wakes_the_parked_reader(backend_name):
    async def main():
        ln, conn, peer = await pair()
        try:
            t, out = later(0.05, conn.set_read_deadline, 0)
            with pytest.raises(TimeoutError):
                await conn.read(bytearray(16))
            await netpoll.to_thread(t.join)
            # The descriptor still works once the deadline is cleared.
            t2, _ = later(0, conn.set_read_deadline, None)
            await netpoll.to_thread(t2.join)
            await peer.write(b"hi")
            buf = bytearray(16)
            n = await conn.read(buf)
            return out, bytes(buf[:n])
        finally:
            conn.close()
            peer.close()
            ln.close()

    out, data = run(main(), backend_name)
    assert "error" not in out, out
    assert data == b"hi"


def test_listener_close_from_a_thread_wakes_accept(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        t, out = later(0.05, ln.close)
        with pytest.raises(ClosedError):
            await ln.accept()
        await netpoll.to_thread(t.join)
        return out

    assert "error" not in run(main(), backend_name)


def test_close_twice_from_a_thread_is_a_no_op(backend_name):
    async def main():
        ln, conn, peer = await pair()
        try:
            for _ in range(2):
                t, out = later(0, conn.close)
                await netpoll.to_thread(t.join)
                assert "error" not in out, out
            return conn.closed
        finally:
            peer.close()
            ln.close()

    assert run(main(), backend_name) is True


def test_descriptor_of_another_runtime_errors_at_the_await(backend_name):
    box = {}
    ready = threading.Event()

    async def owner():
        rt = netpoll.current_runtime()
        box["rt"] = rt
        box["ln"], box["conn"], box["peer"] = await pair()
        box["stop"] = netpoll.Chan()
        with rt.hold():
            ready.set()
            await box["stop"].recv2()
        for k in ("conn", "peer", "ln"):
            box[k].close()

    t = threading.Thread(target=lambda: netpoll.run(owner(), backend=backend_name))
    t.start()
    assert ready.wait(5)

    async def main():
        with pytest.raises(NetpollError, match="another runtime"):
            await box["conn"].read(bytearray(8))
        with pytest.raises(NetpollError, match="another runtime"):
            await box["ln"].accept()
        return "errors"

    try:
        assert run(main(), backend_name) == "errors"
    finally:
        box["rt"].call_soon_threadsafe(box["stop"].close)
        t.join(5)
    assert not t.is_alive()


def test_hold_prevents_the_false_deadlock(backend_name):
    async def main(use_hold):
        rt = netpoll.current_runtime()
        ev = netpoll.Event()
        hold = rt.hold() if use_hold else None

        def work():
            time.sleep(0.05)
            try:
                rt.call_soon_threadsafe(ev.set)
            except RuntimeError:
                assert hold is None  # the runtime ended in a deadlock
            if hold is not None:
                hold.release()

        threading.Thread(target=work).start()
        await ev.wait()
        return "woken"

    assert run(main(True), backend_name) == "woken"
    with pytest.raises(netpoll.DeadlockError):
        run(main(False), backend_name)
    time.sleep(0.1)  # let the last thread post to the ended runtime and fail


def test_released_hold_lets_the_deadlock_be_seen(backend_name):
    async def main():
        rt = netpoll.current_runtime()
        with rt.hold() as h:
            threading.Timer(0.05, h.release).start()
            await netpoll.Chan().recv()

    with pytest.raises(netpoll.DeadlockError):
        run(main(), backend_name)


def test_failing_to_thread_raises_in_its_goroutine(backend_name, monkeypatch):
    def no_threads(self):
        raise RuntimeError("can't start new thread")

    async def main():
        monkeypatch.setattr(threading.Thread, "start", no_threads)
        try:
            with pytest.raises(RuntimeError, match="can't start new thread"):
                await netpoll.to_thread(time.sleep, 0)
        finally:
            monkeypatch.undo()
        assert await netpoll.to_thread(lambda: 7) == 7
        # The failed hand-off left nothing counted: a real deadlock is seen.
        await netpoll.Chan().recv()

    with pytest.raises(netpoll.DeadlockError):
        run(main(), backend_name)


def test_call_threadsafe_returns_the_outcome(backend_name):
    async def main():
        rt = netpoll.current_runtime()
        tid = threading.get_ident()

        def on_runtime(x):
            if x < 0:
                raise ValueError("negative")
            return x * 2, threading.get_ident() == tid

        def worker():
            ok = rt.call_threadsafe(on_runtime, 21)
            with pytest.raises(ValueError, match="negative"):
                rt.call_threadsafe(on_runtime, -1)
            return ok

        return await netpoll.to_thread(worker)

    assert run(main(), backend_name) == (42, True)


def test_posting_to_an_ended_runtime_fails(backend_name):
    async def main():
        return netpoll.current_runtime()

    rt = run(main(), backend_name)
    with pytest.raises(RuntimeError, match="ended"):
        rt.call_soon_threadsafe(print)
    coro = main()
    with pytest.raises(RuntimeError, match="ended"):
        rt.go_threadsafe(coro)
    coro.close()
    assert rt.call_threadsafe(lambda: "direct") == "direct"


def test_event_set_from_a_thread_goes_through_the_runtime(backend_name):
    async def main():
        rt = netpoll.current_runtime()
        ev = netpoll.Event()
        h = rt.hold()
        seen = []

        def work():
            time.sleep(0.03)
            ev.set()  # readies the waiter through the injection queue
            h.release()

        threading.Thread(target=work).start()
        await ev.wait()
        seen.append(threading.get_ident())
        return seen[0] == threading.get_ident()

    assert run(main(), backend_name) is True


def test_go_threadsafe_on_the_runtime(backend_name):
    async def child(ch):
        await ch.send(threading.get_ident())

    async def main():
        rt = netpoll.current_runtime()
        ch = netpoll.Chan(1)
        await netpoll.to_thread(rt.go_threadsafe, child(ch))
        return await ch.recv() == threading.get_ident()

    assert run(main(), backend_name) is True


def test_call_soon_threadsafe_error_leaves_run(backend_name):
    class Boom(Exception):
        pass

    def fail():
        raise Boom("posted")

    async def main():
        rt = netpoll.current_runtime()
        with rt.hold():
            await netpoll.to_thread(rt.call_soon_threadsafe, fail)
            await netpoll.Chan().recv()

    with pytest.raises(Boom, match="posted"):
        run(main(), backend_name)


def test_channel_from_a_plain_thread_is_a_clear_error(backend_name):
    async def main():
        ch = netpoll.Chan()
        h = netpoll.go(ch.recv2())
        await netpoll.sleep(0)
        errors = []

        def close_here():
            try:
                ch.close()
            except NetpollError as e:
                errors.append(str(e))

        await netpoll.to_thread(close_here)
        # The way to do it: hand the close to the runtime.
        await netpoll.to_thread(netpoll.current_runtime().call_soon_threadsafe, ch.close)
        return errors, await h

    errors, got = run(main(), backend_name)
    assert len(errors) == 1 and "call_soon_threadsafe" in errors[0]
    assert got == (None, False)


def test_goroutine_of_another_runtime_cannot_be_awaited(backend_name):
    box = {}
    ready = threading.Event()

    async def owner():
        rt = netpoll.current_runtime()
        box["rt"] = rt
        box["stop"] = netpoll.Chan()
        box["h"] = netpoll.go(box["stop"].recv2())
        with rt.hold():
            ready.set()
            await box["h"]

    t = threading.Thread(target=lambda: netpoll.run(owner(), backend=backend_name))
    t.start()
    assert ready.wait(5)

    async def main():
        with pytest.raises(NetpollError, match="goroutine of another runtime"):
            await box["h"]
        return "error"

    try:
        assert run(main(), backend_name) == "error"
    finally:
        box["rt"].call_soon_threadsafe(box["stop"].close)
        t.join(5)
    assert not t.is_alive()
