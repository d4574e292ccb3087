"""Go's context package for goroutines.

A context carries cancellation, a deadline and values down a tree of calls.
Cancelling a context cancels its descendants, never its ancestors; a child's
deadline is never later than its parent's. ``ctx.done()`` is a channel that
is closed on cancellation, so a goroutine selects on it next to its work::

    ctx, cancel = context.with_timeout(context.background(), 5.0)
    i, v, ok = await netpoll.select(work.recv_case(), ctx.done().recv_case())
    if i == 1:
        raise ctx.err()          # context.DeadlineExceeded

Reads, writes and accepts are bounded the way Go does it:
``context.after_func(ctx, lambda: conn.set_deadline(0))``.
Contexts with a deadline use the running runtime's timer heap.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Optional, Union

from netpoll import _sched
from netpoll.errors import DeadlineExceededError
from netpoll.sync import Chan

__all__ = ["Context", "Canceled", "DeadlineExceeded", "background", "todo", "with_cancel",
           "with_timeout", "with_deadline", "with_value", "after_func"]

CancelFunc = Callable[[], None]


class Canceled(Exception):
    """The context was cancelled (Go's ``context.Canceled``)."""

    def __init__(self, msg: str = "context canceled") -> None:
        super().__init__(msg)


class DeadlineExceeded(DeadlineExceededError):
    """The context's deadline passed (Go's ``context.DeadlineExceeded``); a TimeoutError."""

    def __init__(self, msg: str = "context deadline exceeded") -> None:
        super().__init__(msg)


class Context:
    """What every context answers: done(), err(), deadline(), value(key)."""

    def done(self) -> Chan[Any]:
        raise NotImplementedError

    def err(self) -> Optional[BaseException]:
        raise NotImplementedError

    def deadline(self) -> Optional[float]:
        raise NotImplementedError

    def value(self, key: Any) -> Any:
        raise NotImplementedError


class _Empty(Context):
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def done(self) -> Chan[Any]:
        # Go returns nil, a channel that never delivers: a fresh channel
        # nobody closes behaves the same in a select.
        return Chan()

    def err(self) -> None:
        return None

    def deadline(self) -> None:
        return None

    def value(self, key: Any) -> Any:
        return None

    def __repr__(self) -> str:
        return f"context.{self._name}()"


_BACKGROUND = _Empty("background")
_TODO = _Empty("todo")


def background() -> Context:
    """The root of every tree: never cancelled, no deadline, no values."""
    return _BACKGROUND


def todo() -> Context:
    """Like background, for code that has not decided which context to take."""
    return _TODO


class _CancelCtx(Context):
    __slots__ = ("_parent", "_done", "_err", "_children", "_afters", "_timer", "_at")

    def __init__(self, parent: Context) -> None:
        self._parent = parent
        self._done: Optional[Chan[Any]] = None
        self._err: Optional[BaseException] = None
        self._children: Optional[dict[Any, None]] = None
        self._afters: Optional[dict[Any, None]] = None
        self._timer: Any = None
        self._at: Optional[float] = None

    def done(self) -> Chan[Any]:
        ch = self._done
        if ch is None:
            ch = self._done = Chan()
            if self._err is not None:
                ch.close()
        return ch

    def err(self) -> Optional[BaseException]:
        return self._err

    def deadline(self) -> Optional[float]:
        return self._at if self._at is not None else self._parent.deadline()

    def value(self, key: Any) -> Any:
        return self._parent.value(key)

    def _cancel(self, err: BaseException, detach: bool) -> None:
        if self._err is not None:
            return
        self._err = err
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._done is not None:
            self._done.close()
        children, self._children = self._children, None
        for child in children or ():
            child._cancel(err, False)
        afters, self._afters = self._afters, None
        for run in afters or ():
            _sched.go(run())
        if detach:
            p = _cancel_parent(self._parent)
            if p is not None and p._children is not None:
                p._children.pop(self, None)

    def __repr__(self) -> str:
        state = f" {self._err}" if self._err is not None else ""
        at = f" deadline={self._at:.3f}" if self._at is not None else ""
        return f"<context {type(self).__name__.strip('_')}{at}{state}>"


class _ValueCtx(Context):
    __slots__ = ("_parent", "_key", "_val")

    def __init__(self, parent: Context, key: Any, val: Any) -> None:
        self._parent = parent
        self._key = key
        self._val = val

    def done(self) -> Chan[Any]:
        return self._parent.done()

    def err(self) -> Optional[BaseException]:
        return self._parent.err()

    def deadline(self) -> Optional[float]:
        return self._parent.deadline()

    def value(self, key: Any) -> Any:
        if key == self._key:
            return self._val
        return self._parent.value(key)

    def __repr__(self) -> str:
        return f"<context value {self._key!r}={self._val!r} of {self._parent!r}>"


def _cancel_parent(ctx: Context) -> Optional[_CancelCtx]:
    while type(ctx) is _ValueCtx:
        ctx = ctx._parent
    return ctx if isinstance(ctx, _CancelCtx) else None


def _check_parent(parent: Any, what: str) -> None:
    if not isinstance(parent, Context):
        raise TypeError(f"{what}: parent must be a Context (context.background()), not {parent!r}")


def _attach(child: _CancelCtx) -> None:
    # Propagate the parent's cancellation, now or later.
    p = _cancel_parent(child._parent)
    if p is None:
        return
    if p._err is not None:
        child._cancel(p._err, False)
        return
    if p._children is None:
        p._children = {}
    p._children[child] = None


def with_cancel(parent: Context) -> tuple[Context, CancelFunc]:
    """A child context and the function that cancels it (and its children)."""
    _check_parent(parent, "with_cancel")
    ctx = _CancelCtx(parent)
    _attach(ctx)
    return ctx, lambda: ctx._cancel(Canceled(), True)


def with_deadline(parent: Context, t: float) -> tuple[Context, CancelFunc]:
    """A child cancelled with DeadlineExceeded at ``t`` (``netpoll.now()``
    seconds), or earlier when the parent's deadline is earlier."""
    _check_parent(parent, "with_deadline")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t:
        raise TypeError(f"with_deadline: t must be netpoll.now() seconds, not {t!r}")
    ctx = _CancelCtx(parent)
    pd = parent.deadline()
    if pd is None or t < pd:
        ctx._at = float(t)
    _attach(ctx)
    if ctx._at is not None and ctx._err is None:
        delay = ctx._at - time.monotonic()
        if delay <= 0:
            ctx._cancel(DeadlineExceeded(), True)
        else:
            ctx._timer = _sched.RuntimeTimer(lambda: ctx._cancel(DeadlineExceeded(), True))
            ctx._timer.start(delay)
    return ctx, lambda: ctx._cancel(Canceled(), True)


def with_timeout(parent: Context, seconds: float) -> tuple[Context, CancelFunc]:
    """``with_deadline(parent, netpoll.now() + seconds)``."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        raise TypeError(f"with_timeout: seconds must be a number, not {seconds!r}")
    return with_deadline(parent, time.monotonic() + seconds)


def with_value(parent: Context, key: Any, value: Any) -> Context:
    """A child whose ``value(key)`` is ``value``; other keys ask the parent."""
    _check_parent(parent, "with_value")
    if key is None:
        raise TypeError("with_value: key is None")
    return _ValueCtx(parent, key, value)


def after_func(ctx: Context, fn: Callable[[], Union[Any, Awaitable[Any]]]) -> Callable[[], bool]:
    """Run ``fn`` (a function or an async function) in its own goroutine once
    ``ctx`` is done, at once if it already is (Go 1.21). The returned
    ``stop()`` is True when it kept ``fn`` from starting."""
    _check_parent(ctx, "after_func")

    async def run() -> None:
        r = fn()
        if hasattr(r, "__await__"):
            await r

    p = _cancel_parent(ctx)
    if p is None:
        return lambda: True  # never done: fn never runs
    if p._err is not None:
        _sched.go(run())
        return lambda: False
    if p._afters is None:
        p._afters = {}
    p._afters[run] = None

    def stop() -> bool:
        if p._afters is not None and run in p._afters:
            del p._afters[run]
            return True
        return False

    return stop
