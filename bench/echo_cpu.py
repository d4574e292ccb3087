"""CPU time per echoed message, client and server in one netpoll process.

The same server loop as `netpoll bench` (wait_readable, read, write) and a
client goroutine per connection doing ping-pong over loopback TCP; the
figure is process CPU time (user+system) per round trip, which a busy
machine disturbs far less than wall-clock throughput.

    python bench/echo_cpu.py [--conns 64] [--msgs 2000] [--size 64] [--backend epoll] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import netpoll
from netpoll import net


async def _server(conn) -> None:
    buf = memoryview(bytearray(65536))
    try:
        while True:
            await conn.wait_readable()
            n = await conn.read(buf)
            if not n:
                return
            await conn.write(buf[:n])
    finally:
        conn.close()


async def _client(conn, msgs: int, size: int) -> None:
    msg = b"x" * size
    buf = memoryview(bytearray(size))
    try:
        for _ in range(msgs):
            await conn.write(msg)
            got = 0
            while got < size:
                n = await conn.read(buf[got:])
                if not n:
                    raise EOFError("server closed early")
                got += n
    finally:
        conn.close()


async def _main(conns: int, msgs: int, size: int) -> float:
    ln = net.listen("tcp", "127.0.0.1:0")
    clients = []
    servers = []
    for _ in range(conns):
        g = netpoll.go(ln.accept())
        c = await net.dial("tcp", ln.addr)
        s = await g
        servers.append(netpoll.go(_server(s)))
        clients.append(c)
    t0 = time.process_time()
    gs = [netpoll.go(_client(c, msgs, size)) for c in clients]
    for g in gs:
        await g
    cpu = time.process_time() - t0
    for g in servers:
        await g
    ln.close()
    return cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--msgs", type=int, default=2000, help="round trips per connection")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--backend", default=None)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    per = []
    for _ in range(a.runs):
        cpu = netpoll.run(_main(a.conns, a.msgs, a.size), backend=a.backend)
        per.append(cpu / (a.conns * a.msgs) * 1e6)
    print(f"backend {a.backend or netpoll.BACKEND}, {a.conns} conns x {a.msgs} round trips of {a.size} B: "
          f"CPU us per round trip (client+server) median {statistics.median(per):.2f} "
          f"(runs: {', '.join(f'{x:.2f}' for x in per)})")


if __name__ == "__main__":
    main()
