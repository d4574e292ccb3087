"""context: trees, cancellation one way only, inherited deadlines, values,
after_func, bounding a read the way Go does; errgroup."""

from __future__ import annotations

import pytest

import netpoll
from netpoll import context, errgroup, net, select


def run(coro, backend_name):
    return netpoll.run(coro, backend=backend_name)


async def is_done(ctx) -> bool:
    i, _, ok = await select(ctx.done().recv_case(), default=True)
    return i == 0 and not ok


def test_background_is_never_done(backend_name):
    async def main():
        bg = context.background()
        return bg.err(), bg.deadline(), bg.value("k"), await is_done(bg), context.todo().err()

    assert run(main(), backend_name) == (None, None, None, False, None)


def test_cancel_reaches_descendants_never_ancestors(backend_name):
    async def main():
        root, cancel_root = context.with_cancel(context.background())
        mid, cancel_mid = context.with_cancel(root)
        leaf, _ = context.with_cancel(context.with_value(mid, "k", 1))
        sibling, _ = context.with_cancel(root)
        cancel_mid()
        state = [await is_done(c) for c in (root, mid, leaf, sibling)]
        errs = [type(c.err()).__name__ if c.err() else None for c in (root, mid, leaf, sibling)]
        cancel_mid()  # idempotent
        cancel_root()
        after = [await is_done(c) for c in (root, sibling)]
        return state, errs, after, isinstance(leaf.err(), context.Canceled)

    state, errs, after, leaf_canceled = run(main(), backend_name)
    assert state == [False, True, True, False]
    assert errs == [None, "Canceled", "Canceled", None]
    assert after == [True, True]
    assert leaf_canceled


def test_child_of_a_cancelled_parent_is_born_cancelled(backend_name):
    async def main():
        p, cancel = context.with_cancel(context.background())
        cancel()
        c, _ = context.with_cancel(p)
        return await is_done(c), type(c.err()).__name__

    assert run(main(), backend_name) == (True, "Canceled")


def test_done_wakes_a_parked_receiver(backend_name):
    async def canceller(cancel):
        await netpoll.sleep(0.01)
        cancel()

    async def main():
        ctx, cancel = context.with_cancel(context.background())
        work = netpoll.Chan()
        netpoll.go(canceller(cancel))
        i, v, ok = await select(work.recv_case(), ctx.done().recv_case())
        return i, ok, str(ctx.err())

    assert run(main(), backend_name) == (1, False, "context canceled")


def test_timeout_expires_with_deadline_exceeded(backend_name):
    async def main():
        t0 = netpoll.now()
        ctx, cancel = context.with_timeout(context.background(), 0.03)
        await ctx.done().recv2()
        took = netpoll.now() - t0
        err = ctx.err()
        cancel()  # after expiry: the error stays
        return took, err, ctx.err() is err

    took, err, same = run(main(), backend_name)
    assert 0.025 <= took < 5
    assert isinstance(err, context.DeadlineExceeded) and isinstance(err, TimeoutError)
    assert isinstance(err, netpoll.DeadlineExceededError)
    assert str(err) == "context deadline exceeded" and same


def test_child_deadline_never_later_than_parents(backend_name):
    async def main():
        parent, _ = context.with_timeout(context.background(), 0.03)
        later, _ = context.with_timeout(parent, 30)
        earlier, _ = context.with_timeout(parent, 0.01)
        values, _ = context.with_cancel(context.with_value(parent, "k", "v"))
        d = [c.deadline() for c in (parent, later, earlier, values)]
        await later.done().recv2()
        return d, type(later.err()).__name__, values.value("k"), type(values.err()).__name__

    d, later_err, v, values_err = run(main(), backend_name)
    assert d[1] == d[0] == d[3], "a child outlived its parent's deadline"
    assert d[2] < d[0]
    assert later_err == "DeadlineExceeded" and values_err == "DeadlineExceeded"
    assert v == "v"


def test_past_deadline_is_done_at_once(backend_name):
    async def main():
        ctx, _ = context.with_deadline(context.background(), netpoll.now() - 1)
        return await is_done(ctx), type(ctx.err()).__name__

    assert run(main(), backend_name) == (True, "DeadlineExceeded")


