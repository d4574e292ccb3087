"""Chan, Event and WaitGroup under the scheduler."""

from __future__ import annotations

import pytest

import netpoll
from netpoll import Chan, ChannelClosed, Event, WaitGroup

from support import run


# ---------------------------------------------------------------------------
# Chan
# ---------------------------------------------------------------------------


def test_chan_rejects_bad_capacity():
    for cap in (-1, 1.5, "2"):
        with pytest.raises(ValueError):
            Chan(cap)


def test_unbuffered_send_waits_for_receiver(backend_name):
    log = []

    async def sender(ch):
        log.append("send start")
        await ch.send("v")
        log.append("send done")

    async def main():
        ch = Chan()
        s = netpoll.go(sender(ch))
        await netpoll.sleep(0.01)
        assert log == ["send start"], "an unbuffered send returned with no receiver"
        v = await ch.recv()
        await s
        return v, log

    v, log_ = run(backend_name, main)
    assert v == "v"
    assert log_ == ["send start", "send done"]


def test_unbuffered_recv_waits_for_sender(backend_name):
    async def sender(ch):
        await netpoll.sleep(0.01)
        await ch.send(1)

    async def main():
        ch = Chan()
        netpoll.go(sender(ch))
        return await ch.recv()

    assert run(backend_name, main) == 1


def test_buffered_chan_fifo_and_capacity(backend_name):
    async def main():
        ch = Chan(3)
        for i in range(3):
            await ch.send(i)  # never blocks
        assert len(ch) == 3
        blocked = netpoll.go(ch.send(3))
        await netpoll.sleep(0)
        assert not blocked.done, "send on a full channel must block"
        got = [await ch.recv()]
        await netpoll.sleep(0)
        assert blocked.done
        got += [await ch.recv() for _ in range(3)]
        assert len(ch) == 0
        return got

    assert run(backend_name, main) == [0, 1, 2, 3]


def test_many_senders_and_receivers(backend_name):
    N, M = 10, 50

    async def producer(ch, k):
        for i in range(M):
            await ch.send((k, i))
            if i % 7 == 0:
                await netpoll.sleep(0)

    async def consumer(ch, out):
        async for v in ch:
            out.append(v)

    async def main():
        for cap, consumers in ((0, 1), (1, 1), (5, 1), (0, 3), (1, 3), (5, 3)):
            ch = Chan(cap)
            out = []
            cs = [netpoll.go(consumer(ch, out)) for _ in range(consumers)]
            ps = [netpoll.go(producer(ch, k)) for k in range(N)]
            for p in ps:
                await p
            ch.close()
            for c in cs:
                await c
            assert sorted(out) == [(k, i) for k in range(N) for i in range(M)]
            if consumers > 1:
                continue  # several consumers may append in any order
            # Each producer's values arrive in order.
            for k in range(N):
                assert [i for kk, i in out if kk == k] == list(range(M))
        return "ok"

    assert run(backend_name, main) == "ok"


def test_close_wakes_receivers(backend_name):
    async def recv(ch):
        with pytest.raises(ChannelClosed):
            await ch.recv()
        return "closed"

    async def recv2(ch):
        return await ch.recv2()

    async def main():
        ch = Chan()
        rs = [netpoll.go(recv(ch)) for _ in range(3)]
        r2 = netpoll.go(recv2(ch))
        await netpoll.sleep(0)
        ch.close()
        return [await r for r in rs], await r2

    assert run(backend_name, main) == (["closed"] * 3, (None, False))


def test_close_wakes_blocked_senders(backend_name):
    async def send(ch, v):
        with pytest.raises(ChannelClosed):
            await ch.send(v)
        return "closed"

    async def main():
        ch = Chan(1)
        await ch.send("buffered")
        ss = [netpoll.go(send(ch, i)) for i in range(3)]
        await netpoll.sleep(0)
        assert not any(s.done for s in ss)
        ch.close()
        res = [await s for s in ss]
        # What was buffered before close is still delivered, then closed.
        assert await ch.recv2() == ("buffered", True)
        assert await ch.recv2() == (None, False)
        return res

    assert run(backend_name, main) == ["closed"] * 3


