"""The goroutine scheduler: run, go, join, sleep, run-queue order and
fairness, timers, exceptions, deadlock detection, shutdown and interrupts."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

import netpoll
from netpoll import _sched

from support import fd_count
from support.runtime import Pair


# ---------------------------------------------------------------------------
# run and go
# ---------------------------------------------------------------------------


def test_run_returns_main_value(backend_name):
    async def main():
        return 42

    assert netpoll.run(main(), backend=backend_name) == 42


def test_run_raises_main_exception(backend_name):
    class Boom(Exception):
        pass

    async def main():
        raise Boom("main")

    with pytest.raises(Boom, match="main"):
        netpoll.run(main(), backend=backend_name)


def test_go_handle_returns_value(backend_name):
    async def child(x):
        await netpoll.sleep(0)
        return x * 2

    async def main():
        hs = [netpoll.go(child(i)) for i in range(10)]
        return [await h for h in hs]

    assert netpoll.run(main(), backend=backend_name) == [i * 2 for i in range(10)]


def test_go_handle_raises_goroutine_exception(backend_name):
    err = ValueError("from child")

    async def child():
        await netpoll.sleep(0)
        raise err

    async def main():
        h = netpoll.go(child())
        with pytest.raises(ValueError) as info:
            await h
        assert info.value is err
        # A finished handle can be awaited again and says the same.
        with pytest.raises(ValueError):
            await h
        with pytest.raises(ValueError):
            h.result()
        return "ok"

    assert netpoll.run(main(), backend=backend_name) == "ok"


def test_await_finished_handle_does_not_park(backend_name):
    async def child():
        return "v"

    async def main():
        h = netpoll.go(child())
        await netpoll.sleep(0)
        assert h.done
        assert h.result() == "v"
        return await h

    assert netpoll.run(main(), backend=backend_name) == "v"


def test_many_joiners_of_one_goroutine(backend_name):
    async def slow():
        await netpoll.sleep(0.01)
        return 7

    async def joiner(h):
        return await h

    async def main():
        h = netpoll.go(slow())
        js = [netpoll.go(joiner(h)) for _ in range(5)]
        return [await j for j in js]

    assert netpoll.run(main(), backend=backend_name) == [7] * 5


def test_go_rejects_non_coroutine(backend_name):
    async def main():
        with pytest.raises(TypeError):
            netpoll.go(lambda: None)
        return True

    assert netpoll.run(main(), backend=backend_name)


def test_go_outside_runtime_raises():
    async def f():
        pass

    coro = f()
    try:
        with pytest.raises(RuntimeError):
            netpoll.go(coro)
    finally:
        coro.close()


def test_nested_run_raises(backend_name):
    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError):
                netpoll.run(coro, backend=backend_name)
        finally:
            coro.close()
        return "ok"

    assert netpoll.run(main(), backend=backend_name) == "ok"


def test_foreign_awaitable_raises_type_error_in_goroutine(backend_name):
    class Foreign:
        def __await__(self):
            yield "not a netpoll trap"

    async def main():
        with pytest.raises(TypeError):
            await Foreign()
        return "ok"

    assert netpoll.run(main(), backend=backend_name) == "ok"


def test_runs_are_independent(backend_name):
    async def main(i):
        await netpoll.sleep(0)
        return i

    for i in range(3):
        assert netpoll.run(main(i), backend=backend_name) == i
    assert not _sched.running()


# ---------------------------------------------------------------------------
# The run queue: sleep(0), FIFO order, fairness, I/O vs a busy queue
# ---------------------------------------------------------------------------


def test_sleep0_yields(backend_name):
    log = []

    async def other():
        log.append("other")

    async def main():
        netpoll.go(other())
        log.append("main before")
        assert log == ["main before"]
        await netpoll.sleep(0)
        log.append("main after")
        return log

    assert netpoll.run(main(), backend=backend_name) == ["main before", "other", "main after"]


def test_negative_sleep_yields(backend_name):
    log = []

    async def other():
        log.append("other")

    async def main():
        netpoll.go(other())
        await netpoll.sleep(-1)
        return log

    assert netpoll.run(main(), backend=backend_name) == ["other"]


def test_sleep_nan_raises(backend_name):
    async def main():
        with pytest.raises(ValueError):
            await netpoll.sleep(float("nan"))
        return "ok"

    assert netpoll.run(main(), backend=backend_name) == "ok"


def test_goroutines_start_in_fifo_order(backend_name):
    order = []

    async def child(i):
        order.append(i)

    async def main():
        hs = [netpoll.go(child(i)) for i in range(200)]
        for h in hs:
            await h
        return order

    assert netpoll.run(main(), backend=backend_name) == list(range(200))


def test_sleep0_round_robin(backend_name):
    # Goroutines that all yield with sleep(0) take turns in the order they
    # were started, round after round.
    log = []
    n, rounds = 20, 5

    async def child(i):
        for r in range(rounds):
            log.append((r, i))
            await netpoll.sleep(0)

    async def main():
        hs = [netpoll.go(child(i)) for i in range(n)]
        for h in hs:
            await h
        return log

    got = netpoll.run(main(), backend=backend_name)
    assert got == [(r, i) for r in range(rounds) for i in range(n)]


def test_spinning_goroutine_does_not_starve_runnable_ones(backend_name):
    state = {"done": False, "spins": 0}

    async def spinner():
        for i in range(100_000):
            if state["done"]:
                state["spins"] = i
                return
            await netpoll.sleep(0)
        raise AssertionError("the other goroutine never ran")

    async def worker():
        for _ in range(10):
            await netpoll.sleep(0)
        state["done"] = True

    async def main():
        s = netpoll.go(spinner())
        netpoll.go(worker())
        await s
        return state["spins"]

    assert netpoll.run(main(), backend=backend_name) <= 20


def test_spinning_goroutine_does_not_starve_timers(backend_name):
    state = {"done": False}

    async def spinner():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            if state["done"]:
                return time.monotonic() - t0
            await netpoll.sleep(0)
        raise AssertionError("a 10 ms sleeper was starved for 2 s by sleep(0)")

    async def sleeper():
        await netpoll.sleep(0.01)
        state["done"] = True

    async def main():
        netpoll.go(sleeper())
        return await netpoll.go(spinner())

    elapsed = netpoll.run(main(), backend=backend_name)
    assert 0.01 <= elapsed < 1.0


def test_busy_run_queue_does_not_starve_io(backend_name):
    # The reader parks on an empty socket; the spinner makes it readable and
    # then keeps the run queue busy. The scheduler must still look at the
    # poller and wake the reader long before the spinner is done.
    N = 20_000
    state = {"woken_at": None, "i": 0}

    async def reader(p):
        data = await p.read()
        state["woken_at"] = state["i"]
        return data

    async def spinner(p):
        p.b.send(b"x")
        for i in range(N):
            state["i"] = i
            await netpoll.sleep(0)

    async def main():
        with Pair() as p:
            r = netpoll.go(reader(p))
            await netpoll.sleep(0)  # the reader is parked now
            assert p.pd.sema("r") is r
            s = netpoll.go(spinner(p))
            await s
            assert await r == b"x"
        return state["woken_at"]

    woken_at = netpoll.run(main(), backend=backend_name)
    assert woken_at is not None and woken_at < 100, woken_at


# ---------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.001, 0.02, 0.05])
def test_sleep_lasts_at_least_requested(backend_name, seconds):
    async def main():
        t0 = time.monotonic()
        await netpoll.sleep(seconds)
        return time.monotonic() - t0

    elapsed = netpoll.run(main(), backend=backend_name)
    assert seconds <= elapsed < seconds + 0.5


def test_sleepers_wake_in_deadline_order(backend_name):
    order = []

    async def sleeper(d):
        await netpoll.sleep(d)
        order.append(d)

    async def main():
        ds = [0.03, 0.01, 0.05, 0.02, 0.04]
        hs = [netpoll.go(sleeper(d)) for d in ds]
        for h in hs:
            await h
        return order

    assert netpoll.run(main(), backend=backend_name) == [0.01, 0.02, 0.03, 0.04, 0.05]


def test_now_is_monotonic_seconds(backend_name):
    async def main():
        a = netpoll.now()
        await netpoll.sleep(0.01)
        return netpoll.now() - a

    assert 0.01 <= netpoll.run(main(), backend=backend_name) < 0.5
    assert abs(netpoll.now() - time.monotonic()) < 0.1


def test_100k_pending_timers_stay_cheap(backend_name):
    # 100,000 goroutines each sleeping a random 0-100 ms: the timer heap
    # holds them all at once, and they must all finish in bounded time,
    # none early.
    N = 100_000
    rng = random.Random(1234)
    delays = [rng.uniform(0.0, 0.1) for _ in range(N)]
    early = []

    async def sleeper(d):
        t0 = time.monotonic()
        await netpoll.sleep(d)
        if time.monotonic() - t0 < d:
            early.append(d)

    async def main():
        wg = netpoll.WaitGroup()

        async def one(d):
            try:
                await sleeper(d)
            finally:
                wg.done()

        wg.add(N)
        for d in delays:
            netpoll.go(one(d))
        await wg.wait()
        return True

    t0 = time.monotonic()
    assert netpoll.run(main(), backend=backend_name)
    elapsed = time.monotonic() - t0
    assert not early, f"{len(early)} sleepers woke early"
    assert elapsed < 8.0, f"100k sleepers took {elapsed:.2f}s"


def test_cancelled_sleeper_leaves_timer_heap(backend_name):
    # A goroutine closed while asleep must take its timer with it; otherwise
    # a long sleep would keep later runs busy, or wake a dead goroutine.
    async def sleeper():
        await netpoll.sleep(30)

    async def main():
        netpoll.go(sleeper())
        await netpoll.sleep(0)
        return _sched.current()

    t0 = time.monotonic()
    sched = netpoll.run(main(), backend=backend_name)
    assert time.monotonic() - t0 < 1.0
    assert len(sched.timers) == 0


# ---------------------------------------------------------------------------
# Exceptions that escape goroutines
# ---------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("woken_by", ["run queue", "timer", "poller", "chan", "thread"])
def test_exception_in_dropped_goroutine_ends_run(backend_name, woken_by):
    # However the doomed goroutine was last woken, nothing in the scheduler
    # may keep its handle alive: run() must raise as soon as it dies, not
    # when main's long sleep ends.
    async def bad(p, ch):
        if woken_by == "timer":
            await netpoll.sleep(0.01)
        elif woken_by == "poller":
            await p.read()
        elif woken_by == "chan":
            await ch.recv()
        elif woken_by == "thread":
            await netpoll.to_thread(time.sleep, 0.01)
        raise Boom(f"dropped, woken by {woken_by}")

    async def poke(p, ch):
        await netpoll.sleep(0.01)
        if woken_by == "poller":
            p.b.send(b"x")
        elif woken_by == "chan":
            await ch.send(1)

    pairs = []

    async def main():
        p, ch = Pair(), netpoll.Chan()
        pairs.append(p)
        netpoll.go(bad(p, ch))  # handle dropped at once
        netpoll.go(poke(p, ch))
        await netpoll.sleep(2)
        return "main finished"

    t0 = time.monotonic()
    try:
        with pytest.raises(Boom, match="dropped"):
            netpoll.run(main(), backend=backend_name)
    finally:
        for p in pairs:
            p.close()
    assert time.monotonic() - t0 < 1.0, "run() should end as soon as the exception is lost"


def test_exception_received_by_awaiter_is_not_reraised(backend_name):
    async def bad():
        raise Boom("received")

    async def main():
        h = netpoll.go(bad())
        await netpoll.sleep(0.01)  # it has failed by now, nobody waiting yet
        assert h.done
        try:
            await h
        except Boom as e:
            return str(e)
        return "no exception"

    assert netpoll.run(main(), backend=backend_name) == "received"


def test_exception_received_by_parked_joiner_is_not_reraised(backend_name):
    async def bad():
        await netpoll.sleep(0.01)
        raise Boom("joined")

    async def joiner(h):
        try:
            await h
        except Boom:
            return "caught"

    async def main():
        h = netpoll.go(bad())
        j = netpoll.go(joiner(h))
        del h
        return await j

    assert netpoll.run(main(), backend=backend_name) == "caught"


def test_exception_in_kept_but_unawaited_handle_raised_at_end(backend_name):
    async def bad():
        raise Boom("never awaited")

    async def main():
        h = netpoll.go(bad())
        await netpoll.sleep(0.01)
        return h  # kept alive, never awaited

    with pytest.raises(Boom, match="never awaited"):
        netpoll.run(main(), backend=backend_name)


# ---------------------------------------------------------------------------
# Deadlock detection
# ---------------------------------------------------------------------------


def test_deadlock_on_chan_nobody_sends_to(backend_name):
    async def main():
        ch = netpoll.Chan()
        await ch.recv()

    t0 = time.monotonic()
    with pytest.raises(netpoll.DeadlockError):
        netpoll.run(main(), backend=backend_name)
    assert time.monotonic() - t0 < 1.0


def test_deadlock_with_every_goroutine_parked(backend_name):
    async def stuck(ch):
        await ch.recv()

    async def main():
        a, b = netpoll.Chan(), netpoll.Chan()
        netpoll.go(stuck(a))
        netpoll.go(stuck(b))
        await netpoll.sleep(0.01)
        await netpoll.Event().wait()

    with pytest.raises(netpoll.DeadlockError):
        netpoll.run(main(), backend=backend_name)


def test_deadlock_error_is_a_runtime_error(backend_name):
    assert issubclass(netpoll.DeadlockError, RuntimeError)


def test_no_deadlock_while_waiting_for_thread(backend_name):
    async def main():
        return await netpoll.to_thread(lambda: (time.sleep(0.1), "thread done")[1])

    assert netpoll.run(main(), backend=backend_name) == "thread done"


def test_no_deadlock_while_parked_in_poll_descriptor(backend_name):
    # No timer, no runnable goroutine: only the parked reader. A plain thread
    # (not a netpoll hand-off) makes the socket readable later.
    async def main():
        p = Pair()
        t = threading.Timer(0.1, p.b.send, args=(b"late",))
        try:
            t0 = time.monotonic()  # before start: the timer counts from there
            t.start()
            data = await p.read()
            return data, time.monotonic() - t0
        finally:
            t.join()
            p.close()

    data, elapsed = netpoll.run(main(), backend=backend_name)
    assert data == b"late"
    assert 0.09 <= elapsed < 2.0


def test_no_deadlock_while_parked_reader_has_a_deadline(backend_name):
    from support import after

    async def main():
        with Pair() as p:
            p.set_deadline(after(50), "r")
            with pytest.raises(netpoll.DeadlineExceededError):
                await p.read()
        return "ok"

    assert netpoll.run(main(), backend=backend_name) == "ok"


# ---------------------------------------------------------------------------
# Shutdown: leftovers are closed, finally blocks run, nothing leaks
# ---------------------------------------------------------------------------


def test_leftover_goroutines_closed_when_main_returns(backend_name):
    finalized = []

    async def sleeper():
        try:
            await netpoll.sleep(60)
        finally:
            finalized.append("sleeper")

    async def chan_waiter(ch):
        try:
            await ch.recv()
        finally:
            finalized.append("chan")

    async def never_started():
        try:
            finalized.append("started")  # must not happen
        finally:
            pass

    async def main():
        netpoll.go(sleeper())
        netpoll.go(chan_waiter(netpoll.Chan()))
        await netpoll.sleep(0)
        netpoll.go(never_started())
        return "main"

    before = fd_count()
    t0 = time.monotonic()
    assert netpoll.run(main(), backend=backend_name) == "main"
    assert time.monotonic() - t0 < 1.0
    assert sorted(finalized) == ["chan", "sleeper"]
    assert fd_count() == before


def test_leftover_poll_waiters_closed_without_error_or_leak(backend_name):
    finalized = []

    async def reader(p, cleanup):
        try:
            await p.read()
        finally:
            finalized.append("reader")
            if cleanup:
                # The FD layer's close, run from the finally of a closed goroutine.
                p.close()

    async def writer(p):
        try:
            p.fill()
            await p.write(b"more")
        finally:
            finalized.append("writer")

    pairs = []

    async def main():
        p1, p2, p3 = Pair(), Pair(), Pair()
        pairs.extend([p1, p2, p3])
        netpoll.go(reader(p1, True))
        netpoll.go(reader(p2, False))
        netpoll.go(writer(p3))
        await netpoll.sleep(0)
        assert _sched.current().backend.waiters == 3
        return "main"

    before = fd_count()
    try:
        assert netpoll.run(main(), backend=backend_name) == "main"
        assert sorted(finalized) == ["reader", "reader", "writer"]
        assert pairs[0].closed
    finally:
        for p in pairs:
            if not p.closed:
                p.a.close()
                p.b.close()
    assert fd_count() == before


@pytest.mark.parametrize("ending", ["lost exception", "deadlock", "KeyboardInterrupt"])
def test_main_is_closed_when_run_raises(backend_name, ending):
    # run() ends with an error while main is still parked. main must be
    # closed like every other leftover goroutine, so that its finally blocks
    # (which close its descriptors) run before run() returns; otherwise its
    # sockets stay open, pinned by the scheduler's timers or a PollDesc in
    # the global pollcache.
    finalized = []
    pairs = []
    main_ident = threading.get_ident()

    async def bad():
        raise Boom("lost")

    async def main():
        p = Pair()
        pairs.append(p)
        try:
            if ending == "lost exception":
                netpoll.go(bad())
                await netpoll.sleep(2)
            elif ending == "deadlock":
                await netpoll.Chan().recv()
            else:
                threading.Timer(0.05, signal.pthread_kill, args=(main_ident, signal.SIGINT)).start()
                await netpoll.sleep(2)
        finally:
            finalized.append("main")
            p.close()

    expected = {"lost exception": Boom, "deadlock": netpoll.DeadlockError,
                "KeyboardInterrupt": KeyboardInterrupt}[ending]
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = fd_count()
    try:
        with pytest.raises(expected):
            netpoll.run(main(), backend=backend_name)
        ran, leaked = list(finalized), fd_count() - before
    finally:
        signal.signal(signal.SIGINT, old)
        for p in pairs:
            p.close()
    assert ran == ["main"], "main's finally did not run before run() returned"
    assert leaked == 0


def test_run_closes_backend_after_main_error(backend_name):
    async def main():
        await netpoll.sleep(0)
        raise Boom("x")

    before = fd_count()
    with pytest.raises(Boom):
        netpoll.run(main(), backend=backend_name)
    assert fd_count() == before


def test_run_closes_backend_after_deadlock(backend_name):
    async def main():
        await netpoll.Chan().recv()

    before = fd_count()
    with pytest.raises(netpoll.DeadlockError):
        netpoll.run(main(), backend=backend_name)
    assert fd_count() == before


# ---------------------------------------------------------------------------
# KeyboardInterrupt during a blocking netpoll
# ---------------------------------------------------------------------------


def test_keyboard_interrupt_reaches_caller_promptly(backend_name):
    main_ident = threading.get_ident()
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    finalized = []

    def interrupt():
        time.sleep(0.1)
        signal.pthread_kill(main_ident, signal.SIGINT)

    async def bystander():
        try:
            await netpoll.sleep(30)
        finally:
            finalized.append("bystander")

    async def main():
        netpoll.go(bystander())
        t = threading.Thread(target=interrupt)
        t.start()
        try:
            await netpoll.sleep(10)
        finally:
            t.join()
        return "slept"

    before = fd_count()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            netpoll.run(main(), backend=backend_name)
    finally:
        signal.signal(signal.SIGINT, old)
    assert time.monotonic() - t0 < 2.0
    assert fd_count() == before, "the runtime's poller leaked"
    assert finalized == ["bystander"]
    assert not _sched.running()

    # The thread is usable for another run afterwards.
    async def again():
        await netpoll.sleep(0.001)
        return "again"

    assert netpoll.run(again(), backend=backend_name) == "again"


def test_keyboard_interrupt_while_parked_on_descriptor(backend_name):
    main_ident = threading.get_ident()
    old = signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt():
        time.sleep(0.1)
        signal.pthread_kill(main_ident, signal.SIGINT)

    pairs = []

    async def main():
        p = Pair()
        pairs.append(p)
        threading.Thread(target=interrupt, daemon=True).start()
        await p.read()

    before = fd_count()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            netpoll.run(main(), backend=backend_name)
    finally:
        signal.signal(signal.SIGINT, old)
        for p in pairs:
            p.a.close()
            p.b.close()
    assert time.monotonic() - t0 < 2.0
    assert fd_count() == before


# ---------------------------------------------------------------------------
# Thread hand-off
# ---------------------------------------------------------------------------


def test_to_thread_returns_value(backend_name):
    def work(a, b):
        assert threading.current_thread() is not threading.main_thread()
        time.sleep(0.01)
        return a + b

    async def main():
        return await netpoll.to_thread(work, 2, 3)

    assert netpoll.run(main(), backend=backend_name) == 5


def test_to_thread_raises_exception(backend_name):
    def work():
        raise Boom("in thread")

    async def main():
        with pytest.raises(Boom, match="in thread"):
            await netpoll.to_thread(work)
        return "ok"

    assert netpoll.run(main(), backend=backend_name) == "ok"


def test_to_thread_many_concurrent(backend_name):
    def work(i):
        time.sleep(0.02)
        return i

    async def main():
        hs = [netpoll.go(netpoll.to_thread(work, i)) for i in range(20)]
        t0 = time.monotonic()
        res = [await h for h in hs]
        return res, time.monotonic() - t0

    res, elapsed = netpoll.run(main(), backend=backend_name)
    assert res == list(range(20))
    assert elapsed < 1.0  # they ran in parallel, not one after the other


def test_to_thread_keeps_other_goroutines_running(backend_name):
    ticks = []

    async def ticker():
        for i in range(5):
            await netpoll.sleep(0.01)
            ticks.append(i)

    async def main():
        netpoll.go(ticker())
        await netpoll.to_thread(time.sleep, 0.2)
        return list(ticks)

    assert netpoll.run(main(), backend=backend_name) == [0, 1, 2, 3, 4]


def test_go_threadsafe_starts_goroutine(backend_name):
    got = []

    async def from_thread(ev, tid):
        got.append(("goroutine in runtime thread", threading.get_ident() == tid))
        ev.set()

    async def main():
        rt = netpoll.current_runtime()
        ev = netpoll.Event()
        tid = threading.get_ident()

        def other():
            time.sleep(0.02)
            rt.go_threadsafe(from_thread(ev, tid))

        t = threading.Thread(target=other)
        t.start()
        # Keep the runtime alive with a bounded polling loop: an Event alone
        # would be a deadlock, since a bare thread promises nothing.
        for _ in range(200):
            if ev.is_set():
                break
            await netpoll.sleep(0.01)
        t.join()
        await ev.wait()
        return got

    assert netpoll.run(main(), backend=backend_name) == [("goroutine in runtime thread", True)]


def test_go_threadsafe_wakes_a_blocked_poller(backend_name):
    # The runtime sits in netpoll with a long timer; a goroutine started
    # from another thread must run promptly (netpollbreak), not after it.
    started = []

    async def from_thread():
        started.append(time.monotonic())

    async def main():
        rt = netpoll.current_runtime()
        t0 = time.monotonic()
        threading.Timer(0.05, rt.go_threadsafe, args=(from_thread(),)).start()
        for _ in range(100):
            if started:
                break
            await netpoll.sleep(0.5)  # long naps: only a break cuts them short
        return started[0] - t0 if started else None

    delay = netpoll.run(main(), backend=backend_name)
    assert delay is not None and 0.05 <= delay < 0.4


def test_go_threadsafe_from_to_thread_worker(backend_name):
    async def child(ch):
        await ch.send("hello")

    async def main():
        rt = netpoll.current_runtime()
        ch = netpoll.Chan(1)
        await netpoll.to_thread(rt.go_threadsafe, child(ch))
        return await ch.recv()

    assert netpoll.run(main(), backend=backend_name) == "hello"