def test_cancel_stops_the_deadline_timer(backend_name):
    async def main():
        ctx, cancel = context.with_timeout(context.background(), 60)
        rt = netpoll.current_runtime()
        n = len(rt.timers)
        cancel()
        return n, len(rt.timers), type(ctx.err()).__name__

    assert run(main(), backend_name) == (1, 0, "Canceled")


def test_values(backend_name):
    async def main():
        a = context.with_value(context.background(), "user", "ann")
        b = context.with_value(a, "trace", 7)
        c, _ = context.with_cancel(b)
        d = context.with_value(c, "user", "bob")
        return c.value("user"), c.value("trace"), d.value("user"), d.value("nope")

    assert run(main(), backend_name) == ("ann", 7, "bob", None)


def test_bad_arguments(backend_name):
    async def main():
        with pytest.raises(TypeError, match="parent must be a Context"):
            context.with_cancel(None)
        with pytest.raises(TypeError, match="seconds must be a number"):
            context.with_timeout(context.background(), "1")
        with pytest.raises(TypeError, match="key is None"):
            context.with_value(context.background(), None, 1)
        return "ok"

    assert run(main(), backend_name) == "ok"


def test_after_func(backend_name):
    async def main():
        ran = []
        ctx, cancel = context.with_cancel(context.background())
        context.after_func(ctx, lambda: ran.append("sync"))

        async def later():
            ran.append("async")

        context.after_func(ctx, later)
        stop = context.after_func(ctx, lambda: ran.append("stopped"))
        assert stop() is True and stop() is False
        cancel()
        await netpoll.sleep(0.01)
        # Already done: fn runs at once (in its own goroutine); stop is False.
        stop2 = context.after_func(ctx, lambda: ran.append("late"))
        await netpoll.sleep(0.01)
        return sorted(ran), stop2()

    assert run(main(), backend_name) == (["async", "late", "sync"], False)


def test_after_func_bounds_a_read(backend_name):
    # Go's way to give a read a context: after_func sets a past deadline.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        conn = await net.dial("tcp", str(ln.addr))
        peer = await ln.accept()
        try:
            ctx, cancel = context.with_timeout(context.background(), 0.03)
            context.after_func(ctx, lambda: conn.set_deadline(0))
            with pytest.raises(TimeoutError):
                await conn.read(bytearray(10))
            cancel()
            return type(ctx.err()).__name__
        finally:
            conn.close()
            peer.close()
            ln.close()

    assert run(main(), backend_name) == "DeadlineExceeded"


# ---------------------------------------------------------------------------
# errgroup
# ---------------------------------------------------------------------------


def test_errgroup_first_error_cancels_the_rest(backend_name):
    async def main():
        g, ctx = errgroup.with_context(context.background())
        stopped = []

        async def worker(n):
            i, _, _ = await select(ctx.done().recv_case(), netpoll.after(30).recv_case())
            stopped.append((n, i))

        async def failing():
            await netpoll.sleep(0.01)
            raise ValueError("first")

        async def second_failing():
            await ctx.done().recv2()
            raise KeyError("second")

        for n in range(3):
            g.go(worker(n))
        g.go(failing())
        g.go(second_failing())
        with pytest.raises(ValueError, match="first"):
            await g.wait()
        return sorted(stopped), type(ctx.err()).__name__

    assert run(main(), backend_name) == ([(0, 0), (1, 0), (2, 0)], "Canceled")


def test_errgroup_success_returns_and_cancels_its_context(backend_name):
    async def main():
        g, ctx = errgroup.with_context(context.background())
        out = []

        async def work(n):
            await netpoll.sleep(0.001 * n)
            out.append(n)

        for n in range(5):
            g.go(work(n))
        r = await g.wait()
        return r, sorted(out), type(ctx.err()).__name__

    assert run(main(), backend_name) == (None, [0, 1, 2, 3, 4], "Canceled")


def test_errgroup_without_context(backend_name):
    async def main():
        g = errgroup.Group()

        async def bad():
            raise OSError("x")

        g.go(bad())
        with pytest.raises(OSError):
            await g.wait()
        with pytest.raises(TypeError, match="needs a coroutine"):
            g.go(bad)
        return "ok"

    assert run(main(), backend_name) == "ok"
