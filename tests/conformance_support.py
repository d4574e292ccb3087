"""Helpers for the backend conformance suite (imported by tests/conftest.py and
the modules under tests/conformance/).

Everything here works on real descriptors: socketpairs, pipes and TCP
connections on 127.0.0.1. A ``Kit`` owns what a test opens and undoes it in
the order the protocol requires: evict, pollclose (netpollclose), then close
the descriptors.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import os
import resource
import socket
import stat
import struct
import time
from typing import Callable, Iterable, Optional

from netpoll import _syscall
from netpoll._netpoll import pollclose, pollopen

MS = 1_000_000  # nanoseconds

# rg/wg values as PollDesc.sema() shows them (see _netpoll.pyx).
PD_NIL = 0
PD_READY = 1


class Waiter:
    """A stand-in for a parked goroutine: anything netpollready can hand back."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Waiter {self.name}>"


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


def drain(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Read until EAGAIN (or EOF); return what was read."""
    out = bytearray()
    while len(out) < limit:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def fill(send: Callable[[bytes], int], settle: float = 0.05, rounds: int = 20) -> int:
    """Write until EAGAIN, pause, and repeat until a write right after a pause
    gets EAGAIN at once: the send side is then full and stays full while the
    peer does not read. Returns the bytes written."""
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
    raise AssertionError("the send side never stayed full")


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


# -- the shadowed-test guard -------------------------------------------------

def shadowed_tests(source: str) -> list[str]:
    """Test functions, test classes and test methods defined twice in the same
    scope of a module: the later definition silently replaces the earlier,
    whose test then never runs."""
    tree = ast.parse(source)
    found: list[str] = []

    def scan(body, prefix: str) -> None:
        seen: dict[str, int] = {}
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
                if name.startswith(("test", "Test")):
                    if name in seen:
                        found.append(f"{prefix}{name} (lines {seen[name]} and {node.lineno})")
                    else:
                        seen[name] = node.lineno
                if isinstance(node, ast.ClassDef):
                    scan(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id.startswith("test") and t.id in seen:
                        found.append(f"{prefix}{t.id} (lines {seen[t.id]} and {node.lineno})")

    scan(tree.body, "")
    return found
