"""Mutex and Once held across awaits."""

from __future__ import annotations

import pytest

import netpoll


def run(coro, backend_name):
    return netpoll.run(coro, backend=backend_name)


def test_mutex_excludes_across_awaits(backend_name):
    async def main():
        mu = netpoll.Mutex()
        inside = []
        log = []

        async def worker(n):
            for _ in range(5):
                async with mu:
                    inside.append(n)
                    assert len(inside) == 1, "two goroutines inside the mutex"
                    await netpoll.sleep(0)
                    log.append(n)
                    inside.pop()

        await netpoll.go(_all([worker(n) for n in range(4)]))
        return len(log), mu.locked()

    assert run(main(), backend_name) == (20, False)


async def _all(coros):
    hs = [netpoll.go(c) for c in coros]
    for h in hs:
        await h


def test_mutex_hands_over_in_order(backend_name):
    async def main():
        mu = netpoll.Mutex()
        await mu.lock()
        order = []

        async def waiter(n):
            async with mu:
                order.append(n)

        hs = [netpoll.go(waiter(n)) for n in range(5)]
        await netpoll.sleep(0)
        assert not mu.try_lock()
        mu.unlock()
        for h in hs:
            await h
        return order, mu.try_lock()

    assert run(main(), backend_name) == ([0, 1, 2, 3, 4], True)


def test_mutex_unlock_of_unlocked(backend_name):
    async def main():
        with pytest.raises(RuntimeError, match="unlock of unlocked mutex"):
            netpoll.Mutex().unlock()
        return "ok"

    assert run(main(), backend_name) == "ok"


def test_mutex_waiter_closed_leaves_the_queue(backend_name):
    mu = netpoll.Mutex()

    async def main():
        await mu.lock()
        netpoll.go(mu.lock())
        await netpoll.sleep(0)

    run(main(), backend_name)
    mu.unlock()  # no waiter left: the mutex is free again
    assert not mu.locked()


def test_once_runs_first_call_only_and_waits(backend_name):
    async def main():
        once = netpoll.Once()
        calls = []
        seen = []

        async def init():
            calls.append(1)
            await netpoll.sleep(0.01)

        async def user(n):
            await once.do(init)
            seen.append((n, len(calls), once.done()))

        hs = [netpoll.go(user(n)) for n in range(4)]
        for h in hs:
            await h
        await once.do(lambda: calls.append(2))
        return calls, sorted(seen)

    calls, seen = run(main(), backend_name)
    assert calls == [1]
    assert seen == [(n, 1, True) for n in range(4)]


def test_once_that_raised_is_done(backend_name):
    async def main():
        once = netpoll.Once()

        def boom():
            raise ValueError("init failed")

        with pytest.raises(ValueError):
            await once.do(boom)
        await once.do(boom)  # done: not called again
        return once.done()

    assert run(main(), backend_name) is True
