"""Goroutine coordination in Go's spirit: Chan and select, Mutex, Once,
Event, WaitGroup.

All of them park through the scheduler's single trap (``_sched.park``). A
channel belongs to the runtime that first uses it; a goroutine of another
runtime gets a clear error (a channel whose runtime has ended may be used
by a new one). A goroutine closed while it waits is taken out of the wait
queue (the ``cancel`` half of each park).

Channels follow Go's runtime/chan.go: a parked sender or receiver is a
``_Sudog`` in the channel's send or receive queue. A select parks one sudog
per case, all sharing one list; whoever takes one of them first kills the
others, so a case not chosen leaves no trace. A killed sudog stays queued
until it reaches the head of its queue or the queue is compacted (dead
entries are counted per channel), which makes taking a case O(1) however
many selects wait on one channel (a context's done channel).
"""

from __future__ import annotations

import random as _random
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, Optional, TypeVar, Union

from netpoll._sched import current_or_none as _cur
from netpoll._sched import Sudog, park, park_enqueue, park_enqueue_all, ready
from netpoll.errors import NetpollError

T = TypeVar("T")

__all__ = ["Chan", "ChannelClosed", "select", "Mutex", "Once", "Event", "WaitGroup"]


class ChannelClosed(Exception):
    """Receive on a closed, drained channel, or send on a closed one."""


_CLOSED = object()
_COMPACT = 64  # dead sudogs a channel tolerates before compacting its queues


_Sudog = Sudog


def _kill(sd: _Sudog) -> None:
    # sd stays in its queue, dead; compaction bounds how many pile up.
    sd.live = False
    ch = sd.ch
    ch._ndead += 1
    if ch._ndead > _COMPACT:
        ch._compact()


def _cancel(sd: _Sudog) -> None:
    # A goroutine closed while parked on a plain send or receive.
    if sd.live:
        _kill(sd)


def _cancel_all(sel: list[_Sudog]) -> None:
    # A goroutine closed while parked in a select.
    for sd in sel:
        if sd.live:
            _kill(sd)


def _claim(sd: _Sudog) -> None:
    # sd was just taken off its queue: it and the other cases of its select
    # are finished.
    sd.live = False
    sel = sd.sel
    if sel is not None:
        for other in sel:
            if other.live:
                _kill(other)


def _take(q: Optional[deque[_Sudog]]) -> Optional[_Sudog]:
    # The first live sudog of q, taken off it; dead ones are dropped.
    while q:
        sd = q.popleft()
        if sd.live:
            return sd
        sd.ch._ndead -= 1
    return None


def _waiting(q: Optional[deque[_Sudog]]) -> bool:
    while q:
        sd = q[0]
        if sd.live:
            return True
        q.popleft()
        sd.ch._ndead -= 1
    return False


def _hand_recv(sd: _Sudog, value: Any, ok: bool) -> None:
    # Complete a parked receive with (value, ok).
    if sd.sel is None:
        sd.live = False
        ready(sd.g, (value, ok))
    else:
        _claim(sd)
        ready(sd.g, (sd.idx, value, ok))


def _hand_send(sd: _Sudog, closed: bool) -> None:
    # Complete a parked send: its value was taken, or the channel closed.
    if sd.sel is None:
        sd.live = False
        ready(sd.g, _CLOSED if closed else True)
    else:
        _claim(sd)
        ready(sd.g, (sd.idx, _CLOSED if closed else None, not closed))


