"""The backend conformance suite: stand-in waiters, netpoll until events
arrive, absorbing a fresh registration's edges, and a Kit that owns a test's
descriptors and registrations and undoes them in protocol order (evict,
pollclose, close).

Everything here works on real descriptors: socketpairs, pipes and TCP
connections on 127.0.0.1.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Callable, Iterable, Optional

from netpoll import _syscall
from netpoll._netpoll import pollclose, pollopen

from .core import MS

# rg/wg values as PollDesc.sema() shows them (see _netpoll.pyx).
PD_NIL = 0
PD_READY = 1


class Waiter:
    """A stand-in for a parked goroutine: anything netpollready can hand back."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Waiter {self.name}>"


def error_events(backend) -> bool:
    """Whether the backend can tell an error-only event from readiness.

    epoll (EPOLLERR) and poll (POLLERR) report an error condition by itself,
    and the core turns an error-only event into everr. select(2) cannot: it
    folds an error into the readable and writable sets; nor can kqueue on the
    BSDs, which reports an error as EV_EOF on the filter that fired (the Linux
    shim maps EPOLLERR alone to EV_ERROR). Backends state it with the class
    attribute ``error_events``.
    """
    return bool(type(backend).error_events)


def collect(backend, done: Callable[[list], bool], timeout: float = 2.0,
            step_ns: int = 10 * MS) -> list:
    """netpoll in short steps until ``done(results so far)`` or ``timeout``
    seconds; returns everything netpoll returned, in order."""
    got: list = []
    deadline = time.monotonic() + timeout
    while True:
        got += backend.netpoll(step_ns)
        if done(got) or time.monotonic() >= deadline:
            return got


def wait_for(backend, *waiters, timeout: float = 2.0) -> list:
    """netpoll until every one of ``waiters`` was returned; returns all results."""
    want = set(map(id, waiters))
    return collect(backend, lambda got: want <= set(map(id, got)), timeout)


def settle_edges(backend, pds: Iterable) -> None:
    """Edge-triggered backends report a fresh socket writable at once; absorb
    those initial events (nobody waits, so they only set pdReady) and drop the
    marks the way the FD layer's pollreset does before its first syscall."""
    pds = list(pds)
    if backend.edge_triggered:
        # A registration's first events are queued by the kernel when it is
        # made; a batch holds at least 64 of them (kqueue; epoll takes 128).
        for _ in range(len(pds) // 64 + 2):
            backend.netpoll(0)
    for pd in pds:
        pd.prepare("r")
        pd.prepare("w")


class Kit:
    """Descriptors and registrations of one test, undone in protocol order."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self._socks: list[socket.socket] = []
        self._fds: list[int] = []
        self._pds: list = []  # (pd, fdseq) of registrations this kit made

    # -- descriptors -----------------------------------------------------
    def _keep(self, *socks: socket.socket) -> None:
        for s in socks:
            s.setblocking(False)
            self._socks.append(s)

    def socketpair(self, family: int = socket.AF_UNIX, type: int = socket.SOCK_STREAM):
        a, b = socket.socketpair(family, type)
        self._keep(a, b)
        return a, b

    def pipe(self) -> tuple[int, int]:
        r, w = _syscall.pipe()  # pipe2 where the system has it
        self._fds += [r, w]
        return r, w

    def tcp_pair(self, sndbuf: Optional[int] = None, rcvbuf: Optional[int] = None):
        """(client, server) connected over 127.0.0.1, both non-blocking."""
        ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                ln.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            ln.bind(("127.0.0.1", 0))
            ln.listen(1)
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._keep(c)
            c.setblocking(True)
            if sndbuf:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            c.settimeout(5)
            c.connect(ln.getsockname())
            ln.settimeout(5)
            s, _ = ln.accept()
            self._keep(s)
            c.setblocking(False)
            s.setblocking(False)
        finally:
            ln.close()
        return c, s

    def adopt_fd(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close_fd(self, fd: int) -> None:
        self._fds.remove(fd)
        os.close(fd)

    # -- registrations ---------------------------------------------------
    def open(self, obj, timers=None):
        fd = obj if isinstance(obj, int) else obj.fileno()
        pd = pollopen(self.backend, fd, timers)
        self._pds.append((pd, pd.fdseq))
        return pd

    def close_pd(self, pd) -> list:
        """Go's close order: evict (wake everyone), then pollclose."""
        woken = [] if pd.closing else pd.evict()
        pollclose(pd)
        return woken

    def cleanup(self) -> None:
        errs = []
        for pd, seq in reversed(self._pds):
            if pd.fdseq != seq:  # already freed (and maybe reused)
                continue
            try:
                if not pd.closing:
                    pd.evict()
                pollclose(pd)
            except Exception as e:  # keep closing the rest
                errs.append(e)
        self._pds.clear()
        for s in self._socks:
            s.close()
        self._socks.clear()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EBADF:
                    errs.append(e)
        self._fds.clear()
        if errs:
            raise errs[0]


def rst_close(sock: socket.socket) -> None:
    """Close a TCP socket with SO_LINGER 0: the peer gets a reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
