"""The cost of one conn.read call that finds data (no parking): 64-byte
reads from a loopback TCP stream with 160 KiB queued, in ns per call.

    python bench/conn_read.py [--backend epoll] [--runs 15]

Prints the minimum (the best estimate on a shared machine) and the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import netpoll
from netpoll import net

READS = 2560


async def _main(runs: int) -> list[float]:
    ln = net.listen("tcp", "127.0.0.1:0")
    g = netpoll.go(ln.accept())
    c = await net.dial("tcp", ln.addr)
    s = await g
    buf = memoryview(bytearray(64))
    out = []
    try:
        for _ in range(runs):
            for _ in range(40):
                await c.write(b"x" * 4096)
            await netpoll.sleep(0.01)
            t0 = time.perf_counter_ns()
            for _ in range(READS):
                await s.read(buf)
            out.append((time.perf_counter_ns() - t0) / READS)
    finally:
        c.close()
        s.close()
        ln.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default=None)
    p.add_argument("--runs", type=int, default=15)
    a = p.parse_args()
    r = netpoll.run(_main(a.runs), backend=a.backend)
    print(f"backend {a.backend or netpoll.BACKEND}: conn.read of 64 B from a queued stream: "
          f"ns per call min {min(r):.0f}, median {statistics.median(r):.0f} over {len(r)} runs")


if __name__ == "__main__":
    main()
