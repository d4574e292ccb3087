"""N processes, one port: each worker runs its own netpoll runtime with its
own SO_REUSEPORT listener, and the kernel spreads connections among them.
This is how a Python server uses every core.

Every connection gets one line, "worker PID", then an echo of what it sends.

    python examples/reuseport_workers.py [--workers N] [--host 127.0.0.1] [--port 8080] [--backend NAME]

The parent picks the port (port 0: the kernel's choice), forks the workers,
prints "serving HOST:PORT with N workers (backend NAME)" once every worker
listens, and on SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys

import netpoll
from netpoll import net


async def serve_conn(conn: net.Conn, hello: bytes) -> None:
    # A reset ends this connection only (an exception escaping a goroutine
    # would end run(), the whole worker).
    with conn, contextlib.suppress(OSError):
        await conn.write(hello)
        buf = bytearray(16384)
        while n := await conn.read(buf):
            await conn.write(memoryview(buf)[:n])


async def worker(addr: str, ready_fd: int) -> None:
    ln = net.ListenConfig(reuse_port=True).listen("tcp", addr)
    os.write(ready_fd, b".")
    os.close(ready_fd)
    hello = b"worker %d\n" % os.getpid()
    with ln:
        while True:
            try:
                conn = await ln.accept()
            except OSError as e:
                if isinstance(e, net.OpError) and e.temporary():
                    await netpoll.sleep(0.01)  # EMFILE and friends: back off, as Go's Serve
                    continue
                raise
            netpoll.go(serve_conn(conn, hello))


def reserve(host: str, port: int) -> socket.socket:
    # Bound with SO_REUSEPORT (not listening) so that port 0 becomes one
    # concrete port every worker can bind too; closed once they listen.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--backend", default=None)
    args = ap.parse_args()
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if not hasattr(socket, "SO_REUSEPORT"):
        print("reuseport_workers: this system has no SO_REUSEPORT", file=sys.stderr)
        return 2
    backend = args.backend or netpoll.BACKEND
    held = reserve(args.host, args.port)
    addr = net.join_host_port(args.host, held.getsockname()[1])
    ready_r, ready_w = os.pipe()
    pids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:  # the worker: its own runtime, its own listener
            os.close(ready_r)
            held.close()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                netpoll.run(worker(addr, ready_w), backend=backend)
            except BaseException as e:  # noqa: BLE001 - reported, then the worker exits
                print(f"worker {os.getpid()}: {e!r}", file=sys.stderr)
                code = 1
            os._exit(code)
        pids.append(pid)
    os.close(ready_w)
    got = b""
    while len(got) < args.workers:
        chunk = os.read(ready_r, args.workers)
        if not chunk:
            break
        got += chunk
    os.close(ready_r)
    held.close()
    if len(got) < args.workers:
        print(f"reuseport_workers: {args.workers - len(got)} worker(s) failed to listen", file=sys.stderr)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            os.waitpid(pid, 0)
        return 1
    print(f"serving {addr} with {args.workers} workers (backend {backend})", flush=True)

    def stop(signum: int, frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(st) not in (0, -signal.SIGTERM):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
