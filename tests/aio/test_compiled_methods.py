"""The loop's compiled call_soon, call_at, call_later, create_task, time and
get_debug against the stdlib loop's: the same scenario on both, the same
handles, tasks, errors and order."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from netpoll import aio

var = contextvars.ContextVar("var", default="unset")


def both(backend_name, scenario):
    """scenario(loop) on the stdlib loop and on netpoll's, each in a fresh
    context; both results."""
    out = []
    for make in (asyncio.new_event_loop, lambda: aio.new_event_loop(backend=backend_name)):
        loop = make()
        try:
            out.append(contextvars.Context().run(scenario, loop))
        finally:
            loop.close()
    return out


def fields(h):
    return (type(h), h._callback, h._args, h._cancelled, h._loop is not None, h._source_traceback,
            h._repr, getattr(h, "_scheduled", None))


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_handles_are_asyncios_with_its_fields(backend_name, debug):
    def scenario(loop):
        loop.set_debug(debug)
        ran = []
        var.set("outer")
        ctx = contextvars.copy_context()
        hs = [loop.call_soon(ran.append, "soon"),
              loop.call_soon(lambda: ran.append(var.get()), context=ctx),
              loop.call_later(0.001, ran.append, "later"),
              loop.call_at(loop.time() + 0.002, ran.append, "at")]
        var.set("changed")  # each handle holds the context of its call
        cancelled = loop.call_later(0.001, ran.append, "never")
        cancelled.cancel()
        got = [(fields(h)[0], fields(h)[2:5], bool(h._source_traceback) if debug else h._source_traceback,
                h._repr, getattr(h, "_scheduled", None), h._context.get(var) if h._context else None)
               for h in hs]
        loop.run_until_complete(asyncio.sleep(0.01))
        return got, ran, cancelled.cancelled(), repr(cancelled).split(" ")[0]

    std, ours = both(backend_name, scenario)
    assert ours == std
    assert ours[1] == ["soon", "outer", "later", "at"]


def test_call_later_uses_the_loops_time(backend_name):
    def scenario(loop):
        loop.time = lambda: 1000.0  # a test's clock, as CPython's own tests patch it
        h = loop.call_later(5, lambda: None)
        h.cancel()
        return h.when()

    assert both(backend_name, scenario) == [1005.0, 1005.0]


def test_time_is_monotonic(backend_name):
    import time

    loop = aio.new_event_loop(backend=backend_name)
    try:
        a = time.monotonic()
        t = loop.time()
        b = time.monotonic()
    finally:
        loop.close()
    assert a <= t <= b


@pytest.mark.parametrize("call", [
    lambda loop: loop.call_later(None, print),
    lambda loop: loop.call_at(None, print),
], ids=["call_later(None)", "call_at(None)"])
def test_bad_times_are_asyncios_errors(backend_name, call):
    def scenario(loop):
        with pytest.raises(TypeError) as e:
            call(loop)
        return str(e.value)

    std, ours = both(backend_name, scenario)
    assert ours == std


@pytest.mark.parametrize("call", [
    lambda loop: loop.call_soon(print),
    lambda loop: loop.call_later(1, print),
    lambda loop: loop.call_at(1, print),
], ids=["call_soon", "call_later", "call_at"])
def test_a_closed_loop_refuses_callbacks(backend_name, call):
    loop = aio.new_event_loop(backend=backend_name)
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        call(loop)


def test_create_task_on_a_closed_loop(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    loop.close()

    async def never():
        pass

    coro = never()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.create_task(coro)
    coro.close()


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_create_task_names_contexts_and_factories(backend_name, debug):
    def scenario(loop):
        loop.set_debug(debug)
        made = []

        async def who():
            return var.get()

        ctx = contextvars.copy_context()
        ctx.run(var.set, "in ctx")
        t1 = loop.create_task(who(), name="first")
        t2 = loop.create_task(who(), context=ctx)
        loop.set_task_factory(lambda loop, coro, **kw: made.append(kw) or asyncio.Task(coro, loop=loop, **kw))
        t3 = loop.create_task(who(), name="third")
        t4 = loop.create_task(who(), name="fourth", context=ctx)
        loop.set_task_factory(None)
        results = loop.run_until_complete(asyncio.gather(t1, t2, t3, t4))
        return (type(t1), t1.get_name(), t3.get_name(), t4.get_name(), results, made,
                loop.get_debug(), bool(t1._source_traceback))

    std, ours = both(backend_name, scenario)
    assert ours == std
    assert ours[4] == ["unset", "in ctx", "unset", "in ctx"]


def test_get_debug_follows_set_debug(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        assert loop.get_debug() is False
        loop.set_debug(True)
        assert loop.get_debug() is True
        h = loop.call_soon(print)  # asyncio's own path, with its source traceback
        assert h._source_traceback
        h.cancel()
    finally:
        loop.close()


def test_a_subclass_keeps_the_methods_it_overrides(backend_name):
    seen = []

    class Loop(aio.EventLoop):
        def call_soon(self, callback, *args, context=None):
            seen.append(("soon", callback))
            return super().call_soon(callback, *args, context=context)

        def call_at(self, when, callback, *args, context=None):
            seen.append(("at", callback))
            return super().call_at(when, callback, *args, context=context)

    loop = Loop(backend=backend_name)
    try:
        ran = []
        loop.call_soon(ran.append, 1)
        loop.call_later(0.001, ran.append, 2)  # asyncio's call_later goes through call_at
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    assert ran == [1, 2]
    assert ("soon", ran.append) in seen and ("at", ran.append) in seen


def test_cancelled_timers_leave_the_heap_as_asyncios_run_once_drops_them(backend_name):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        far = [loop.call_later(3600 + i, print) for i in range(300)]
        for h in far[100:]:
            h.cancel()  # most of a big heap: all of them go when the loop parks
        ran = []
        head = loop.call_later(0.001, ran.append, "cancelled head")
        head.cancel()
        loop.call_later(0.02, ran.append, "live")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert ran == ["live"]
        assert sorted(loop._scheduled) == sorted(far[:100])
        assert loop._timer_cancelled_count == 0
        assert not any(h._scheduled for h in far[100:]) and not head._scheduled
        assert all(h._scheduled for h in far[:100])
        for h in far[:100]:
            h.cancel()
    finally:
        loop.close()
