"""The net layer's tests: connected conns, filling a conn's send path,
resets, descriptor flags, and probes for what this host supports."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from typing import Any, AsyncIterator

import netpoll
from netpoll import net


async def stream_pair(network: str = "tcp", address: Any = "127.0.0.1:0"):
    """(listener, client conn, server conn), connected over ``network``."""
    ln = net.listen(network, address)
    try:
        g = netpoll.go(ln.accept())
        c = await net.dial(network, ln.addr)
        s = await g
    except BaseException:
        ln.close()
        raise
    return ln, c, s


@contextlib.asynccontextmanager
async def conn_pair(network: str = "tcp", address: Any = "127.0.0.1:0") -> AsyncIterator[tuple[Any, Any, Any]]:
    """``async with conn_pair() as (ln, c, s):`` stream_pair's three, closed
    on the way out (the conns, then the listener)."""
    ln, c, s = await stream_pair(network, address)
    try:
        yield ln, c, s
    finally:
        c.close()
        s.close()
        ln.close()


def small_buffers(*conns: Any, size: int = 4096) -> None:
    """Shrink the kernel buffers so a send path fills with little data."""
    for c in conns:
        c._control(lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size))
        c._control(lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size))


async def fill_conn(conn: Any, chunk: int = 1 << 16, max_chunks: int = 1024) -> int:
    """Write until the send path is full (a write blocks past a short
    deadline); returns the bytes known written. The write deadline is
    cleared afterwards."""
    data = bytes(chunk)
    written = 0
    try:
        for _ in range(max_chunks):
            conn.set_write_deadline(netpoll.now() + 0.05)
            try:
                await conn.write(data)
            except TimeoutError:
                return written
            written += chunk
        raise AssertionError(f"the send path took {written} bytes without filling")
    finally:
        conn.set_write_deadline(None)


def linger_reset(conn: Any) -> None:
    """Close so that the peer gets a reset (SO_LINGER 0)."""
    conn.set_linger(0)
    conn.close()


def fd_flags(fd: int) -> tuple[bool, bool]:
    """(non-blocking, close-on-exec) for a descriptor."""
    return (bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK),
            bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF, e
        return False
    return True


def ipv6_loopback() -> bool:
    """Whether [::1] can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def refused_port() -> tuple[socket.socket, int]:
    """A loopback TCP port that is bound but not listening (connects to it are
    refused); keep the returned socket open while the port is used."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]
