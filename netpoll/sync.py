"""Goroutine coordination in Go's spirit: Chan, Event, WaitGroup.

All of them park through the scheduler's single trap (``_sched.park``) and are
used from goroutines of one runtime. A goroutine closed while it waits is
taken out of the wait queue (the ``cancel`` half of each park).
"""

from __future__ import annotations

from collections import deque
from typing import Any, AsyncIterator, Generic, TypeVar

from netpoll._sched import park, ready

T = TypeVar("T")


class ChannelClosed(Exception):
    """Receive on a closed, drained channel, or send on a closed one."""


_CLOSED = object()


class Chan(Generic[T]):
    """A Go channel: ``cap`` 0 is a rendezvous; ``close`` wakes every waiter."""

    def __init__(self, cap: int = 0) -> None:
        if not isinstance(cap, int) or cap < 0:
            raise ValueError(f"Chan capacity must be an int >= 0, not {cap!r}")
        self.cap = cap
        self.closed = False
        self._buf: deque[T] = deque()
        self._recvq: deque[Any] = deque()  # parked receivers (G)
        self._sendq: deque[list[Any]] = deque()  # [G, value] of parked senders

    def __len__(self) -> int:
        return len(self._buf)

    async def send(self, value: T) -> None:
        if self.closed:
            raise ChannelClosed("send on closed channel")
        if self._recvq:
            ready(self._recvq.popleft(), (value, True))
            return
        if len(self._buf) < self.cap:
            self._buf.append(value)
            return
        entry: list[Any] = [None, value]

        def commit(g: Any) -> bool:
            entry[0] = g
            self._sendq.append(entry)
            return True

        def cancel() -> None:
            if entry in self._sendq:
                self._sendq.remove(entry)

        if await park(commit, cancel) is _CLOSED:
            raise ChannelClosed("send on closed channel")

    async def recv(self) -> T:
        """The next value; raises ChannelClosed once closed and drained."""
        value, ok = await self.recv2()
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return value

    async def recv2(self) -> tuple[Any, bool]:
        """Go's ``v, ok := <-ch``: (None, False) once closed and drained."""
        if self._buf:
            value = self._buf.popleft()
            if self._sendq:
                g, sv = self._sendq.popleft()
                self._buf.append(sv)
                ready(g, True)
            return value, True
        if self._sendq:
            g, sv = self._sendq.popleft()
            ready(g, True)
            return sv, True
        if self.closed:
            return None, False
        holder: list[Any] = []

        def commit(g: Any) -> bool:
            holder.append(g)
            self._recvq.append(g)
            return True

        def cancel() -> None:
            if holder and holder[0] in self._recvq:
                self._recvq.remove(holder[0])

        return await park(commit, cancel)

    def close(self) -> None:
        if self.closed:
            raise ChannelClosed("close of closed channel")
        self.closed = True
        while self._recvq:
            ready(self._recvq.popleft(), (None, False))
        while self._sendq:
            g, _ = self._sendq.popleft()
            ready(g, _CLOSED)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[T]:
        while True:
            value, ok = await self.recv2()
            if not ok:
                return
            yield value


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