class Chan(Generic[T]):
    """A Go channel: ``cap`` 0 is a rendezvous; ``close`` wakes every waiter."""

    __slots__ = ("cap", "closed", "_buf", "_recvq", "_sendq", "_ndead", "_rt", "__weakref__")

    def __init__(self, cap: int = 0) -> None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            raise ValueError(f"Chan capacity must be an int >= 0, not {cap!r}")
        self.cap = cap
        self.closed = False
        # Created on first use: 100,000 timer channels must stay small.
        self._buf: Optional[deque[T]] = None
        self._recvq: Optional[deque[_Sudog]] = None
        self._sendq: Optional[deque[_Sudog]] = None
        self._ndead = 0
        self._rt: Any = None

    def __len__(self) -> int:
        return len(self._buf) if self._buf else 0

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Chan cap={self.cap} len={len(self)}{state}>"

    def _bind(self, rt: Any) -> None:
        old = self._rt
        if old is not None and old.running:
            if rt is None:
                raise NetpollError(
                    "netpoll: a channel was used from a thread outside its runtime; hand the "
                    "call to it with rt.call_soon_threadsafe(...)")
            raise NetpollError(
                "netpoll: a channel of another runtime was used; a channel belongs to the "
                "runtime that first used it")
        if rt is not None:
            self._rt = rt

    def _compact(self) -> None:
        # In place: a park about to commit may hold a queue.
        for q in (self._recvq, self._sendq):
            if q:
                live = [sd for sd in q if sd.live]
                q.clear()
                q.extend(live)
        self._ndead = 0

    def recv_case(self) -> "_Case":
        """A receive case for ``select``."""
        return _Case(self, False, None)

    def send_case(self, value: T) -> "_Case":
        """A send case for ``select``."""
        return _Case(self, True, value)

    async def send(self, value: T) -> None:
        """Send; waits for a receiver or buffer room. Raises ChannelClosed on a
        closed channel (Go panics)."""
        rt = _cur()
        if rt is not self._rt:
            self._bind(rt)
        if self.closed:
            raise ChannelClosed("send on closed channel")
        q = self._recvq
        while q:
            sd = q.popleft()
            if sd.live:
                if sd.sel is None:
                    sd.live = False
                    ready(sd.g, (value, True))
                else:
                    _hand_recv(sd, value, True)
                return
            self._ndead -= 1
        if self.cap:
            buf = self._buf
            if buf is None:
                buf = self._buf = deque()
            if len(buf) < self.cap:
                buf.append(value)
                return
        q = self._sendq
        if q is None:
            q = self._sendq = deque()
        if await park_enqueue(q, _Sudog(self, value, None, 0), _cancel) is _CLOSED:
            raise ChannelClosed("send on closed channel")

    def _offer(self, value: Any) -> bool:
        # A send that never waits (timers, signals): False when it would.
        if self.closed:
            return False
        sd = _take(self._recvq)
        if sd is not None:
            _hand_recv(sd, value, True)
            return True
        if self.cap:
            buf = self._buf
            if buf is None:
                buf = self._buf = deque()
            if len(buf) < self.cap:
                buf.append(value)
                return True
        return False

    def _drain(self) -> bool:
        # Drop buffered values (a timer's stale tick); True when one was there.
        if self._buf:
            self._buf.clear()
            return True
        return False

    async def recv(self) -> T:
        """The next value; raises ChannelClosed once closed and drained."""
        rt = _cur()
        if rt is not self._rt:
            self._bind(rt)
        buf = self._buf
        if buf:
            value = buf.popleft()
            sd = _take(self._sendq)
            if sd is not None:
                buf.append(sd.value)
                _hand_send(sd, False)
            return value
        q = self._sendq
        while q:
            sd = q.popleft()
            if sd.live:
                if sd.sel is None:
                    sd.live = False
                    ready(sd.g, True)
                else:
                    _hand_send(sd, False)
                return sd.value
            self._ndead -= 1
        if not self.closed:
            value, ok = await self._park_recv()
            if ok:
                return value
        raise ChannelClosed("receive from closed channel")

    async def recv2(self) -> tuple[Any, bool]:
        """Go's ``v, ok := <-ch``: (None, False) once closed and drained."""
        rt = _cur()
        if rt is not self._rt:
            self._bind(rt)
        buf = self._buf
        if buf:
            value = buf.popleft()
            sd = _take(self._sendq)
            if sd is not None:
                buf.append(sd.value)
                _hand_send(sd, False)
            return value, True
        sd = _take(self._sendq)
        if sd is not None:
            _hand_send(sd, False)
            return sd.value, True
        if self.closed:
            return None, False
        return await self._park_recv()

    def _park_recv(self) -> Awaitable[tuple[Any, bool]]:
        # Not a coroutine: the park itself is what recv and recv2 await.
        q = self._recvq
        if q is None:
            q = self._recvq = deque()
        return park_enqueue(q, _Sudog(self, None, None, 0), _cancel)

    def close(self) -> None:
        """Close: receivers drain the buffer, then get (None, False); parked
        senders raise ChannelClosed. Closing twice raises it too."""
        rt = _cur()
        if rt is not self._rt:
            self._bind(rt)
        if self.closed:
            raise ChannelClosed("close of closed channel")
        self.closed = True
        while True:
            sd = _take(self._recvq)
            if sd is None:
                break
            _hand_recv(sd, None, False)
        while True:
            sd = _take(self._sendq)
            if sd is None:
                break
            _hand_send(sd, True)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[T]:
        while True:
            value, ok = await self.recv2()
            if not ok:
                return
            yield value


class _Case:
    __slots__ = ("ch", "send", "value")

    def __init__(self, ch: Chan[Any], send: bool, value: Any) -> None:
        self.ch = ch
        self.send = send
        self.value = value

    def __repr__(self) -> str:
        return f"<{'send' if self.send else 'recv'} case on {self.ch!r}>"


def _case_ready(c: _Case) -> bool:
    ch = c.ch
    if c.send:
        # A send on a closed channel is "ready" to raise, as Go panics.
        return ch.closed or _waiting(ch._recvq) or (ch.cap > 0 and len(ch) < ch.cap)
    return bool(ch._buf) or _waiting(ch._sendq) or ch.closed


