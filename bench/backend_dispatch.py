"""Readiness dispatch: N ready of M registered descriptors, netpoll vs selectors.

    python3 bench/backend_dispatch.py [--ready 1000] [--registered 1000] [--rounds 20]
    python3 bench/backend_dispatch.py --instructions [--ready 100] [--registered 100]

Each side runs the same cycle on the same M socketpairs, in alternating
rounds (which side goes first alternates too):

  make ready  write 1 byte to the peers of N registered sockets
  wait        one wait call (ours: netpoll(0), repeated while events remain,
              since a backend hands back at most one kernel batch per call;
              selectors: select(0), which asks for every event at once)
  dispatch    find the object associated with each ready fd: ours through
              netpollready, which hands back the waiter parked on the
              PollDesc; selectors through key.data
  drain       recv on each ready socket
  re-park     ours only: the woken waiter parks again (pd.prepare('r') then
              pd.park('r', waiter); on needs_arm backends that re-arms the
              interest, on edge-triggered ones it only moves rg)

"wait+dispatch" times the wait and dispatch steps only; "full cycle" times
all five. Reported: the median over the rounds of events per second (N / time)
and ours / selectors. Pairs: epoll - EpollSelector, poll - PollSelector,
select - SelectSelector, kqueue - KqueueSelector (each where both exist; the
select pair needs M below FD_SETSIZE).

--instructions counts instead, under valgrind's callgrind, the user-space
instructions per dispatched event of each pair's wait+dispatch (+ re-park,
ours) and of raw ``select.epoll`` (``poll(0)``, then a dict from fd to
object). Each side runs in a process of its own at two round counts,
counted from the end of its set-up; from the difference of the totals the
same difference for a side that only makes ready and drains (no wait, no
dispatch) is taken away, and what is left is divided by the events. The
kernel's share (epoll_wait harvesting the events) is not in it: about 450 ns
per event for raw epoll and netpoll alike in the wall-clock rounds.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import resource
import select
import selectors
import socket
import statistics
import sys
import time

# Run from a checkout: the in-place build of this tree comes first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import netpoll  # noqa: E402
from netpoll._netpoll import pollclose, pollopen  # noqa: E402

PAIRS = (
    ("epoll", "EpollSelector"),
    ("kqueue", "KqueueSelector"),
    ("poll", "PollSelector"),
    ("select", "SelectSelector"),
)



class Conn:
    """The object a dispatch must find for a ready descriptor."""

    __slots__ = ("sock", "pd")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pd = None


def make_pairs(m: int) -> tuple[list[Conn], list[socket.socket]]:
    """M socketpairs whose registered ends take consecutive low fd numbers
    (select needs them below FD_SETSIZE): each peer moves above them."""
    conns, peers = [], []
    high = m + 64
    for _ in range(m):
        a, b = socket.socketpair()
        hi = fcntl.fcntl(b.fileno(), fcntl.F_DUPFD_CLOEXEC, high)
        b.close()
        b = socket.socket(fileno=hi)
        a.setblocking(False)
        b.setblocking(False)
        conns.append(Conn(a))
        peers.append(b)
    return conns, peers


class Ours:
    def __init__(self, name: str, conns: list[Conn]) -> None:
        self.backend = netpoll.backend_class(name)()
        self.conns = conns
        self.pds = []
        for c in conns:
            c.pd = pollopen(self.backend, c.sock.fileno())
            self.pds.append(c.pd)
        # Absorb the initial write readiness of edge-triggered backends.
        for _ in range(len(conns) // 64 + 2):
            self.backend.netpoll(0)
        for c in conns:
            c.pd.prepare("r")
            c.pd.prepare("w")
            if c.pd.park("r", c):
                raise RuntimeError("unexpected readiness")

    def wait_dispatch(self, n: int) -> list[Conn]:
        netpoll_ = self.backend.netpoll
        ready = []
        for _ in range(10_000):  # each call returns at least one event
            for c in netpoll_(0):
                ready.append(c)
            if len(ready) >= n:
                return ready
        raise RuntimeError(f"only {len(ready)} of {n} events arrived")

    def repark(self, ready: list[Conn]) -> None:
        for c in ready:
            pd = c.pd
            pd.prepare("r")
            pd.park("r", c)

    def close(self) -> None:
        for pd in self.pds:
            pd.evict()
            pollclose(pd)
        self.backend.close()


class Stdlib:
    def __init__(self, clsname: str, conns: list[Conn]) -> None:
        self.sel = getattr(selectors, clsname)()
        for c in conns:
            self.sel.register(c.sock, selectors.EVENT_READ, c)

    def wait_dispatch(self, n: int) -> list[Conn]:
        select = self.sel.select
        ready = []
        for _ in range(10_000):
            for key, _mask in select(0):
                ready.append(key.data)
            if len(ready) >= n:
                return ready
        raise RuntimeError(f"only {len(ready)} of {n} events arrived")

    def repark(self, ready: list[Conn]) -> None:
        pass

    def close(self) -> None:
        self.sel.close()


class RawEpoll:
    """select.epoll by hand: the least a Python program can do per event."""

    def __init__(self, conns: list[Conn]) -> None:
        self.ep = select.epoll()
        self.by_fd = {}
        for c in conns:
            self.ep.register(c.sock.fileno(), select.EPOLLIN)
            self.by_fd[c.sock.fileno()] = c

    def wait_dispatch(self, n: int) -> list[Conn]:
        poll, by_fd = self.ep.poll, self.by_fd
        ready = []
        for _ in range(10_000):
            for fd, _ev in poll(0):
                ready.append(by_fd[fd])
            if len(ready) >= n:
                return ready
        raise RuntimeError(f"only {len(ready)} of {n} events arrived")

    def repark(self, ready: list[Conn]) -> None:
        pass

    def close(self) -> None:
        self.ep.close()


class NoWait:
    """Make ready and drain only: the part of a round every side shares."""

    def __init__(self, conns: list[Conn], ready: list[Conn]) -> None:
        self.ready = ready

    def wait_dispatch(self, n: int) -> list[Conn]:
        return list(self.ready)

    def repark(self, ready: list[Conn]) -> None:
        pass

    def close(self) -> None:
        pass


def one_round(side, peers_ready: list[socket.socket], n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for p in peers_ready:
        p.send(b"x")
    t1 = time.perf_counter()
    ready = side.wait_dispatch(n)
    t2 = time.perf_counter()
    for c in ready:
        c.sock.recv(64)
    side.repark(ready)
    t3 = time.perf_counter()
    if len(ready) != n:
        raise RuntimeError(f"{len(ready)} events for {n} ready descriptors")
    return t2 - t1, t3 - t0


def bench_pair(ours_name: str, clsname: str, n: int, m: int, rounds: int, warmup: int):
    conns, peers = make_pairs(m)
    step = m / n
    ready_idx = sorted({int(i * step) for i in range(n)})
    peers_ready = [peers[i] for i in ready_idx]
    ours = Ours(ours_name, conns)
    theirs = Stdlib(clsname, conns)
    times = {"ours": ([], []), "stdlib": ([], [])}
    try:
        gc.collect()
        gc.disable()
        for r in range(warmup + rounds):
            order = [("ours", ours), ("stdlib", theirs)]
            if r % 2:
                order.reverse()
            for label, side in order:
                wd, full = one_round(side, peers_ready, len(ready_idx))
                if r >= warmup:
                    times[label][0].append(wd)
                    times[label][1].append(full)
    finally:
        gc.enable()
        ours.close()
        theirs.close()
        for c in conns:
            c.sock.close()
        for p in peers:
            p.close()
    k = len(ready_idx)
    rate = {label: (k / statistics.median(wd), k / statistics.median(full))
            for label, (wd, full) in times.items()}
    return k, rate


# ---------------------------------------------------------------------------
# Instructions (callgrind)
# ---------------------------------------------------------------------------


def run_one(side_name: str, n: int, m: int, rounds: int) -> None:
    """``rounds`` rounds of one side in this process, counted from gate()."""
    from netpoll.benchmark.instructions import gate

    conns, peers = make_pairs(m)
    step = m / n
    ready_idx = sorted({int(i * step) for i in range(n)})
    peers_ready = [peers[i] for i in ready_idx]
    kind, _, name = side_name.partition(":")
    if kind == "ours":
        side = Ours(name, conns)
    elif kind == "selectors":
        side = Stdlib(name, conns)
    elif kind == "raw":
        side = RawEpoll(conns)
    else:
        side = NoWait(conns, [conns[i] for i in ready_idx])
    try:
        gc.disable()
        for _ in range(3):  # the code paths and free lists warm, not counted
            one_round(side, peers_ready, len(ready_idx))
        gate()
        for _ in range(rounds):
            one_round(side, peers_ready, len(ready_idx))
    finally:
        side.close()
        for c in conns:
            c.sock.close()
        for p in peers:
            p.close()


def main_instructions(args, wanted: list[str]) -> int:
    import tempfile

    from netpoll.benchmark import instructions

    try:
        instructions.check()
    except instructions.Unavailable as e:
        print(f"backend_dispatch --instructions: {e}", file=sys.stderr)
        return 2
    n, m = args.ready, args.registered
    r1, r2 = 2, 2 + max(1, args.rounds)
    sides = []
    avail = netpoll.available_backends()
    for ours_name, clsname in PAIRS:
        if ours_name in wanted and ours_name in avail and hasattr(selectors, clsname):
            sides += [(f"ours:{ours_name}", f"netpoll {ours_name} netpoll(0)"),
                      (f"selectors:{clsname}", f"selectors.{clsname}")]
            if ours_name == "epoll":
                sides.append(("raw:epoll", "select.epoll, by hand"))
    print(f"user-space instructions per dispatched event (callgrind): N={n} ready of M={m} registered; "
          f"runs of {r1} and {r2} rounds, their difference less a make-ready-and-drain-only side's; "
          f"Python {sys.version.split()[0]}, netpoll {netpoll.__version__}")

    def argv_for(side):
        return lambda rounds: [sys.executable, "-P", os.path.abspath(__file__), "--one", side, str(rounds),
                               "--ready", str(n), "--registered", str(m)]

    events = (r2 - r1) * len({int(i * (m / n)) for i in range(n)})
    failed = 0
    with tempfile.TemporaryDirectory(prefix="netpoll-callgrind-") as tmp:
        try:
            base = instructions.per_unit(argv_for("none"), (r1, r2), tmp, "none")["per_unit"] * (r2 - r1)
        except RuntimeError as e:
            print(f"the make-ready-and-drain side failed: {e}", file=sys.stderr)
            return 1
        print(f"\n  {'side':34} {'instructions/event':>18} {'netpoll ÷ this':>15}")
        ours = None
        for side, label in sides:
            try:
                total = instructions.per_unit(argv_for(side), (r1, r2), tmp, side.replace(":", "-"))["per_unit"]
            except RuntimeError as e:
                print(f"  {label:34} failed: {e}")
                failed += 1
                continue
            per = (total * (r2 - r1) - base) / events
            if side.startswith("ours:"):
                ours = per
                ratio = ""
            else:
                ratio = f"{ours / per:.2f}" if ours else ""
            print(f"  {label:34} {per:18,.0f} {ratio:>15}")
    print("\nours includes the re-park of each woken waiter (pd.prepare + pd.park); the wait itself is one "
          "netpoll(0) or select(0) per kernel batch. callgrind counts user space only: the kernel's harvest "
          "(epoll_wait) shows in the wall-clock rounds.")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ready", type=int, default=1000, help="N: descriptors made ready per round")
    p.add_argument("--registered", type=int, default=1000, help="M: descriptors registered")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds per side first")
    p.add_argument("--backends", default="", help="comma-separated subset, e.g. epoll,poll")
    p.add_argument("--instructions", action="store_true",
                   help="count user-space instructions per dispatched event under callgrind instead of timing "
                        "(--rounds is then the difference of the two runs' round counts)")
    p.add_argument("--one", nargs=2, metavar=("SIDE", "ROUNDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    n, m = args.ready, args.registered
    if not 0 < n <= m:
        p.error("need 0 < --ready <= --registered")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * m + 128
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            p.error(f"RLIMIT_NOFILE hard limit {hard} is below the {need} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    wanted = [b.strip() for b in args.backends.split(",") if b.strip()] or [b for b, _ in PAIRS]
    if args.one:
        run_one(args.one[0], n, m, int(args.one[1]))
        return 0
    if args.instructions:
        return main_instructions(args, wanted)
    avail = netpoll.available_backends()
    rows, notes = [], []
    for ours_name, clsname in PAIRS:
        if ours_name not in wanted:
            continue
        if ours_name not in avail:
            notes.append(f"{ours_name}: not available here")
            continue
        if not hasattr(selectors, clsname):
            notes.append(f"{ours_name}: selectors.{clsname} does not exist here")
            continue
        max_fd = netpoll.backend_class(ours_name).max_fd
        if max_fd is not None and m + 16 >= max_fd:
            notes.append(f"{ours_name}: --registered {m} does not fit below max_fd {max_fd} "
                         f"(run it with --registered {max_fd - 32} or less)")
            continue
        k, rate = bench_pair(ours_name, clsname, n, m, args.rounds, args.warmup)
        rows.append((ours_name, clsname, k, rate))

    print(f"netpoll {netpoll.__version__}, Python {sys.version.split()[0]}, {sys.platform}; "
          f"N={n} ready of M={m} registered, {args.rounds} rounds (+{args.warmup} warm-up), "
          f"alternating; median events/s; GC off while timing")
    print("wait+dispatch = the wait call(s) and finding each fd's object; "
          "full cycle = make ready + wait + dispatch + drain (+ re-park, ours)")
    hdr = (f"{'ours':7} {'selectors':15} {'N':>5}  {'wait+dispatch ours':>18} {'selectors':>11} "
           f"{'ratio':>6}   {'full cycle ours':>15} {'selectors':>11} {'ratio':>6}")
    print(hdr)
    print("-" * len(hdr))
    for ours_name, clsname, k, rate in rows:
        (o_wd, o_full), (s_wd, s_full) = rate["ours"], rate["stdlib"]
        print(f"{ours_name:7} {clsname:15} {k:5}  {o_wd:18,.0f} {s_wd:11,.0f} {o_wd / s_wd:5.2f}x"
              f"   {o_full:15,.0f} {s_full:11,.0f} {o_full / s_full:5.2f}x")
    for note in notes:
        print(f"skipped {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
