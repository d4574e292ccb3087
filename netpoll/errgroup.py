"""Go's golang.org/x/sync/errgroup: goroutines working on parts of one task.

``g.go(coro)`` starts a goroutine; ``await g.wait()`` waits for all of them
and raises the first exception any raised. With ``with_context`` that first
exception also cancels the group's context, so the others can stop early::

    g, ctx = errgroup.with_context(context.background())
    for url in urls:
        g.go(fetch(ctx, url))
    await g.wait()
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Optional

from netpoll import _sched, context as _context
from netpoll.sync import WaitGroup

__all__ = ["Group", "with_context"]


class Group:
    """A set of goroutines; a Group made directly has no context."""

    def __init__(self) -> None:
        self._wg = WaitGroup()
        self._err: Optional[BaseException] = None
        self._cancel: Optional[Callable[[], None]] = None

    def go(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a new goroutine of the group."""
        if not hasattr(coro, "send"):
            raise TypeError(f"errgroup: go() needs a coroutine, not {type(coro).__name__}")
        self._wg.add(1)
        _sched.go(self._run(coro))

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception as e:
            if self._err is None:
                self._err = e
                if self._cancel is not None:
                    self._cancel()
        finally:
            self._wg.done()

    async def wait(self) -> None:
        """Wait for every goroutine; raise the first exception, if any."""
        await self._wg.wait()
        if self._cancel is not None:
            self._cancel()
        if self._err is not None:
            raise self._err


def with_context(parent: _context.Context) -> tuple[Group, _context.Context]:
    """A Group and a child of ``parent`` cancelled by the group's first error
    or when ``wait`` returns."""
    ctx, cancel = _context.with_cancel(parent)
    g = Group()
    g._cancel = cancel
    return g, ctx