async def select(*cases: _Case, default: bool = False) -> tuple[int, Any, bool]:
    """Go's select over receive and send cases: ``(index, value, ok)``.

    ``index`` is the chosen case; ``value`` is what it received (None for a
    send); ``ok`` is False for a receive from a closed channel. When several
    cases are ready one is chosen uniformly at random; a case not chosen has
    no effect. With ``default=True`` and nothing ready it returns
    ``(-1, None, False)`` at once. A send case on a closed channel raises
    ChannelClosed when chosen. No cases and no default waits forever.
    """
    rt = _cur()
    k = 0
    chosen = -1
    for i, c in enumerate(cases):
        if type(c) is not _Case:
            raise TypeError(f"select: case {i} is {c!r}, not ch.recv_case() or ch.send_case(v)")
        ch = c.ch
        if rt is not ch._rt:
            ch._bind(rt)
        if _case_ready(c):
            # Reservoir sampling: uniform over the ready cases.
            k += 1
            if k == 1 or _random.random() * k < 1.0:
                chosen = i
    if chosen >= 0:
        c = cases[chosen]
        ch = c.ch
        if c.send:
            if ch.closed:
                raise ChannelClosed("send on closed channel")
            ch._offer(c.value)
            return chosen, None, True
        buf = ch._buf
        if buf:
            value = buf.popleft()
            sd = _take(ch._sendq)
            if sd is not None:
                buf.append(sd.value)
                _hand_send(sd, False)
            return chosen, value, True
        sd = _take(ch._sendq)
        if sd is not None:
            _hand_send(sd, False)
            return chosen, sd.value, True
        return chosen, None, False
    if default:
        return -1, None, False
    sel: list[_Sudog] = []
    qs: list[deque[_Sudog]] = []
    for i, c in enumerate(cases):
        ch = c.ch
        sel.append(_Sudog(ch, c.value, sel, i))
        if c.send:
            q = ch._sendq
            if q is None:
                q = ch._sendq = deque()
        else:
            q = ch._recvq
            if q is None:
                q = ch._recvq = deque()
        qs.append(q)
    i, value, ok = await park_enqueue_all(qs, sel, _cancel_all)
    if value is _CLOSED:
        raise ChannelClosed("send on closed channel")
    return i, value, ok


# ---------------------------------------------------------------------------
# Mutex and Once
# ---------------------------------------------------------------------------


class Mutex:
    """Go's sync.Mutex for goroutines: ``async with mu:`` or ``await
    mu.lock()`` / ``mu.unlock()``. Unlock hands the mutex to the longest
    waiter (no barging), so no waiter starves."""

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[list[Any]] = deque()  # [g] or [None] once cancelled

    def locked(self) -> bool:
        return self._locked

    def try_lock(self) -> bool:
        if self._locked:
            return False
        self._locked = True
        return True

    async def lock(self) -> None:
        if not self._locked:
            self._locked = True
            return
        entry: list[Any] = [None]

        def commit(g: Any) -> bool:
            entry[0] = g
            self._waiters.append(entry)
            return True

        def cancel() -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)

        await park(commit, cancel)  # unlock handed the mutex over, still locked

    def unlock(self) -> None:
        if not self._locked:
            raise RuntimeError("sync: unlock of unlocked mutex")
        if self._waiters:
            ready(self._waiters.popleft()[0])
        else:
            self._locked = False

    async def __aenter__(self) -> "Mutex":
        await self.lock()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.unlock()


class Once:
    """Go's sync.Once: ``await once.do(fn)`` calls ``fn`` (a function or an
    async function) the first time only; concurrent callers wait until that
    first call has returned. A call that raised still counts as done."""

    __slots__ = ("_done", "_running")

    def __init__(self) -> None:
        self._done = False
        self._running: Optional[Event] = None

    def done(self) -> bool:
        return self._done

    async def do(self, fn: Callable[[], Union[Any, Awaitable[Any]]]) -> None:
        if self._done:
            return
        if self._running is not None:
            await self._running.wait()
            return
        ev = self._running = Event()
        try:
            r = fn()
            if hasattr(r, "__await__"):
                await r
        finally:
            self._done = True
            self._running = None
            ev.set()


# ---------------------------------------------------------------------------
# Event and WaitGroup
# ---------------------------------------------------------------------------


class _WaitQueue:
    def __init__(self) -> None:
        self._waiters: list[Any] = []

    async def park(self) -> None:
        holder: list[Any] = []

        def commit(g: Any) -> bool:
            holder.append(g)
            self._waiters.append(g)
            return True

        def cancel() -> None:
            if holder and holder[0] in self._waiters:
                self._waiters.remove(holder[0])

        await park(commit, cancel)

    def wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for g in waiters:
            ready(g)


class Event:
    """Set once; ``await wait()`` returns when it is set."""

    def __init__(self) -> None:
        self._set = False
        self._q = _WaitQueue()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        self._q.wake_all()

    async def wait(self) -> None:
        if not self._set:
            await self._q.park()


class WaitGroup:
    """Go's sync.WaitGroup: ``add(n)``, ``done()``, ``await wait()``."""

    def __init__(self) -> None:
        self._n = 0
        self._q = _WaitQueue()

    def add(self, n: int = 1) -> None:
        if self._n + n < 0:
            raise ValueError("sync: negative WaitGroup counter")
        self._n += n
        if self._n == 0:
            self._q.wake_all()

    def done(self) -> None:
        self.add(-1)

    async def wait(self) -> None:
        if self._n:
            await self._q.park()
