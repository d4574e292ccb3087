"""What every layer's tests use: running a main goroutine, time units,
descriptor counts, filling and draining sockets, exact reads, a socketpair
that closes itself."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import socket
import stat
import time
from typing import Any, Awaitable, Callable, Iterator, Optional, Union

import netpoll
from netpoll import _syscall
from netpoll._netpoll import monotonic_ns

MS = 1_000_000  # nanoseconds
# Timeouts for things that should happen "at once" and for short deadlines.
SHORT = 0.1
# How much later than its deadline an operation may return (slow CI hosts).
SLACK = 2.0


def run(backend_name: str, main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``main(*args)`` as the main goroutine under ``backend_name``."""
    return netpoll.run(main(*args), backend=backend_name)


def after(ms: float) -> int:
    """An absolute deadline (netpoll's nanoseconds) ``ms`` milliseconds from now."""
    return monotonic_ns() + int(ms * MS)


def _listing_dir() -> Optional[str]:
    # A directory that lists this process's descriptors, trusted only once it
    # showed one just opened: FreeBSD's /dev/fd without fdescfs lists 0-2
    # whatever is open. A NETPOLL_PORTABLE build uses none (on Linux /dev/fd
    # is /proc), so the scan below runs where /proc does not exist.
    if _syscall.PORTABLE:
        return None
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            r, w = os.pipe()
        except OSError:
            return None
        try:
            if {str(r), str(w)} <= set(os.listdir(d)):
                return d
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(w)
    return None


FD_DIR = _listing_dir()

# The scan: descriptors are numbered lowest-free first, so it stops after
# this many closed numbers in a row past the highest open one. A descriptor
# beyond such a gap (only after a test held that many more open and closed
# them, or a dup2 to a high number) is not seen.
SCAN_GAP = 256


def open_fds() -> set[int]:
    """The descriptors this process has open (less any the listing used):
    from /proc/self/fd or /dev/fd where they list them, else scanned."""
    return listed_fds(FD_DIR) if FD_DIR is not None else scanned_fds()


def listed_fds(d: str) -> set[int]:
    fds = set()
    for n in os.listdir(d):
        try:
            fcntl.fcntl(int(n), fcntl.F_GETFD)
        except OSError:
            continue
        fds.add(int(n))
    return fds


def scanned_fds() -> set[int]:
    """The open descriptors found by asking fcntl about each number, up to
    SCAN_GAP closed numbers past the highest open one (or RLIMIT_NOFILE)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY or limit <= 0:
        limit = 1 << 20
    fds = set()
    fd = 0
    top = SCAN_GAP
    while fd < top and fd < limit:
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            pass
        else:
            fds.add(fd)
            top = fd + 1 + SCAN_GAP
        fd += 1
    return fds


def describe_fd(fd: int) -> str:
    """What a descriptor is, for a leak report: its /proc link, else its type."""
    if FD_DIR == "/proc/self/fd":
        try:
            return os.readlink(f"{FD_DIR}/{fd}")
        except OSError:
            pass
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "?"
    for test, name in ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "pipe"), (stat.S_ISREG, "file"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device")):
        if test(mode):
            return name
    return f"mode {mode:o}"


def fd_count() -> int:
    """How many descriptors this process has open."""
    return len(open_fds())


def fill(target: Union[socket.socket, Callable[[bytes], int]], settle: float = 0.05, rounds: int = 20) -> int:
    """Write to ``target`` (a non-blocking socket, or a send function) until
    EAGAIN, pause ``settle`` seconds, and repeat until a write right after a
    pause gets EAGAIN at once: the send side is then full and stays full while
    the peer does not read. Returns the bytes written. ``settle=0`` stops at
    the second EAGAIN in a row, with no pause."""
    send = target.send if isinstance(target, socket.socket) else target
    chunk = b"\0" * 65536
    total = 0
    for _ in range(rounds):
        wrote = 0
        for _ in range(100_000):
            try:
                n = send(chunk)
            except BlockingIOError:
                break
            wrote += n
        total += wrote
        if wrote == 0:
            return total
        time.sleep(settle)
    raise AssertionError(f"the send side never stayed full ({total} bytes)")


def drain(sock: socket.socket, limit: int = 64 << 20) -> bytes:
    """Read a non-blocking socket until EAGAIN (or EOF); what was read."""
    out = bytearray()
    while len(out) < limit:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk
    raise AssertionError(f"socket still readable after {limit} bytes")


async def read_full(conn: Any, n: int, bufsize: int = 65536) -> bytes:
    """Exactly ``n`` bytes from a netpoll conn; EOFError on an early EOF."""
    out = bytearray()
    buf = bytearray(min(bufsize, max(n, 1)))
    while len(out) < n:
        m = await conn.read(memoryview(buf)[: min(len(buf), n - len(out))])
        if m == 0:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += buf[:m]
    return bytes(out)


async def read_all(conn: Any, bufsize: int = 65536, limit: int = 1 << 30) -> bytes:
    """Read a netpoll conn to EOF."""
    out = bytearray()
    buf = bytearray(bufsize)
    while True:
        m = await conn.read(buf)
        if m == 0:
            return bytes(out)
        out += buf[:m]
        assert len(out) <= limit, "peer sent more than expected"


@contextlib.contextmanager
def socket_pair(family: int = socket.AF_UNIX, type: int = socket.SOCK_STREAM,
                blocking: bool = False) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A socketpair (non-blocking unless asked), both ends closed on exit."""
    a, b = socket.socketpair(family, type)
    try:
        a.setblocking(blocking)
        b.setblocking(blocking)
        yield a, b
    finally:
        a.close()
        b.close()
