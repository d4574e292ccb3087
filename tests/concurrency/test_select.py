"""select over channel cases: readiness, fairness, closed channels, parking,
cancellation, and no lost or duplicated value under random interleavings."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netpoll
from netpoll import Chan, ChannelClosed, NetpollError, select


def run(coro, backend_name):
    return netpoll.run(coro, backend=backend_name)


def test_fairness_between_two_ready_cases(backend_name):
    async def main():
        a, b = Chan(1), Chan(1)
        counts = [0, 0]
        for _ in range(10_000):
            if not len(a):
                await a.send("a")
            if not len(b):
                await b.send("b")
            i, v, ok = await select(a.recv_case(), b.recv_case())
            assert ok and v == "ab"[i]
            counts[i] += 1
        return counts

    counts = run(main(), backend_name)
    assert sum(counts) == 10_000
    for c in counts:
        assert 4_000 <= c <= 6_000, counts


def test_fairness_among_send_and_receive_cases(backend_name):
    async def main():
        src, dst = Chan(1), Chan(1)
        counts = [0, 0]
        for _ in range(4_000):
            if not len(src):
                await src.send(1)
            if len(dst):
                await dst.recv()
            i, _, _ = await select(src.recv_case(), dst.send_case(2))
            counts[i] += 1
        return counts

    counts = run(main(), backend_name)
    for c in counts:
        assert 1_600 <= c <= 2_400, counts


def test_unchosen_case_leaves_no_trace(backend_name):
    async def main():
        a, b, out = Chan(1), Chan(1), Chan(1)
        await a.send(1)
        await b.send(2)
        i, v, ok = await select(a.recv_case(), b.recv_case(), out.send_case(3))
        # Exactly one case happened: one value gone or one value added.
        state = (len(a), len(b), len(out))
        return i, v, ok, state

    i, v, ok, state = run(main(), backend_name)
    expected = {0: ((1, True), (0, 1, 0)), 1: ((2, True), (1, 0, 0)), 2: ((None, True), (1, 1, 1))}
    assert ((v, ok), state) == expected[i]


def test_default_when_nothing_is_ready(backend_name):
    async def main():
        a, b = Chan(), Chan(1)
        return await select(a.recv_case(), a.send_case(1), b.recv_case(), default=True)

    assert run(main(), backend_name) == (-1, None, False)


def test_default_with_a_ready_case_takes_the_case(backend_name):
    async def main():
        a = Chan(1)
        await a.send("x")
        return await select(a.recv_case(), default=True)

    assert run(main(), backend_name) == (0, "x", True)


def test_closed_channel_receive_is_ready(backend_name):
    async def main():
        a, b = Chan(), Chan()
        b.close()
        return await select(a.recv_case(), b.recv_case())

    assert run(main(), backend_name) == (1, None, False)


def test_closed_channel_drains_buffer_first(backend_name):
    async def main():
        a = Chan(2)
        await a.send(1)
        a.close()
        return [await select(a.recv_case()) for _ in range(2)]

    assert run(main(), backend_name) == [(0, 1, True), (0, None, False)]


def test_send_case_on_closed_channel_raises(backend_name):
    async def main():
        a = Chan(1)
        a.close()
        with pytest.raises(ChannelClosed, match="send on closed channel"):
            await select(a.send_case(1))
        with pytest.raises(ChannelClosed, match="send on closed channel"):
            await a.send(1)
        return "ok"

    assert run(main(), backend_name) == "ok"


def test_parked_send_case_raises_when_closed(backend_name):
    async def closer(a):
        await netpoll.sleep(0.01)
        a.close()

    async def main():
        a, b = Chan(), Chan()
        netpoll.go(closer(a))
        with pytest.raises(ChannelClosed):
            await select(a.send_case(1), b.recv_case())
        # The receive case on b left nothing behind: a send to b finds no one.
        return await select(b.send_case(2), default=True)

    assert run(main(), backend_name) == (-1, None, False)


def test_parked_select_woken_by_send(backend_name):
    async def sender(b):
        await netpoll.sleep(0.01)
        await b.send("late")

    async def main():
        a, b = Chan(), Chan()
        netpoll.go(sender(b))
        got = await select(a.recv_case(), b.recv_case())
        left = await select(a.send_case(0), default=True)
        return got, left

    assert run(main(), backend_name) == ((1, "late", True), (-1, None, False))


def test_parked_select_send_taken_by_receiver(backend_name):
    async def receiver(b, out):
        await netpoll.sleep(0.01)
        out.append(await b.recv())

    async def main():
        a, b = Chan(), Chan()
        out = []
        h = netpoll.go(receiver(b, out))
        got = await select(a.recv_case(), b.send_case("v"))
        await h
        return got, out

    assert run(main(), backend_name) == ((1, None, True), ["v"])


def test_parked_select_woken_by_close(backend_name):
    async def closer(a):
        await netpoll.sleep(0.01)
        a.close()

    async def main():
        a, b = Chan(), Chan()
        netpoll.go(closer(a))
        return await select(b.recv_case(), a.recv_case())

    assert run(main(), backend_name) == (1, None, False)


def test_select_on_one_channel_twice(backend_name):
    async def main():
        a = Chan(1)
        await a.send(5)
        i, v, ok = await select(a.recv_case(), a.recv_case())
        return i in (0, 1), v, ok

    assert run(main(), backend_name) == (True, 5, True)


def test_select_timeout_with_after(backend_name):
    async def main():
        a = Chan()
        t0 = netpoll.now()
        i, v, ok = await select(a.recv_case(), netpoll.after(0.05).recv_case())
        return i, ok, netpoll.now() - t0, v

    i, ok, took, v = run(main(), backend_name)
    assert (i, ok) == (1, True)
    assert 0.04 <= took < 5
    assert isinstance(v, float)


def test_many_selects_on_one_channel_do_not_pile_up(backend_name):
    # Each select parks on a shared channel and leaves through another case:
    # the shared channel's dead entries are compacted, and a send to it
    # still finds the one live receiver.
    async def main():
        shared = Chan()
        for i in range(2_000):
            own = Chan(1)
            await own.send(i)
            async def sel(own=own):
                return await select(shared.recv_case(), own.recv_case())
            h = netpoll.go(sel())
            assert await h == (1, i, True)
        r = netpoll.go(shared.recv())
        await netpoll.sleep(0)
        await shared.send("x")
        return await r, len(shared._recvq or ())

    v, queued = run(main(), backend_name)
    assert v == "x"
    assert queued < 200


def test_goroutine_closed_in_select_leaves_no_trace(backend_name):
    a, b = Chan(), Chan()

    async def main():
        netpoll.go(select(a.recv_case(), b.send_case(1)))
        await netpoll.sleep(0)

    run(main(), backend_name)

    async def second():
        return (await select(a.send_case(1), default=True),
                await select(b.recv_case(), default=True))

    assert run(second(), backend_name) == ((-1, None, False), (-1, None, False))


def test_select_with_no_cases_blocks_forever(backend_name):
    async def main():
        await select()

    with pytest.raises(netpoll.DeadlockError):
        run(main(), backend_name)


def test_select_rejects_what_is_not_a_case(backend_name):
    async def main():
        with pytest.raises(TypeError, match="case 1"):
            await select(Chan().recv_case(), Chan())
        return "ok"

    assert run(main(), backend_name) == "ok"


def test_channel_of_another_runtime_errors(backend_name):
    ch = Chan()
    parked = threading.Event()
    release = []

    async def other():
        rt = netpoll.current_runtime()
        release.append(rt)
        h = netpoll.go(ch.recv())
        await netpoll.sleep(0)
        parked.set()
        with rt.hold() as hold:
            release.append(hold)
            try:
                return await h
            except ChannelClosed:
                return "closed"

    t = threading.Thread(target=lambda: release.append(netpoll.run(other(), backend=backend_name)))
    t.start()
    assert parked.wait(5)

    async def main():
        for op in (lambda: ch.send(1), ch.recv2, lambda: select(ch.recv_case())):
            with pytest.raises(NetpollError, match="another runtime"):
                await op()
        with pytest.raises(NetpollError, match="another runtime"):
            ch.close()
        return "errors"

    try:
        assert run(main(), backend_name) == "errors"
    finally:
        release[0].call_soon_threadsafe(ch.close)
        t.join(5)
    assert release[-1] == "closed"


# ---------------------------------------------------------------------------
# Random interleavings: every value sent is received exactly once
# ---------------------------------------------------------------------------

programs = st.fixed_dictionaries({
    "caps": st.lists(st.integers(0, 3), min_size=1, max_size=3),
    "senders": st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.booleans()), max_size=8),
        min_size=1, max_size=4),
    "receivers": st.lists(st.tuples(st.sampled_from(["recv", "select", "default", "timer"]),
                                    st.integers(0, 3)), min_size=1, max_size=3),
    "close_after": st.integers(0, 30),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prog=programs)
def test_no_value_lost_or_duplicated(backend_name, prog):
    caps = prog["caps"]
    sent: list[tuple[int, int]] = []
    got: list[tuple[int, int]] = []

    async def sender(sid, ops, chans):
        for k, (ci, yields, use_select) in enumerate(ops):
            ch = chans[ci % len(chans)]
            for _ in range(yields):
                await netpoll.sleep(0)
            v = (sid, k)
            try:
                if use_select:
                    # The other case is a receive nobody feeds: only the send
                    # can complete, or the channel's close.
                    i, _, _ = await select(ch.send_case(v), Chan().recv_case())
                    assert i == 0
                else:
                    await ch.send(v)
            except ChannelClosed:
                continue
            sent.append(v)

    async def receiver(kind, yields, chans):
        live = list(chans)
        while live:
            for _ in range(yields):
                await netpoll.sleep(0)
            if kind == "recv" and len(live) == 1:
                v, ok = await live[0].recv2()
                i = 0
            elif kind == "timer":
                cases = [c.recv_case() for c in live] + [netpoll.after(0.001).recv_case()]
                i, v, ok = await select(*cases)
                if i == len(live):
                    continue
            else:
                # Every receiver waits on every open channel, so no sender
                # can be left waiting forever.
                i, v, ok = await select(*[c.recv_case() for c in live], default=(kind == "default"))
                if i < 0:
                    await netpoll.sleep(0)
                    continue
            if ok:
                got.append(v)
            else:
                live.pop(i)

    async def closer(after, chans, senders):
        for _ in range(after):
            await netpoll.sleep(0)
        for h in senders:
            if after % 2:
                break  # close while senders run
            await h
        for c in chans:
            c.close()

    async def main():
        chans = [Chan(c) for c in caps]
        hs = [netpoll.go(sender(i, ops, chans)) for i, ops in enumerate(prog["senders"])]
        rs = [netpoll.go(receiver(kind, y, chans)) for kind, y in prog["receivers"]]
        await netpoll.go(closer(prog["close_after"], chans, hs))
        for h in hs + rs:
            await h

    run(main(), backend_name)
    assert len(got) == len(set(got)), "a value was received twice"
    assert sorted(got) == sorted(sent), "a sent value was lost or an unsent one received"
