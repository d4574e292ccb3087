"""Close races: hypothesis-chosen interleavings of read, write, accept,
set-deadline and close from many goroutines and from other threads, on the
same descriptors.

Each example builds, in one runtime, two TCP connections (their client ends
are the targets; a feeder goroutine on each server end sends a finite,
position-checkable byte pattern and then shuts down its write side, a
drainer reads and checks every byte a target wrote) and one listener (a
dialer goroutine connects to it a few times). The program is a list of
operations, each started at a chosen point (a number of scheduler yields
plus a few milliseconds) by a goroutine of its own, or injected from
another thread (netpoll.to_thread runs a thread that sleeps, then starts
the operation with go_threadsafe). After each close, and where the program
says "reopen", fresh sentinel socketpairs take the lowest free descriptor
numbers, often the ones just closed, with a known payload queued.

What must hold:
- every operation ends, at the latest within BOUND seconds after the
  cleanup closes every target, with data (a read returns the next bytes of
  its pattern; a write returns its length; an accept returns a connection),
  EOF (only once the whole pattern was read), ClosedError or a timeout,
  and with nothing else;
- no operation touches a reused descriptor number: every sentinel is still
  open on the same socket (same inode), its queued payload is intact, and
  nothing was written into it;
- at least one sentinel took a number a target had used (so the check
  meant something).
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import netpoll
from netpoll import net

from support import run

BOUND = 3.0           # seconds every operation has to end after the cleanup
PAIRS = 2
PERIOD = 251
PATTERN = bytes(i % PERIOD for i in range(PERIOD + 65536))
MARK = (0xA0, 0xA1)   # what targets write, per pair
DEADLINES = [None, -1.0, 0.0, 0.0005, 0.002, 0.01, 0.03, 1000.0]

TARGETS = [f"p{i}" for i in range(PAIRS)] + ["L"]
pair = st.sampled_from(range(PAIRS))
op = st.one_of(
    st.tuples(st.just("read"), pair, st.integers(1, 65536)),
    st.tuples(st.just("write"), pair, st.integers(1, 262144)),
    st.tuples(st.just("deadline"), st.sampled_from(TARGETS), st.sampled_from(["r", "w", "rw"]),
              st.sampled_from(DEADLINES)),
    st.tuples(st.just("close"), st.sampled_from(TARGETS)),
    st.tuples(st.just("accept"),),
    st.tuples(st.just("reopen"),),
)
step = st.tuples(op, st.sampled_from(["goroutine"] * 3 + ["thread"]),
                 st.integers(0, 6), st.sampled_from([0, 0, 0, 1, 3]))
program = st.lists(step, min_size=4, max_size=24)
feeds = st.lists(st.integers(0, 300_000), min_size=PAIRS, max_size=PAIRS)


class Sentinel:
    """A socketpair opened after a close, with a payload queued in b."""

    def __init__(self, serial: int) -> None:
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.b.setblocking(False)
        self.payload = f"sentinel {serial} ".encode() * 8
        self.a.sendall(self.payload)
        self.fds = (self.a.fileno(), self.b.fileno())
        self.inodes = tuple(os.fstat(fd).st_ino for fd in self.fds)

    def problems(self) -> list[str]:
        out = []
        for fd, ino in zip(self.fds, self.inodes):
            try:
                if os.fstat(fd).st_ino != ino:
                    out.append(f"fd {fd} now names another file")
            except OSError as e:
                out.append(f"fd {fd} was closed under its owner ({e})")
        if out:
            return out
        got = b""
        while True:
            try:
                chunk = self.b.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += chunk
        if got != self.payload:
            out.append(f"fd {self.fds[1]}: queued payload changed ({len(got)} of {len(self.payload)} bytes, "
                       f"intact prefix: {self.payload.startswith(got) or got.startswith(self.payload)})")
        try:
            extra = self.a.recv(65536)
            out.append(f"fd {self.fds[0]}: {len(extra)} bytes written into it by someone else")
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        self.a.close()
        self.b.close()


class Example:
    def __init__(self, prog, fed) -> None:
        self.prog = prog
        self.fed = fed
        self.rpos = [0] * PAIRS
        self.fed_done = [False] * PAIRS
        self.outcomes: list[tuple[str, str]] = []
        self.bad: list[str] = []
        self.pending = 0
        self.sentinels: list[Sentinel] = []
        self.used_fds: set[int] = set()
        self.reused = 0
        self.helpers: list = []

    # -- helpers on the other ends --------------------------------------------

    async def feeder(self, i: int, b) -> None:
        # Bursts with pauses, so that reads find data, block, and time out;
        # the write side is shut down a little after the last burst.
        pos = 0
        sizes = (1, 1000, 65536, 17, 30000)
        try:
            for k in range(1 << 20):
                if pos >= self.fed[i]:
                    break
                n = min(sizes[k % len(sizes)], self.fed[i] - pos)
                off = pos % PERIOD
                await b.write(memoryview(PATTERN)[off: off + n])
                pos += n
                await netpoll.sleep(0.002)
            await netpoll.sleep(0.005)
            self.fed_done[i] = True
            b.close_write()
        except OSError:
            pass  # the target was closed: the helper stops

    async def drainer(self, i: int, b) -> None:
        buf = bytearray(65536)
        try:
            while n := await b.read(buf):
                if buf[:n].count(MARK[i]) != n:
                    self.bad.append(f"pair {i}: the drainer read bytes its target never wrote")
        except OSError:
            pass

    async def dialer(self, addr, n: int) -> None:
        conns = []
        try:
            for _ in range(n):
                try:
                    conns.append(await net.dial("tcp", addr, timeout=1))
                except OSError:
                    return
                await netpoll.sleep(0.002)
        finally:
            for c in conns:
                c.close()

    # -- the operations ------------------------------------------------------------

    def reopen(self) -> None:
        s = Sentinel(len(self.sentinels))
        self.sentinels.append(s)
        self.reused += len(self.used_fds & set(s.fds))

    async def perform(self, o, name: str) -> None:
        kind = o[0]
        try:
            if kind == "read":
                i, size = o[1], o[2]
                buf = bytearray(size)
                n = await self.pairs[i].read(buf)
                if n == 0:
                    if not (self.fed_done[i] and self.rpos[i] == self.fed[i]):
                        self.bad.append(f"{name}: EOF at {self.rpos[i]} of {self.fed[i]} bytes")
                    self.outcomes.append((name, "eof"))
                else:
                    off = self.rpos[i] % PERIOD
                    if buf[:n] != PATTERN[off: off + n]:
                        self.bad.append(f"{name}: {n} bytes at {self.rpos[i]} are not the pattern")
                    self.rpos[i] += n
                    self.outcomes.append((name, "data"))
            elif kind == "write":
                i, size = o[1], o[2]
                n = await self.pairs[i].write(bytes([MARK[i]]) * size)
                if n != size:
                    self.bad.append(f"{name}: wrote {n} of {size}")
                self.outcomes.append((name, "data"))
            elif kind == "accept":
                c = await self.ln.accept()
                c.close()
                self.outcomes.append((name, "data"))
            elif kind == "deadline":
                target, mode, off = self.target(o[1]), o[2], o[3]
                # A listener has one deadline (accept's).
                setter = "set_deadline" if o[1] == "L" else {
                    "r": "set_read_deadline", "w": "set_write_deadline", "rw": "set_deadline"}[mode]
                getattr(target, setter)(None if off is None else netpoll.now() + off)
                self.outcomes.append((name, "done"))
            elif kind == "close":
                self.target(o[1]).close()
                self.reopen()  # take the numbers that close may have freed
                self.outcomes.append((name, "done"))
            elif kind == "reopen":
                self.reopen()
                self.outcomes.append((name, "done"))
        except netpoll.ClosedError:
            self.outcomes.append((name, "closed"))
        except TimeoutError:
            self.outcomes.append((name, "timeout"))
        except BaseException as e:
            self.bad.append(f"{name}: {type(e).__mro__[:3]} {e}")
            if not isinstance(e, Exception):
                raise
        finally:
            self.pending -= 1

    def target(self, name: str):
        return self.ln if name == "L" else self.pairs[int(name[1:])]

    async def step(self, k: int, o, actor: str, yields: int, ms: int) -> None:
        name = f"#{k} {actor} {o}"
        for _ in range(yields):
            await netpoll.sleep(0)
        if actor == "thread":
            rt = netpoll.current_runtime()

            def inject() -> None:
                time.sleep(ms / 1000)
                rt.go_threadsafe(self.perform(o, name))

            await netpoll.to_thread(inject)
        else:
            if ms:
                await netpoll.sleep(ms / 1000)
            await self.perform(o, name)

    async def main(self, dials: int) -> None:
        self.ln = net.listen("tcp", "127.0.0.1:0")
        self.pairs, self.peers = [], []
        for i in range(PAIRS):
            c = await net.dial("tcp", self.ln.addr)
            s = await self.ln.accept()
            self.pairs.append(c)
            self.peers.append(s)
            self.helpers.append(netpoll.go(self.feeder(i, s)))
            self.helpers.append(netpoll.go(self.drainer(i, s)))
        self.helpers.append(netpoll.go(self.dialer(self.ln.addr, dials)))
        self.used_fds = {x.fileno() for x in self.pairs + [self.ln]}
        self.pending = len(self.prog)
        for k, (o, actor, yields, ms) in enumerate(self.prog):
            netpoll.go(self.step(k, o, actor, yields, ms))
        # Let the program run, then close every target: whatever is still
        # blocked must end now.
        await netpoll.sleep(0.02)
        for x in self.pairs + [self.ln]:
            x.close()
        limit = netpoll.now() + BOUND
        while self.pending and netpoll.now() < limit:
            await netpoll.sleep(0.002)
        if self.pending:
            done = {n for n, _ in self.outcomes}
            self.bad.append(f"{self.pending} operations still running {BOUND} s after every "
                            f"target was closed: "
                            + "; ".join(f"#{k} {p}" for k, p in enumerate(self.prog)
                                        if not any(d.startswith(f"#{k} ") for d in done)))
        for s in self.peers:
            s.close()
        for h in self.helpers:
            await h
        for s in self.sentinels:
            self.bad += s.problems()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_close_races(backend_name):
    stats = {"examples": 0, "reused": 0, "operations": 0}
    kinds: dict[str, int] = {}

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(prog=program, fed=feeds, dials=st.integers(0, 4))
    # One program that always has every outcome: a read parked past its
    # deadline, a write and an accept closed under their feet from a thread.
    @example(prog=[(("deadline", "p0", "r", 0.003), "goroutine", 0, 0),
                   (("read", 0, 1000), "goroutine", 0, 0),
                   (("read", 0, 1000), "goroutine", 1, 0),
                   (("write", 1, 262144), "goroutine", 0, 0),
                   (("write", 1, 262144), "goroutine", 0, 0),
                   (("accept",), "goroutine", 0, 0),
                   (("close", "p1"), "thread", 2, 1),
                   (("close", "L"), "thread", 0, 1)],
             fed=[1, 0], dials=0)
    def one(prog, fed, dials):
        ex = Example(prog, fed)
        try:
            run(backend_name, ex.main, dials)
        finally:
            for s in ex.sentinels:
                s.close()
        assert not ex.bad, "\n".join(ex.bad)
        assert len(ex.outcomes) == len(prog)
        stats["examples"] += 1
        stats["reused"] += ex.reused
        stats["operations"] += len(prog)
        for _, outcome in ex.outcomes:
            kinds[outcome] = kinds.get(outcome, 0) + 1

    one()
    print(f"close races on {backend_name}: {stats}, outcomes {kinds}")  # shown with -s
    assert stats["reused"] > 0, f"no sentinel ever took a closed target's number: {stats}"
    for outcome in ("data", "closed", "timeout", "done"):
        assert kinds.get(outcome, 0) > 0, f"no operation ended with {outcome}: {kinds}"


def test_sentinel_check_detects_tampering():
    """A control: the sentinel check sees a descriptor read from, written
    into, or closed and reopened by someone else (backend-independent)."""
    clean = Sentinel(0)
    try:
        assert clean.problems() == []
    finally:
        clean.close()
    read_from, written, closed = Sentinel(1), Sentinel(2), Sentinel(3)
    try:
        read_from.b.recv(5)
        assert any("payload changed" in p for p in read_from.problems())
        os.write(written.fds[1], b"stale write")
        assert any("written into it" in p for p in written.problems())
        r, w = os.pipe()
        os.dup2(r, closed.fds[0])  # the number now names a different file
        try:
            assert any("another file" in p for p in closed.problems())
        finally:
            os.close(r)
            os.close(w)
    finally:
        for s in (read_from, written, closed):
            s.close()
