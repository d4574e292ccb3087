"""The goroutine runtime's public face: run, go, sleep, now, to_thread, current_runtime."""

from __future__ import annotations

import threading
import time
from typing import Any, Awaitable, Callable, Coroutine, Optional, TypeVar

from netpoll import _sched
from netpoll._table import backend_class, resolve

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], *, backend: Optional[str] = None) -> T:
    """Run the goroutine runtime until ``coro`` returns; return its value.

    Each run has its own poller: ``backend`` names one (or an ordered
    fallback list "a,b"); the default is ``netpoll.BACKEND``. When ``coro``
    returns, leftover goroutines are closed (their ``finally`` blocks run).
    An exception escaping any goroutine is raised here unless that
    goroutine's handle was awaited and received it. When every goroutine is
    parked and nothing can wake one, ``DeadlockError`` is raised.
    """
    from netpoll import BACKEND

    try:
        if _sched.running():
            raise RuntimeError("netpoll.run() cannot be called from a running netpoll runtime")
        name = BACKEND if backend is None else resolve(backend, "backend")
        sched = _sched.Sched(backend_class(name)())
    except BaseException:
        coro.close()
        raise
    return sched.run(coro)


def go(coro: Coroutine[Any, Any, T]) -> "_sched.G":
    """Start a goroutine; ``await`` the handle for its result or exception."""
    return _sched.go(coro)


def sleep(seconds: float) -> Awaitable[None]:
    """Pause the calling goroutine; ``await sleep(0)`` lets others run."""
    return _sched.sleep(seconds)


def now() -> float:
    """The deadline clock: ``time.monotonic()`` seconds."""
    return time.monotonic()


async def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new thread; the goroutine parks until it ends.

    The thread hands its result back through the runtime's injection queue
    and wakes the poller with ``netpollbreak``; while it runs, the runtime
    does not count the goroutine as deadlocked.
    """
    sched = _sched.current()
    failed: list[BaseException] = []

    def commit(g: "_sched.G") -> bool:
        def work() -> None:
            try:
                value = fn(*args)
            except BaseException as e:  # handed to the goroutine, not lost
                sched.finish_external(g, None, e)
            else:
                sched.finish_external(g, value, None)

        sched.begin_external()
        try:
            threading.Thread(target=work, name="netpoll.to_thread", daemon=True).start()
        except BaseException as e:  # can't start new thread: the caller's error
            sched.end_external()
            failed.append(e)
            return False
        return True

    value = await _sched.park(commit)
    if failed:
        raise failed[0]
    return value


def current_runtime() -> "_sched.Sched":
    """The runtime running in this thread, for handing to other threads:
    ``rt.go_threadsafe(coro)`` starts a goroutine in it from any thread."""
    return _sched.current()
