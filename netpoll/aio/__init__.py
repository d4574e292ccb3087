"""asyncio on netpoll: an event loop whose callbacks, timers and readiness
run on netpoll's scheduler and poller, so that goroutines and asyncio tasks
share one thread and one poller.

    from netpoll import aio
    aio.run(main())                                         # like asyncio.run
    asyncio.run(main(), loop_factory=aio.new_event_loop)    # 3.12+
    with asyncio.Runner(loop_factory=aio.new_event_loop) as r: r.run(main())

Inside the loop, ``netpoll.go(coro)`` starts a goroutine; a task awaits it
with ``await aio.wrap_goroutine(handle)``, and a goroutine awaits an asyncio
future, task or coroutine with ``await aio.wrap_future(fut)``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Optional, TypeVar

from netpoll.aio._bridge import wrap_future, wrap_goroutine
from netpoll.aio._loop import EventLoop

T = TypeVar("T")


def new_event_loop(*, backend: Optional[str] = None) -> EventLoop:
    """A new netpoll.aio event loop on ``backend`` (default ``netpoll.BACKEND``)."""
    return EventLoop(backend=backend)


def run(main: Coroutine[Any, Any, T], *, debug: Optional[bool] = None,
        backend: Optional[str] = None) -> T:
    """Run ``main`` on a new netpoll.aio loop and close it, as ``asyncio.run`` does."""
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    try:
        loop = new_event_loop(backend=backend)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(debug=debug, loop_factory=lambda: loop) as runner:
        return runner.run(main)


__all__ = ["EventLoop", "new_event_loop", "run", "wrap_future", "wrap_goroutine"]
