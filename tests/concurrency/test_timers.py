"""after, Timer and Ticker: firing, stop and reset with Go 1.23's guarantee
that no stale value is received after either, and many pending timers."""

from __future__ import annotations

import pytest

import netpoll
from netpoll import Chan, select


def run(coro, backend_name):
    return netpoll.run(coro, backend=backend_name)


async def nothing_in(ch: Chan) -> bool:
    return await select(ch.recv_case(), default=True) == (-1, None, False)


def test_after_receives_now_once(backend_name):
    async def main():
        t0 = netpoll.now()
        c = netpoll.after(0.02)
        v = await c.recv()
        await netpoll.sleep(0.04)
        return v - t0, await nothing_in(c)

    took, empty = run(main(), backend_name)
    assert 0.015 <= took < 5
    assert empty, "after delivered twice"


def test_timer_stop_before_it_fires(backend_name):
    async def main():
        t = netpoll.Timer(0.02)
        stopped = t.stop()
        await netpoll.sleep(0.05)
        return stopped, await nothing_in(t.c), t.stop()

    assert run(main(), backend_name) == (True, True, False)


def test_timer_stop_after_it_fired_drops_the_unreceived_value(backend_name):
    async def main():
        t = netpoll.Timer(0.01)
        await netpoll.sleep(0.04)  # fired; its value waits in t.c
        stopped = t.stop()
        return stopped, await nothing_in(t.c)

    assert run(main(), backend_name) == (True, True)


def test_timer_stop_after_receive_reports_false(backend_name):
    async def main():
        t = netpoll.Timer(0.01)
        await t.c.recv()
        return t.stop()

    assert run(main(), backend_name) is False


def test_timer_reset_gives_no_stale_value(backend_name):
    async def main():
        t = netpoll.Timer(0.01)
        await netpoll.sleep(0.04)  # the first expiry is unreceived
        t0 = netpoll.now()
        was = t.reset(0.05)
        v = await t.c.recv()
        return was, v - t0

    was, waited = run(main(), backend_name)
    assert was is True
    assert waited >= 0.045, "received the value of the expiry before the reset"


def test_timer_reset_moves_a_pending_timer(backend_name):
    async def main():
        t = netpoll.Timer(10)
        t0 = netpoll.now()
        assert t.reset(0.02) is True
        await t.c.recv()
        return netpoll.now() - t0

    assert 0.015 <= run(main(), backend_name) < 5


def test_timer_zero_fires_at_once(backend_name):
    async def main():
        t = netpoll.Timer(0)
        await netpoll.sleep(0)
        return await t.c.recv() <= netpoll.now()

    assert run(main(), backend_name) is True


def test_ticker_ticks_and_stops(backend_name):
    async def main():
        tk = netpoll.Ticker(0.01)
        vs = [await tk.c.recv() for _ in range(3)]
        tk.stop()
        await netpoll.sleep(0.05)
        return vs, await nothing_in(tk.c)

    vs, empty = run(main(), backend_name)
    assert vs == sorted(vs) and len(set(vs)) == 3
    assert empty, "a stopped ticker ticked"


def test_ticker_drops_ticks_for_a_slow_receiver(backend_name):
    async def main():
        tk = netpoll.Ticker(0.005)
        await netpoll.sleep(0.1)  # about 20 periods
        n = 0
        while not await nothing_in(tk.c):
            n += 1
        tk.stop()
        return n

    assert run(main(), backend_name) == 1


def test_ticker_reset_changes_the_period_without_stale_tick(backend_name):
    async def main():
        tk = netpoll.Ticker(0.01)
        await netpoll.sleep(0.03)  # a tick waits
        tk.reset(0.05)
        t0 = netpoll.now()
        await tk.c.recv()
        took = netpoll.now() - t0
        tk.stop()
        return took

    assert run(main(), backend_name) >= 0.045


def test_bad_durations(backend_name):
    async def main():
        for bad in ("1", None, True):
            with pytest.raises(TypeError, match="seconds must be a number"):
                netpoll.Timer(bad)
        with pytest.raises(ValueError, match="NaN"):
            netpoll.after(float("nan"))
        for bad in (0, -1):
            with pytest.raises(ValueError, match="non-positive interval"):
                netpoll.Ticker(bad)
        tk = netpoll.Ticker(1)
        with pytest.raises(ValueError, match="non-positive interval"):
            tk.reset(0)
        tk.stop()
        return "ok"

    assert run(main(), backend_name) == "ok"


def test_timer_needs_a_runtime():
    with pytest.raises(RuntimeError, match="no netpoll runtime"):
        netpoll.Timer(1)


def test_hundred_thousand_pending_timers(backend_name):
    # All on the one heap: the earliest fires first, stopping the rest
    # leaves the heap empty, and run() does not wait for any of them.
    async def main():
        ts = [netpoll.Timer(60 + i * 1e-3) for i in range(100_000)]
        early = netpoll.Timer(0.01)
        rt = netpoll.current_runtime()
        pending = len(rt.timers)
        await early.c.recv()
        stopped = sum(t.stop() for t in ts)
        return pending, stopped, len(rt.timers)

    assert run(main(), backend_name) == (100_001, 100_000, 0)
