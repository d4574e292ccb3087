"""Helpers of the network-fault tests: running a runtime on a path (its
thread in the client namespace, listeners made in the server namespace),
RST rules against one end,
exact reads, keep-alive settings, RSS, and a plain-socket peer process."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any, Awaitable, Callable, Optional

import netpoll
from netpoll import net

import netns

# How much later than its deadline an operation may end (a loaded CI host).
SLACK = 2.0


def run(path: netns.Path, backend_name: str, main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``main(*args)`` as the main goroutine under ``backend_name``, with the
    runtime's thread in the client namespace: every dial comes from there."""
    with path.client.entered():
        return netpoll.run(main(*args), backend=backend_name)


def listen(path: netns.Path, backlog: Optional[int] = None) -> net.Listener:
    """A TCP listener on every address of the server namespace."""
    with path.server.entered():
        return net.listen("tcp", "0.0.0.0:0", backlog=backlog)


def addr(path: netns.Path, ln: net.Listener, link: Optional[netns.Link] = None) -> str:
    """The listener's address as the client sees it across ``link``."""
    return f"{(link or path.link).server_ip}:{ln.addr.port}"


async def pair(path: netns.Path, timeout: float = 10.0):
    """(listener, client conn, server conn) across the path."""
    ln = listen(path)
    try:
        g = netpoll.go(ln.accept())
        c = await net.dial("tcp", addr(path, ln), timeout=timeout)
        s = await g
    except BaseException:
        ln.close()
        raise
    return ln, c, s


def reject_from(path: netns.Path, victim: str, conn: Any) -> str:
    """A rule that answers every packet of ``conn``'s end (``victim``:
    "client" or "server") with a RST; it sits in the other end's namespace."""
    port = conn.local_addr.port
    if victim == "client":
        return path.add_rule("server", "input", f'iifname "{path.link.server_dev}" '
                             f"ip saddr {path.link.client_ip} tcp sport {port} reject with tcp reset")
    return path.add_rule("client", "input", f'iifname "{path.link.client_dev}" '
                         f"ip saddr {path.link.server_ip} tcp sport {port} reject with tcp reset")


def close_all(*fds: Any) -> None:
    for fd in fds:
        if fd is not None:
            fd.close()


async def read_full(conn: Any, n: int) -> bytes:
    out = bytearray()
    buf = bytearray(min(65536, max(n, 1)))
    while len(out) < n:
        m = await conn.read(memoryview(buf)[: min(len(buf), n - len(out))])
        if m == 0:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += buf[:m]
    return bytes(out)


def set_keep_alive(conn: net.Conn, idle: int, interval: int, count: int) -> None:
    """Keep-alive on (the public ``set_keep_alive``), with probe timing set
    on the conn's own socket: ``idle`` s of silence, then ``count`` probes
    ``interval`` s apart before the kernel gives up with ETIMEDOUT."""
    conn.set_keep_alive(True)
    s = socket.socket(fileno=conn.fileno())  # the conn's socket, not a copy
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    finally:
        s.detach()


def import_bench(name: str):
    """A module of bench/ (bench/soak.py is a script and a library), loaded
    from its file, once."""
    if name not in sys.modules:
        bench = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "bench")
        spec = importlib.util.spec_from_file_location(name, os.path.join(bench, name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# A peer that nobody here wrote the networking of: CPython's blocking
# sockets, in a process of its own in the client namespace. It connects to
# argv[1]:argv[2] and then, by argv[3]:
#   send  - writes 64 KiB chunks for ever;
#   recv  - reads for ever (and exits at EOF);
#   echo  - answers every line it reads with the same line.
# It prints "connected" once connected, so the test knows when to act.
PEER = textwrap.dedent("""
    import socket, sys
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.create_connection((host, port), timeout=30)
    s.settimeout(None)
    print("connected", flush=True)
    if mode == "send":
        chunk = bytes(range(256)) * 256
        while True:
            s.sendall(chunk)
    elif mode == "recv":
        while s.recv(65536):
            pass
    else:
        f = s.makefile("rwb", buffering=0)
        for line in f:
            f.write(line)
""")


def start_peer(path: netns.Path, address: str, mode: str) -> subprocess.Popen:
    host, port = address.rsplit(":", 1)
    return path.client.popen([sys.executable, "-c", PEER, host, port, mode],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=dict(os.environ))


def stop_peer(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(timeout=10)
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()
