"""Goroutine runtime benchmark: netpoll against asyncio (and uvloop).

    python3 bench/runtime_bench.py [--rounds N] [--backend NAME]

Two workloads, each run side by side in alternating rounds, reported as the
median rate over the rounds and the ratio of netpoll to each contender:

spawn   start a batch of goroutines that return at once, then await every
        handle: ``netpoll.go(f())`` against ``asyncio.create_task(f())``.
pingpong
        two goroutines on a socketpair bounce one byte back and forth; each
        side does non-blocking recv/send and ``await pd.wait('r')`` on EAGAIN
        (the FD layer's loop written out), against the same two tasks written
        with asyncio streams (``asyncio.open_connection(sock=...)``) on the
        stdlib loop and, when importable, on uvloop.

Targets: pingpong >= 2x asyncio streams on the stdlib loop and >= 1x on
uvloop; spawn >= 2x create_task + await.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import netpoll
except ImportError:  # a source checkout without an install
    sys.path.insert(0, os.path.dirname(HERE))
    import netpoll
from netpoll import _sched
from netpoll._netpoll import pollclose

try:
    import uvloop
except ImportError:
    uvloop = None

SPAWN_BATCH = 10_000
SPAWN_BATCHES = 5
PINGPONG_TRIPS = 20_000


# ---------------------------------------------------------------------------
# spawn + finish
# ---------------------------------------------------------------------------


async def _nothing():
    return 1


async def _np_spawn(batches: int, batch: int) -> float:
    go = netpoll.go
    f = _nothing
    t0 = time.perf_counter()
    for _ in range(batches):
        hs = [go(f()) for _ in range(batch)]
        for h in hs:
            await h
    return time.perf_counter() - t0


async def _aio_spawn(batches: int, batch: int) -> float:
    create_task = asyncio.create_task
    f = _nothing
    t0 = time.perf_counter()
    for _ in range(batches):
        ts = [create_task(f()) for _ in range(batch)]
        for t in ts:
            await t
    return time.perf_counter() - t0


def spawn_netpoll(backend: str) -> float:
    n = SPAWN_BATCHES * SPAWN_BATCH
    return n / netpoll.run(_np_spawn(SPAWN_BATCHES, SPAWN_BATCH), backend=backend)


def spawn_asyncio(loop_factory) -> float:
    n = SPAWN_BATCHES * SPAWN_BATCH
    return n / _run_asyncio(_aio_spawn(SPAWN_BATCHES, SPAWN_BATCH), loop_factory)


# ---------------------------------------------------------------------------
# ping-pong over a socketpair
# ---------------------------------------------------------------------------


async def _np_side(sock: socket.socket, pd, n: int, first: bool) -> None:
    recv, send, wait = sock.recv, sock.send, pd.wait
    for _ in range(n):
        if first:
            while True:
                try:
                    send(b"p")
                    break
                except BlockingIOError:
                    await wait("w")
        while True:
            try:
                if recv(1):
                    break
                raise EOFError("peer closed")
            except BlockingIOError:
                await wait("r")
        if not first:
            while True:
                try:
                    send(b"q")
                    break
                except BlockingIOError:
                    await wait("w")


async def _np_pingpong(n: int) -> float:
    s = _sched.current()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    pa, pb = s.pollopen(a.fileno()), s.pollopen(b.fileno())
    try:
        t0 = time.perf_counter()
        x = netpoll.go(_np_side(a, pa, n, True))
        y = netpoll.go(_np_side(b, pb, n, False))
        await x
        await y
        return time.perf_counter() - t0
    finally:
        for pd in (pa, pb):
            s.wake(pd.evict())
            pollclose(pd)
        a.close()
        b.close()


async def _aio_side(reader, writer, n: int, first: bool) -> None:
    for _ in range(n):
        if first:
            writer.write(b"p")
            await writer.drain()
            await reader.readexactly(1)
        else:
            await reader.readexactly(1)
            writer.write(b"q")
            await writer.drain()


async def _aio_pingpong(n: int) -> float:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    try:
        t0 = time.perf_counter()
        await asyncio.gather(_aio_side(ra, wa, n, True), _aio_side(rb, wb, n, False))
        return time.perf_counter() - t0
    finally:
        wa.close()
        wb.close()
        await wa.wait_closed()
        await wb.wait_closed()


def pingpong_netpoll(backend: str) -> float:
    return PINGPONG_TRIPS / netpoll.run(_np_pingpong(PINGPONG_TRIPS), backend=backend)


def pingpong_asyncio(loop_factory) -> float:
    return PINGPONG_TRIPS / _run_asyncio(_aio_pingpong(PINGPONG_TRIPS), loop_factory)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def _run_asyncio(coro, loop_factory):
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def contenders(backend: str):
    """(workload, [(label, fn)]) with netpoll first."""
    loops = [("asyncio", asyncio.new_event_loop)]
    if uvloop is not None:
        loops.append(("uvloop", uvloop.new_event_loop))
    return [
        ("spawn+finish (goroutines/s)",
         [(f"netpoll[{backend}]", lambda: spawn_netpoll(backend))]
         + [(f"{name} create_task", (lambda lf=lf: spawn_asyncio(lf))) for name, lf in loops]),
        ("ping-pong (round trips/s)",
         [(f"netpoll[{backend}]", lambda: pingpong_netpoll(backend))]
         + [(f"{name} streams", (lambda lf=lf: pingpong_asyncio(lf))) for name, lf in loops]),
    ]


TARGETS = {
    ("ping-pong (round trips/s)", "asyncio streams"): 2.0,
    ("ping-pong (round trips/s)", "uvloop streams"): 1.0,
    ("spawn+finish (goroutines/s)", "asyncio create_task"): 2.0,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds per workload (default 7)")
    ap.add_argument("--backend", default=None, help="netpoll backend (default: netpoll.BACKEND)")
    args = ap.parse_args(argv)
    backend = args.backend or netpoll.BACKEND
    if uvloop is None:
        print("uvloop is not importable: its column is skipped (pip install uvloop)")
    print(f"Python {sys.version.split()[0]}, netpoll {netpoll.__version__}, backend {backend}, "
          f"{args.rounds} rounds; spawn {SPAWN_BATCHES}x{SPAWN_BATCH}, ping-pong {PINGPONG_TRIPS} trips")
    failed = []
    for workload, impls in contenders(backend):
        for _, fn in impls:  # warm-up, not measured
            fn()
        rates = {label: [] for label, _ in impls}
        for r in range(args.rounds):
            order = impls if r % 2 == 0 else impls[::-1]
            for label, fn in order:
                rates[label].append(fn())
        base_label = impls[0][0]
        base = statistics.median(rates[base_label])
        print()
        print(f"{workload}")
        print(f"  {'implementation':28} {'median':>12} {'min':>12} {'max':>12} {'netpoll/x':>10} {'target':>8}")
        for label, _ in impls:
            med = statistics.median(rates[label])
            ratio = base / med
            target = TARGETS.get((workload, label))
            mark = ""
            if label != base_label and target is not None:
                mark = f">={target:.1f}x " + ("ok" if ratio >= target else "MISSED")
                if ratio < target:
                    failed.append(f"{workload}: {ratio:.2f}x vs {label} (target {target:.1f}x)")
            print(f"  {label:28} {med:12,.0f} {min(rates[label]):12,.0f} {max(rates[label]):12,.0f} "
                  f"{'' if label == base_label else f'{ratio:.2f}x':>10} {mark:>8}")
    print()
    if failed:
        print("targets missed:")
        for f in failed:
            print(f"  {f}")
    else:
        print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
