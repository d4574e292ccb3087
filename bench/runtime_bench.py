"""Goroutine runtime benchmark: netpoll against asyncio (and uvloop).

    python3 bench/runtime_bench.py [--rounds N] [--backend NAME]
    python3 bench/runtime_bench.py --instructions [--counts A,B]

Three workloads, each run side by side in alternating rounds, reported as the
median rate over the rounds and the ratio of netpoll to each contender:

spawn   start a batch of goroutines that return at once, then await every
        handle: ``netpoll.go(f())`` against ``asyncio.create_task(f())``.
pingpong
        two goroutines on a socketpair bounce one byte back and forth; each
        side does non-blocking recv/send and ``await pd.wait('r')`` on EAGAIN
        (the FD layer's loop written out), against the same two tasks written
        with asyncio streams (``asyncio.open_connection(sock=...)``) on the
        stdlib loop and, when importable, on uvloop.
chan    two goroutines bounce a value over two unbuffered ``netpoll.Chan``
        (a rendezvous each way), against two tasks over two
        ``asyncio.Queue``.

--instructions counts instead, under valgrind's callgrind, the user-space
instructions per goroutine (spawn), per round trip (ping-pong, chan): each
workload runs in a process of its own at two sizes, counted from the end
of its set-up, and the difference of the totals over the difference of the
sizes is the figure (start-up and shut-down cancel). It does not move with
the machine's load as the rates do.

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
from netpoll.sync import Chan

try:
    import uvloop
except ImportError:
    uvloop = None

SPAWN_BATCH = 10_000
SPAWN_BATCHES = 5
PINGPONG_TRIPS = 20_000
CHAN_TRIPS = 20_000


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


# ---------------------------------------------------------------------------
# channel ping-pong
# ---------------------------------------------------------------------------


async def _np_chan_side(inbox, outbox, n: int, first: bool) -> None:
    recv, send = inbox.recv, outbox.send
    for _ in range(n):
        if first:
            await send(1)
            await recv()
        else:
            await recv()
            await send(1)


async def _np_chan(n: int) -> float:
    ab, ba = Chan(), Chan()
    t0 = time.perf_counter()
    x = netpoll.go(_np_chan_side(ba, ab, n, True))
    y = netpoll.go(_np_chan_side(ab, ba, n, False))
    await x
    await y
    return time.perf_counter() - t0


async def _aio_chan_side(inbox, outbox, n: int, first: bool) -> None:
    get, put = inbox.get, outbox.put
    for _ in range(n):
        if first:
            await put(1)
            await get()
        else:
            await get()
            await put(1)


async def _aio_chan(n: int) -> float:
    ab, ba = asyncio.Queue(), asyncio.Queue()
    t0 = time.perf_counter()
    await asyncio.gather(_aio_chan_side(ba, ab, n, True), _aio_chan_side(ab, ba, n, False))
    return time.perf_counter() - t0


def chan_netpoll(backend: str) -> float:
    return CHAN_TRIPS / netpoll.run(_np_chan(CHAN_TRIPS), backend=backend)


def chan_asyncio(loop_factory) -> float:
    return CHAN_TRIPS / _run_asyncio(_aio_chan(CHAN_TRIPS), loop_factory)


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
        ("channel ping-pong (round trips/s)",
         [(f"netpoll[{backend}] Chan", lambda: chan_netpoll(backend))]
         + [(f"{name} Queue", (lambda lf=lf: chan_asyncio(lf))) for name, lf in loops]),
    ]


# ---------------------------------------------------------------------------
# Instructions (callgrind)
# ---------------------------------------------------------------------------

# workload: (what is counted, {implementation: (netpoll coroutine, asyncio coroutine)})
ONE = {
    "spawn": ("goroutine", lambda n: _np_spawn(1, n), lambda n: _aio_spawn(1, n)),
    "pingpong": ("round trip", _np_pingpong, _aio_pingpong),
    "chan": ("round trip", _np_chan, _aio_chan),
}
LABELS = {
    "spawn": ("spawn + finish", "create_task + await"),
    "pingpong": ("socketpair ping-pong", "streams"),
    "chan": ("channel ping-pong", "Queue"),
}


def run_one(workload: str, impl: str, n: int, backend: str) -> None:
    """One workload of n units in this process, counted from gate()."""
    from netpoll.benchmark.instructions import gate

    _, np_coro, aio_coro = ONE[workload]
    if impl == "netpoll":
        async def main():
            gate()
            await np_coro(n)

        netpoll.run(main(), backend=backend)
        return
    loop_factory = uvloop.new_event_loop if impl == "uvloop" else asyncio.new_event_loop

    async def amain():
        gate()
        await aio_coro(n)

    _run_asyncio(amain(), loop_factory)


def main_instructions(counts: tuple[int, int], backend: str) -> int:
    import tempfile

    from netpoll.benchmark import instructions

    try:
        instructions.check()
    except instructions.Unavailable as e:
        print(f"runtime_bench --instructions: {e}", file=sys.stderr)
        return 2
    impls = ["netpoll", "asyncio"] + (["uvloop"] if uvloop is not None else [])
    print(f"user-space instructions per unit (callgrind; the difference of runs of {counts[0]:,} and "
          f"{counts[1]:,} units, counted from the end of set-up); Python {sys.version.split()[0]}, netpoll "
          f"{netpoll.__version__}, backend {backend}")
    if uvloop is None:
        print("uvloop is not importable: its rows are skipped (pip install uvloop)")
    print()
    print(f"  {'workload':24} {'implementation':28} {'instructions':>12} {'netpoll ÷ this':>15}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="netpoll-callgrind-") as tmp:
        for workload, (unit, _, _) in ONE.items():
            base = None
            for impl in impls:
                what, theirs = LABELS[workload]
                label = f"netpoll[{backend}]" if impl == "netpoll" else f"{impl} {theirs}"
                argv = lambda n, impl=impl: [sys.executable, "-P", os.path.abspath(__file__), "--one", workload,
                                             impl, str(n), "--backend", backend]
                try:
                    per = instructions.per_unit(argv, counts, tmp, f"{workload}.{impl}")["per_unit"]
                except RuntimeError as e:
                    print(f"  {what:24} {label:28} failed: {e}")
                    failed += 1
                    continue
                if impl == "netpoll":
                    base = per
                ratio = "" if impl == "netpoll" or base is None else f"{base / per:.2f}"
                print(f"  {what:24} {label:28} {per:12,.0f} {ratio:>15}   per {unit}")
    print()
    print("callgrind counts user space only; the kernel's share (the socketpair's send and recv) shows in "
          "the wall-clock rates.")
    return 1 if failed else 0


TARGETS = {
    ("ping-pong (round trips/s)", "asyncio streams"): 2.0,
    ("ping-pong (round trips/s)", "uvloop streams"): 1.0,
    ("spawn+finish (goroutines/s)", "asyncio create_task"): 2.0,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds per workload (default 7)")
    ap.add_argument("--backend", default=None, help="netpoll backend (default: netpoll.BACKEND)")
    ap.add_argument("--instructions", action="store_true",
                    help="count user-space instructions per unit under callgrind instead of timing")
    ap.add_argument("--counts", default="2000,10000", metavar="A,B",
                    help="--instructions: the two runs' sizes (default 2000,10000)")
    ap.add_argument("--one", nargs=3, metavar=("WORKLOAD", "IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    backend = args.backend or netpoll.BACKEND
    if args.one:
        workload, impl, n = args.one
        run_one(workload, impl, int(n), backend)
        return 0
    if args.instructions:
        from netpoll.benchmark.instructions import parse_messages

        try:
            counts = parse_messages(args.counts)
        except ValueError as e:
            ap.error(str(e).replace("--messages", "--counts"))
        return main_instructions(counts, backend)
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
