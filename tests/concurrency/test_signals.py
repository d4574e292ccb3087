"""Signals: delivered on channels (netpoll.signal), cancelling a context, and
a Python handler that closes a listener or sets an Event making run()
finish, whether netpoll blocks with no timer, with a timer, or under load,
and whichever thread the kernel hands the signal to."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

import netpoll
from netpoll import ClosedError, context, net, select
from netpoll import signal as npsignal


def run(coro, backend_name):
    return netpoll.run(coro, backend=backend_name)


def send_later(sig, to, delay=0.05):
    """Send sig after delay from a new thread: to the main thread (its
    blocking netpoll sees EINTR) or to the sending thread itself (the main
    thread learns of it only through the wakeup descriptor)."""
    main = threading.main_thread().ident

    def body():
        time.sleep(delay)
        signal.pthread_kill(main if to == "main" else threading.get_ident(), sig)

    t = threading.Thread(target=body)
    t.start()
    return t


@pytest.fixture
def usr1():
    old = signal.getsignal(signal.SIGUSR1)
    yield signal.SIGUSR1
    signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("to", ["main", "other"])
def test_notify_delivers_on_the_channel(backend_name, usr1, to):
    async def main():
        ch = netpoll.Chan(1)
        npsignal.notify(ch, usr1)
        t = send_later(usr1, to)
        v = await ch.recv()
        npsignal.stop(ch)
        await netpoll.to_thread(t.join)
        return v

    v = run(main(), backend_name)
    assert v == signal.SIGUSR1 and isinstance(v, signal.Signals)


def test_notify_to_self_with_kill(backend_name, usr1):
    async def main():
        ch = netpoll.Chan(1)
        npsignal.notify(ch, usr1, signal.SIGUSR2)
        os.kill(os.getpid(), usr1)
        v = await ch.recv()
        npsignal.stop(ch)
        return v

    old2 = signal.getsignal(signal.SIGUSR2)
    assert run(main(), backend_name) == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR2) is old2


def test_stop_restores_the_previous_handler(backend_name, usr1):
    seen = []
    mine = lambda s, f: seen.append(s)  # noqa: E731
    signal.signal(usr1, mine)

    async def main():
        a, b = netpoll.Chan(1), netpoll.Chan(1)
        npsignal.notify(a, usr1)
        npsignal.notify(b, usr1)
        installed = signal.getsignal(usr1)
        npsignal.stop(a)
        still = signal.getsignal(usr1)
        npsignal.stop(b)
        npsignal.stop(b)  # idempotent
        return installed is not mine, still is installed, signal.getsignal(usr1) is mine

    assert run(main(), backend_name) == (True, True, True)
    os.kill(os.getpid(), usr1)
    assert seen == [usr1]


def test_full_channel_drops_the_signal(backend_name, usr1):
    async def main():
        ch = netpoll.Chan(1)
        await ch.send("first")
        npsignal.notify(ch, usr1)
        os.kill(os.getpid(), usr1)
        await netpoll.sleep(0.05)
        got = [await ch.recv(), await select(ch.recv_case(), default=True)]
        npsignal.stop(ch)
        return got

    assert run(main(), backend_name) == ["first", (-1, None, False)]


def test_run_end_restores_handlers(backend_name, usr1):
    before = signal.getsignal(usr1)

    async def main():
        npsignal.notify(netpoll.Chan(1), usr1)
        return signal.getsignal(usr1) is not before

    assert run(main(), backend_name) is True
    assert signal.getsignal(usr1) is before


@pytest.mark.parametrize("to", ["main", "other"])
def test_notify_context_cancels(backend_name, usr1, to):
    async def main():
        ctx, stop = npsignal.notify_context(context.background(), usr1)
        t = send_later(usr1, to)
        await ctx.done().recv2()
        err = ctx.err()
        stop()
        await netpoll.to_thread(t.join)
        return type(err).__name__

    before = signal.getsignal(usr1)
    assert run(main(), backend_name) == "Canceled"
    assert signal.getsignal(usr1) is before


def test_bad_signals(backend_name):
    async def main():
        ch = netpoll.Chan(1)
        with pytest.raises(ValueError, match="at least one signal"):
            npsignal.notify(ch)
        with pytest.raises(ValueError, match="cannot be caught"):
            npsignal.notify(ch, signal.SIGKILL)
        with pytest.raises(TypeError, match="not a signal number"):
            npsignal.notify(ch, "SIGTERM")
        with pytest.raises(TypeError, match="not a netpoll.Chan"):
            npsignal.notify(object(), signal.SIGUSR1)
        return "ok"

    assert run(main(), backend_name) == "ok"


def test_notify_outside_the_main_thread_is_a_clear_error(backend_name):
    out = []

    async def main():
        with pytest.raises(RuntimeError, match="main thread"):
            npsignal.notify(netpoll.Chan(1), signal.SIGUSR1)
        out.append("ok")

    t = threading.Thread(target=lambda: run(main(), backend_name))
    t.start()
    t.join(10)
    assert out == ["ok"]


# ---------------------------------------------------------------------------
# Python handlers that ready goroutines
# ---------------------------------------------------------------------------


async def load(stop: netpoll.Event, counter: list[int]) -> None:
    # A TCP echo round trip per iteration, so the poller stays busy.
    ln = net.listen("tcp", "127.0.0.1:0")
    c = await net.dial("tcp", str(ln.addr))
    s = await ln.accept()
    buf = bytearray(64)
    try:
        while not stop.is_set():
            await c.write(b"ping")
            n = await s.read(buf)
            await s.write(buf[:n])
            await c.read(buf)
            counter[0] += 1
    finally:
        c.close()
        s.close()
        ln.close()


@pytest.mark.parametrize("to", ["main", "other"])
@pytest.mark.parametrize("setting", ["no timer", "timer", "load"])
def test_handler_closing_the_listener_ends_run(backend_name, usr1, to, setting):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        signal.signal(usr1, lambda s, f: ln.close())
        stop, counter = netpoll.Event(), [0]
        if setting == "timer":
            netpoll.go(netpoll.sleep(60))
        elif setting == "load":
            for _ in range(3):
                netpoll.go(load(stop, counter))
        t = send_later(usr1, to, 0.1)
        try:
            with pytest.raises(ClosedError):
                await ln.accept()
        finally:
            stop.set()
        await netpoll.to_thread(t.join)
        return counter[0]

    n = run(main(), backend_name)
    if setting == "load":
        assert n > 0


@pytest.mark.parametrize("to", ["main", "other"])
@pytest.mark.parametrize("setting", ["no timer", "timer", "load"])
def test_handler_setting_an_event_ends_run(backend_name, usr1, to, setting):
    async def main():
        ev = netpoll.Event()
        signal.signal(usr1, lambda s, f: ev.set())
        stop, counter = netpoll.Event(), [0]
        rt = netpoll.current_runtime()
        if setting == "timer":
            netpoll.go(netpoll.sleep(60))
        elif setting == "load":
            for _ in range(3):
                netpoll.go(load(stop, counter))
        # Only a signal can wake the runtime: hold it so that this is not
        # reported as a deadlock.
        with rt.hold():
            t = send_later(usr1, to, 0.1)
            await ev.wait()
        stop.set()
        await netpoll.to_thread(t.join)
        return "set"

    assert run(main(), backend_name) == "set"


def test_many_signals_under_load_all_seen(backend_name, usr1):
    # Every signal sent after the previous one was seen arrives.
    async def main():
        ch = netpoll.Chan(1)
        npsignal.notify(ch, usr1)
        stop, counter = netpoll.Event(), [0]
        hs = [netpoll.go(load(stop, counter)) for _ in range(2)]
        got = 0
        for k in range(20):
            t = send_later(usr1, "other" if k % 2 else "main", 0.001)
            await ch.recv()
            got += 1
            await netpoll.to_thread(t.join)
        stop.set()
        for h in hs:
            await h
        npsignal.stop(ch)
        return got

    assert run(main(), backend_name) == 20


def test_a_signal_while_the_runtime_looks_at_another_wakeup_fd_reaches_it(backend_name, usr1, monkeypatch):
    """Someone else's wakeup fd (asyncio's self-pipe) is set: the runtime
    finds that out at run() by putting its own in for a moment. A signal
    that lands in that moment must still reach theirs: asyncio learns of its
    signals only from that byte (a SIGCHLD lost there left a child never
    reaped). The signal is raised inside the swap, every time."""
    theirs_r, theirs_w = socket.socketpair()
    theirs_r.setblocking(False)
    theirs_w.setblocking(False)
    real = signal.set_wakeup_fd
    raised = []

    def swap(fd, **kw):
        old = real(fd, **kw)
        if old == theirs_w.fileno() and not raised:
            raised.append(fd)
            signal.raise_signal(usr1)  # the C handler runs now
        return old

    signal.signal(usr1, lambda *_: None)  # as asyncio's: the byte is what counts
    previous = real(theirs_w.fileno())
    monkeypatch.setattr(signal, "set_wakeup_fd", swap)
    try:
        async def main():
            await netpoll.sleep(0)

        run(main(), backend_name)
        assert raised, "run() did not look at the wakeup fd"
        assert real(-1) == theirs_w.fileno(), "theirs was not put back"
        assert theirs_r.recv(16) == bytes([usr1])
    finally:
        real(previous)
        theirs_r.close()
        theirs_w.close()


def test_a_failed_wakeup_pipe_registration_leaves_no_wakeup_fd_behind(monkeypatch):
    """run() puts its wakeup pipe in, then registers the pipe with the
    poller. When the registration fails (here select, which cannot take a
    descriptor past FD_SETSIZE, gets a pipe whose read end is numbered
    2000), the error leaves run(), the pipe is closed, and the process's
    wakeup fd is -1 again, not the closed pipe's."""
    import fcntl
    from netpoll import _syscall
    real = _syscall.pipe
    made = []

    def high_pipe():
        r, w = real()
        hi = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 2000)
        os.close(r)
        made.append((hi, w))
        return hi, w

    monkeypatch.setattr(_syscall, "pipe", high_pipe)
    assert signal.set_wakeup_fd(-1) == -1

    async def main():
        return None

    with pytest.raises(ValueError, match="FD_SETSIZE|1024"):
        netpoll.run(main(), backend="select")
    assert made, "run() made no wakeup pipe"
    assert signal.set_wakeup_fd(-1) == -1, "the failed run left its closed pipe as the wakeup fd"
    for fd in made[0]:
        with pytest.raises(OSError):
            os.fstat(fd)
