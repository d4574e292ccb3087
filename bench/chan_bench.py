"""Channel benchmark: netpoll.Chan and select against asyncio and Go.

    python3 bench/chan_bench.py [--rounds N] [--trips N] [--backend NAME] [--no-go]

Two workloads, run side by side in alternating rounds and reported as the
median rate over the rounds, with the ratio of netpoll to each contender:

pingpong  two goroutines bounce a value over two unbuffered channels
          (``await ping.send(v)`` / ``await pong.recv()``), against two
          asyncio tasks on two ``asyncio.Queue`` and two Go goroutines on two
          unbuffered channels with GOMAXPROCS=1.
select    the same round trip, but the echoing side waits on two channels
          at once (the sender alternates between them): ``netpoll.select``
          over two receive cases, against ``asyncio.wait(FIRST_COMPLETED)``
          over a pending ``get()`` task per queue (re-armed after it
          completes), and Go's ``select``.

The Go figures need ``go`` on PATH (built once into a temporary directory).
Targets: netpoll >= 3x asyncio on both; the ratio to Go is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import netpoll
except ImportError:  # a source checkout without an install
    sys.path.insert(0, os.path.dirname(HERE))
    import netpoll


# ---------------------------------------------------------------------------
# netpoll
# ---------------------------------------------------------------------------


async def _np_echo(ping, pong, n):
    for _ in range(n):
        await pong.send(await ping.recv())


async def _np_pingpong(n: int) -> float:
    ping, pong = netpoll.Chan(), netpoll.Chan()
    h = netpoll.go(_np_echo(ping, pong, n))
    t0 = time.perf_counter()
    for i in range(n):
        await ping.send(i)
        await pong.recv()
    took = time.perf_counter() - t0
    await h
    return took


async def _np_select_echo(a, b, pong, n):
    select = netpoll.select
    ca, cb = a.recv_case(), b.recv_case()
    for _ in range(n):
        _, v, _ = await select(ca, cb)
        await pong.send(v)


async def _np_select(n: int) -> float:
    a, b, pong = netpoll.Chan(), netpoll.Chan(), netpoll.Chan()
    h = netpoll.go(_np_select_echo(a, b, pong, n))
    t0 = time.perf_counter()
    for i in range(n):
        await (a if i & 1 else b).send(i)
        await pong.recv()
    took = time.perf_counter() - t0
    await h
    return took


# ---------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------


async def _aio_echo(ping, pong, n):
    for _ in range(n):
        pong.put_nowait(await ping.get())


async def _aio_pingpong(n: int) -> float:
    ping, pong = asyncio.Queue(), asyncio.Queue()
    t = asyncio.create_task(_aio_echo(ping, pong, n))
    t0 = time.perf_counter()
    for i in range(n):
        ping.put_nowait(i)
        await pong.get()
    took = time.perf_counter() - t0
    await t
    return took


async def _aio_select_echo(a, b, pong, n):
    pending = {asyncio.ensure_future(a.get()): a, asyncio.ensure_future(b.get()): b}
    for _ in range(n):
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        fut = next(iter(done))
        q = pending.pop(fut)
        pending[asyncio.ensure_future(q.get())] = q
        pong.put_nowait(fut.result())
    for fut in pending:
        fut.cancel()


async def _aio_select(n: int) -> float:
    a, b, pong = asyncio.Queue(), asyncio.Queue(), asyncio.Queue()
    t = asyncio.create_task(_aio_select_echo(a, b, pong, n))
    t0 = time.perf_counter()
    for i in range(n):
        (a if i & 1 else b).put_nowait(i)
        await pong.get()
    took = time.perf_counter() - t0
    await t
    return took


# ---------------------------------------------------------------------------
# Go
# ---------------------------------------------------------------------------

GO_SOURCE = r"""
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func pingpong(n int) float64 {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for i := 0; i < n; i++ {
			pong <- <-ping
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	return time.Since(t0).Seconds()
}

func sel(n int) float64 {
	a, b, pong := make(chan int), make(chan int), make(chan int)
	go func() {
		for i := 0; i < n; i++ {
			select {
			case v := <-a:
				pong <- v
			case v := <-b:
				pong <- v
			}
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if i&1 == 1 {
			a <- i
		} else {
			b <- i
		}
		<-pong
	}
	return time.Since(t0).Seconds()
}

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	if os.Args[1] == "pingpong" {
		fmt.Println(pingpong(n))
	} else {
		fmt.Println(sel(n))
	}
}
"""


class GoBench:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="chan_bench_go")
        src = os.path.join(self.dir, "main.go")
        with open(src, "w") as f:
            f.write(GO_SOURCE)
        self.exe = os.path.join(self.dir, "chanbench")
        env = dict(os.environ, GOCACHE=os.path.join(self.dir, "cache"), GO111MODULE="off")
        subprocess.run(["go", "build", "-o", self.exe, src], check=True, env=env,
                       capture_output=True, timeout=300)

    def run(self, kind: str, n: int) -> float:
        out = subprocess.run([self.exe, kind, str(n)], check=True, capture_output=True, text=True,
                             env=dict(os.environ, GOMAXPROCS="1"), timeout=60)
        return float(out.stdout)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trips", type=int, default=20_000)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--no-go", action="store_true", help="skip the Go figures")
    a = ap.parse_args()
    n = a.trips
    backend = a.backend or netpoll.BACKEND

    go = None
    go_note = ""
    if not a.no_go:
        if shutil.which("go") is None:
            go_note = "go is not on PATH: no Go figures (apt-get install golang-go)"
        else:
            try:
                go = GoBench()
            except (subprocess.SubprocessError, OSError) as e:
                go_note = f"building the Go benchmark failed: {e}"

    impls = {
        "pingpong": [(f"netpoll[{backend}] Chan", lambda: netpoll.run(_np_pingpong(n), backend=backend)),
                     ("asyncio Queue", lambda: asyncio.run(_aio_pingpong(n)))],
        "select": [(f"netpoll[{backend}] select", lambda: netpoll.run(_np_select(n), backend=backend)),
                   ("asyncio wait(FIRST_COMPLETED)", lambda: asyncio.run(_aio_select(n)))],
    }
    if go is not None:
        impls["pingpong"].append(("Go chan (GOMAXPROCS=1)", lambda: go.run("pingpong", n)))
        impls["select"].append(("Go select (GOMAXPROCS=1)", lambda: go.run("select", n)))

    print(f"Python {sys.version.split()[0]}, netpoll {netpoll.__version__}, backend {backend}, "
          f"{a.rounds} rounds of {n} round trips"
          + (f"; {subprocess.run(['go', 'version'], capture_output=True, text=True).stdout.strip()}"
             if go is not None else ""))
    ok = True
    try:
        for workload, rows in impls.items():
            rates: dict[str, list[float]] = {name: [] for name, _ in rows}
            for _ in range(a.rounds):
                for name, fn in rows:
                    rates[name].append(n / fn())
            med = {name: statistics.median(v) for name, v in rates.items()}
            base = med[rows[0][0]]
            print(f"\n{workload} (round trips/s)")
            print(f"  {'implementation':32} {'median':>12} {'min':>12} {'max':>12} {'netpoll/x':>10}  target")
            for i, (name, _) in enumerate(rows):
                v = rates[name]
                ratio = "" if i == 0 else f"{base / med[name]:.2f}x"
                target = ""
                if name.startswith("asyncio"):
                    met = base / med[name] >= 3.0
                    ok &= met
                    target = ">=3.0x " + ("ok" if met else "MISSED")
                print(f"  {name:32} {med[name]:>12,.0f} {min(v):>12,.0f} {max(v):>12,.0f} {ratio:>10}  {target}")
    finally:
        if go is not None:
            go.close()
    if go_note:
        print(f"\n{go_note}")
    print("\nall targets met" if ok else "\nsome targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