def test_send_on_closed_and_double_close(backend_name):
    async def main():
        ch = Chan(2)
        ch.close()
        with pytest.raises(ChannelClosed):
            await ch.send(1)
        with pytest.raises(ChannelClosed):
            ch.close()
        with pytest.raises(ChannelClosed):
            await ch.recv()
        return "ok"

    assert run(backend_name, main) == "ok"


def test_async_for_drains_then_stops(backend_name):
    async def producer(ch):
        for i in range(5):
            await ch.send(i)
        ch.close()

    async def main():
        ch = Chan(2)
        netpoll.go(producer(ch))
        return [v async for v in ch]

    assert run(backend_name, main) == [0, 1, 2, 3, 4]


def test_closed_waiter_leaves_chan_queue(backend_name):
    # A goroutine closed while parked (run() ending) is taken out of the
    # channel's queue; a later send must not hand a value to it.
    async def main():
        ch = Chan()
        r = netpoll.go(ch.recv())
        await netpoll.sleep(0)
        return ch, r

    ch, r = run(backend_name, main)
    assert not ch._recvq, "a dead receiver is still queued"


def test_chan_value_passes_to_parked_receiver_in_order(backend_name):
    async def recv(ch, out):
        out.append(await ch.recv())

    async def main():
        ch = Chan()
        out = []
        rs = [netpoll.go(recv(ch, out)) for _ in range(5)]
        await netpoll.sleep(0)
        for i in range(5):
            await ch.send(i)
        for r in rs:
            await r
        return out

    assert run(backend_name, main) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------
# Event
# ---------------------------------------------------------------------------


def test_event_set_wakes_all_waiters(backend_name):
    async def waiter(ev, out, i):
        await ev.wait()
        out.append(i)

    async def main():
        ev = Event()
        out = []
        ws = [netpoll.go(waiter(ev, out, i)) for i in range(5)]
        await netpoll.sleep(0.01)
        assert out == [] and not ev.is_set()
        ev.set()
        assert ev.is_set()
        for w in ws:
            await w
        await ev.wait()  # already set: returns at once
        return sorted(out)

    assert run(backend_name, main) == [0, 1, 2, 3, 4]


def test_event_set_from_timer_goroutine(backend_name):
    async def setter(ev):
        await netpoll.sleep(0.02)
        ev.set()

    async def main():
        ev = Event()
        netpoll.go(setter(ev))
        t0 = netpoll.now()
        await ev.wait()
        return netpoll.now() - t0

    assert 0.02 <= run(backend_name, main) < 0.5


# ---------------------------------------------------------------------------
# WaitGroup
# ---------------------------------------------------------------------------


def test_waitgroup_waits_for_all(backend_name):
    done = []

    async def worker(wg, i):
        try:
            await netpoll.sleep(0.001 * (i % 5))
            done.append(i)
        finally:
            wg.done()

    async def main():
        wg = WaitGroup()
        for i in range(20):
            wg.add(1)
            netpoll.go(worker(wg, i))
        await wg.wait()
        return sorted(done)

    assert run(backend_name, main) == list(range(20))


def test_waitgroup_zero_does_not_park_and_negative_raises(backend_name):
    async def main():
        wg = WaitGroup()
        await wg.wait()
        with pytest.raises(ValueError):
            wg.done()
        wg.add(2)
        ws = [netpoll.go(wg.wait()) for _ in range(3)]
        await netpoll.sleep(0)
        assert not any(w.done for w in ws)
        wg.done()
        await netpoll.sleep(0)
        assert not any(w.done for w in ws)
        wg.done()
        for w in ws:
            await w
        return "ok"

    assert run(backend_name, main) == "ok"


def test_waitgroup_wait_alone_is_a_deadlock(backend_name):
    async def main():
        wg = WaitGroup()
        wg.add(1)
        await wg.wait()

    with pytest.raises(netpoll.DeadlockError):
        run(backend_name, main)
