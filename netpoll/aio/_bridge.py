"""Goroutines and asyncio tasks awaiting each other on the one loop."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Optional, TypeVar

from netpoll import _sched

T = TypeVar("T")


def _netpoll_loop(loop: Optional[asyncio.AbstractEventLoop], what: str) -> asyncio.AbstractEventLoop:
    from netpoll.aio._loop import EventLoop

    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(f"{what} must be called while a netpoll.aio loop runs") from None
    if not isinstance(loop, EventLoop):
        raise TypeError(f"{what} needs a netpoll.aio event loop, not {type(loop).__name__}")
    return loop


def wrap_goroutine(handle: "_sched.G[T]", *,
                   loop: Optional[asyncio.AbstractEventLoop] = None) -> "asyncio.Future[T]":
    """An asyncio future for a goroutine: it gets the goroutine's result or exception.

    Cancelling the future does not stop the goroutine (goroutines are not
    cancellable); if the goroutine then fails, its exception goes to the
    loop's exception handler rather than being lost.
    """
    if not isinstance(handle, _sched.G):
        raise TypeError(f"wrap_goroutine needs a goroutine handle (netpoll.go()), "
                        f"not {type(handle).__name__}")
    loop = _netpoll_loop(loop, "wrap_goroutine")
    fut: asyncio.Future[T] = loop.create_future()

    async def join() -> None:
        try:
            value = await handle
        except GeneratorExit:
            raise  # the runtime is closing this join (the loop closes)
        except asyncio.CancelledError:
            # The goroutine let an asyncio cancellation escape (from
            # wrap_future): the future is cancelled too.
            fut.cancel()
        except BaseException as e:
            if not fut.cancelled():
                fut.set_exception(e)
            else:
                loop.call_exception_handler({
                    "message": "goroutine failed after its future was cancelled",
                    "exception": e, "future": fut})
        else:
            if not fut.cancelled():
                fut.set_result(value)

    _sched.go(join())
    return fut


async def wrap_future(aw: Awaitable[T]) -> T:
    """In a goroutine: wait for an asyncio future, task or coroutine; return its result.

    A coroutine becomes a task of the running netpoll.aio loop (and is
    cancelled if the goroutine is closed while it waits); a future's
    exception or cancellation (``asyncio.CancelledError``) is raised here.
    """
    loop = _netpoll_loop(None, "wrap_future")
    owned = not asyncio.isfuture(aw)
    fut = asyncio.ensure_future(aw, loop=loop)
    if not fut.done():
        woken: list[Any] = []

        def commit(g: "_sched.G[Any]") -> bool:
            if fut.done():
                return False

            def done(_: Any) -> None:
                _sched.ready(g)

            woken.append(done)
            fut.add_done_callback(done)
            return True

        def cancel() -> None:
            for cb in woken:
                fut.remove_done_callback(cb)
            if owned:
                fut.cancel()

        await _sched.park(commit, cancel)
    return fut.result()
