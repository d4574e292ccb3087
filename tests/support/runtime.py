"""The runtime's tests: a socketpair registered with the running
runtime's poller, the FD layer's read/write loops written out by hand, and
where a goroutine is parked."""

from __future__ import annotations

import socket
from typing import Optional

import pytest

import netpoll
from netpoll import _sched
from netpoll._netpoll import monotonic_ns, pollclose

from .core import drain, fill


class Pair:
    """A non-blocking socketpair whose ``a`` end is registered with the
    running runtime (``pd``); ``b`` is the peer, driven directly.
    ``with Pair() as p:`` closes it on the way out."""

    def __init__(self, family: int = socket.AF_UNIX) -> None:
        self.sched = _sched.current()
        self.a, self.b = socket.socketpair(family, socket.SOCK_STREAM)
        self.a.setblocking(False)
        self.b.setblocking(False)
        self.pd = self.sched.pollopen(self.a.fileno())
        self.closed = False

    def __enter__(self) -> "Pair":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_deadline(self, d: int, mode: str) -> None:
        self.sched.wake(self.pd.set_deadline(d, mode))

    def evict(self) -> None:
        self.sched.wake(self.pd.evict())

    def close(self) -> None:
        """The FD layer's close: evict (wake every waiter), deregister, close.
        Also usable after run() has ended, to clean up after a failed test."""
        if self.closed:
            return
        self.closed = True
        if not self.pd.closing:
            woken = self.pd.evict()
            if _sched.running():
                self.sched.wake(woken)
        pollclose(self.pd)
        self.a.close()
        self.b.close()

    async def read(self, n: int = 65536) -> bytes:
        """FD.read: try recv, wait for 'r' on EAGAIN, try again."""
        while True:
            try:
                return self.a.recv(n)
            except BlockingIOError:
                await self.pd.wait("r")

    async def write(self, data: bytes) -> None:
        """FD.write: send it all, waiting for 'w' whenever the buffer is full."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.a.send(view):]
            except BlockingIOError:
                await self.pd.wait("w")

    def fill(self) -> int:
        """Fill ``a``'s send path until it would block; returns bytes queued."""
        return fill(self.a, settle=0)

    def drain_peer(self) -> int:
        return len(drain(self.b))


def parked_on(pd, mode: str, g: Optional[object] = None) -> bool:
    """Whether a goroutine (``g`` if given) is parked in ``pd``'s ``mode`` semaphore."""
    s = pd.sema(mode)
    if g is not None:
        return s is g
    return isinstance(s, _sched.G)


async def settle(n: int = 3) -> None:
    """Let every runnable goroutine get as far as it can (park)."""
    for _ in range(n):
        await netpoll.sleep(0)


async def expect_timeout(p: Pair, mode: str = "r"):
    """Block in ``mode`` until a DeadlineExceededError; return when (ns)."""
    with pytest.raises(netpoll.DeadlineExceededError) as info:
        if mode == "r":
            await p.read()
        else:
            await p.write(b"x" * 65536)
    return monotonic_ns(), info.value
