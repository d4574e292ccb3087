"""Soak: many loopback connections exchanging checksummed messages under chaos.

    python3 bench/soak.py [--conns 1000] [--duration 60] [--seed 1] [--backend NAME]
                          [--chaos-interval 0.01] [--warmup S] [--json]
                          [--netns-loss PCT] [--rate RATE]

One listener and ``--conns`` client slots in one runtime. Each slot dials,
sends a hello carrying a connection id, then loops: a request of a random
size (log-uniform, 1 B to 256 KiB) written with writev as a header (sequence
number, length, CRC-32) and a payload; the server's handler checks the CRC
as the bytes stream in and answers with a response of another random size,
which the client checks the same way. Payloads are slices of one random pool,
so memory does not grow with the message count.

A chaos goroutine, every ``--chaos-interval`` seconds on average, picks a
connection that has completed at least one exchange and, on its client or
its server side: closes it, resets it (set_linger(0) + close), or sets a
read, write or read-write deadline (already past, a few milliseconds to two
seconds ahead, far ahead, or cleared). It first marks the connection's id as
touched. A slot whose connection fails closes it and re-dials.

Errors are expected only on a touched connection, and only of the kinds
chaos causes: ClosedError, a timeout, a reset, a broken pipe, or an EOF in
the middle of a message. Anything else, or any error on an untouched
connection, is unexpected. A CRC or sequence mismatch is a checksum failure.

The run stops by itself: after ``--duration`` seconds the slots finish their
current exchange and close; whatever is still running ``--grace`` seconds
later is counted as stuck and closed.

With ``--netns-loss PCT`` or ``--rate RATE`` (root, Linux, ``ip``/``nft``/``tc``)
the connections cross a real network path instead of loopback: the
listener lives in one fresh network namespace, the clients in another, and
a veth pair joins them (tests/netfaults/netns.py builds it and deletes it
afterwards). nftables drops PCT % of the packets at random in each
direction; ``--rate`` puts a tbf rate limit (tc's spelling: "100mbit") on
both ends. On such a path a dial that runs into its 10 s timeout (every SYN
or SYN-ACK lost) is an expected error of its own kind; the report adds the
packets the path dropped. A reset that the path drops is not sent again, so
its peer learns of it only when its next packet, at the latest a keep-alive
probe (15 s idle), draws another: the teardown's grace is 45 s there, and
``--keep-alive-idle S`` shortens the probes' wait.

The report gives messages and bytes
verified, checksum failures, unexpected exceptions, the expected ones by
kind, chaos actions, descriptors open before and after, and RSS at the
start, after warm-up and at the end. Exit status 1 when an invariant fails
(a checksum failure, an unexpected exception, a stuck goroutine, a
descriptor leak).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import re
import resource
import socket
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import netpoll
except ImportError:  # a source checkout without an install
    sys.path.insert(0, os.path.dirname(HERE))
    import netpoll
from netpoll import net

MAX_MSG = 256 * 1024
POOL_SIZE = 2 * MAX_MSG
BUF_SIZE = 16 * 1024
HELLO = struct.Struct("!Q")        # connection id
HDR = struct.Struct("!QII")        # sequence number, length, CRC-32


class ShortRead(Exception):
    """The peer's stream ended in the middle of a message."""


class ChecksumError(Exception):
    """A message's CRC or sequence number did not match."""


@dataclass
class Report:
    backend: str
    conns: int
    duration: float
    seed: int
    messages: int = 0
    bytes: int = 0
    checksum_failures: int = 0
    unexpected: list = field(default_factory=list)
    expected: dict = field(default_factory=dict)
    chaos: dict = field(default_factory=dict)
    dials: int = 0
    stuck: int = 0
    fds_before: int = 0
    fds_after: int = 0
    rss_start_kib: int = 0
    rss_warm_kib: int = 0
    rss_end_kib: int = 0
    rss_after_kib: int = 0
    netns_loss: Optional[float] = None
    rate: Optional[str] = None
    dropped_packets: int = 0
    elapsed: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.checksum_failures == 0 and not self.unexpected and self.stuck == 0
                and self.fds_before == self.fds_after)

    def lines(self) -> list[str]:
        mib = 1024 * 1024
        out = [
            f"backend {self.backend}, {self.conns} connections, {self.duration:g} s "
            f"(elapsed {self.elapsed:.1f} s), seed {self.seed}",
        ]
        if self.netns_loss is not None or self.rate is not None:
            out.append(f"network path           veth between two namespaces, loss "
                       f"{self.netns_loss or 0:g} % each way, rate {self.rate or 'unlimited'}, "
                       f"{self.dropped_packets:,} packets dropped")
        out += [
            f"messages verified      {self.messages:,}",
            f"bytes verified         {self.bytes:,} ({self.bytes / mib:,.0f} MiB, "
            f"{self.bytes / mib / max(self.elapsed, 1e-9):,.1f} MiB/s)",
            f"dials                  {self.dials:,}",
            f"checksum failures      {self.checksum_failures}",
            f"unexpected exceptions  {len(self.unexpected)}",
            f"expected exceptions    {sum(self.expected.values()):,} "
            + (str(dict(sorted(self.expected.items()))) if self.expected else ""),
            f"chaos actions          {sum(v for k, v in self.chaos.items() if k != 'skipped'):,} "
            + str(dict(sorted(self.chaos.items()))),
            f"stuck at the end       {self.stuck}",
            f"descriptors            before {self.fds_before}, after {self.fds_after}",
            f"RSS (KiB)              start {self.rss_start_kib:,}, after warm-up "
            f"{self.rss_warm_kib:,}, end of load {self.rss_end_kib:,}, after teardown "
            f"{self.rss_after_kib:,}",
        ]
        out += [f"note: {n}" for n in self.notes]
        out += [f"unexpected: {u}" for u in self.unexpected[:20]]
        out.append("OK" if self.ok else "FAILED")
        return out


def open_fd_count() -> int:
    # listdir's own descriptor is in the listing; it is there in every count.
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def msg_size(rng: random.Random) -> int:
    """Log-uniform over 1 B .. 256 KiB: small and large messages alike."""
    return min(MAX_MSG, max(1, int(math.exp(rng.uniform(0.0, math.log(MAX_MSG + 1))))))


class Soak:
    def __init__(self, conns: int, duration: float, seed: int, chaos_interval: float,
                 warmup: float, grace: float, report: Report, progress: Optional[float],
                 path: Any = None, keep_alive_idle: Optional[int] = None) -> None:
        self.path = path                 # a netns.Path, or None for loopback
        self.keep_alive_idle = keep_alive_idle
        self.conns = conns
        self.duration = duration
        self.rng = random.Random(seed)
        self.pool = self.rng.randbytes(POOL_SIZE)
        self.chaos_interval = chaos_interval
        self.warmup = warmup
        self.grace = grace
        self.r = report
        self.progress = progress
        self.stop = False
        self.touched: set[int] = set()   # connection ids chaos acted on
        self.refs: Counter = Counter()   # sides of a connection id still running
        self.server_conns: dict[int, Any] = {}
        self.slots: list[dict] = []
        self.live: set[Any] = set()      # every conn open now, for the forced teardown
        self.active = 0                  # goroutines that must end by themselves
        self.next_id = 0
        self.expected: Counter = Counter()
        self.chaos: Counter = Counter()

    # -- classification ---------------------------------------------------

    def failed(self, e: BaseException, cid: Optional[int], where: str) -> None:
        kind = None
        if isinstance(e, ChecksumError):
            self.r.checksum_failures += 1
            self.r.unexpected.append(f"{where} conn {cid}: {e}")
            return
        if isinstance(e, netpoll.ClosedError):
            kind = "closed"
        elif isinstance(e, TimeoutError):
            kind = "timeout"
        elif isinstance(e, ConnectionResetError):
            kind = "reset"
        elif isinstance(e, BrokenPipeError):
            kind = "broken pipe"
        elif isinstance(e, ShortRead):
            kind = "eof mid-message"
        if kind is not None and cid is not None and cid in self.touched:
            self.expected[kind] += 1
            return
        tb = "".join(traceback.format_exception_only(type(e), e)).strip()
        self.r.unexpected.append(f"{where} conn {cid} (touched: {cid in self.touched}): {tb}")

    def release(self, cid: int) -> None:
        # Both sides are done with cid: forget it, so that the soak's own
        # bookkeeping does not grow with the number of connections.
        self.refs[cid] -= 1
        if self.refs[cid] <= 0:
            del self.refs[cid]
            self.touched.discard(cid)

    # -- stream helpers -----------------------------------------------------

    @staticmethod
    async def read_exact(conn: Any, buf: bytearray, n: int, at_boundary: bool = False) -> Optional[bytes]:
        """n bytes; None on a clean EOF before the first byte when ``at_boundary``."""
        out = bytearray()
        mv = memoryview(buf)
        while len(out) < n:
            m = await conn.read(mv[: min(len(buf), n - len(out))])
            if m == 0:
                if at_boundary and not out:
                    return None
                raise ShortRead(f"EOF after {len(out)} of {n} bytes")
            out += mv[:m]
        return bytes(out)

    @staticmethod
    async def read_checked(conn: Any, buf: bytearray, n: int, crc: int) -> None:
        mv = memoryview(buf)
        got = 0
        c = 0
        while got < n:
            m = await conn.read(mv[: min(len(buf), n - got)])
            if m == 0:
                raise ShortRead(f"EOF after {got} of {n} payload bytes")
            c = zlib.crc32(mv[:m], c)
            got += m
        if c != crc:
            raise ChecksumError(f"CRC {c:#010x} != {crc:#010x} over {n} bytes")

    def payload(self, rng: random.Random) -> memoryview:
        size = msg_size(rng)
        off = rng.randrange(POOL_SIZE - size + 1)
        return memoryview(self.pool)[off: off + size]

    # -- the two sides --------------------------------------------------------

    async def serve(self, ln: Any) -> None:
        seed = self.rng.random()
        n = 0
        try:
            while True:
                try:
                    conn = await ln.accept()
                except netpoll.ClosedError:
                    return
                except Exception as e:
                    self.failed(e, None, "accept")
                    continue
                n += 1
                self.live.add(conn)
                self.keep_alive(conn)
                self.active += 1
                netpoll.go(self.handle(conn, random.Random(f"{seed}/{n}")))
        finally:
            self.active -= 1

    async def handle(self, conn: Any, rng: random.Random) -> None:
        cid = None
        buf = bytearray(BUF_SIZE)
        try:
            hello = await self.read_exact(conn, buf, HELLO.size)
            cid = HELLO.unpack(hello)[0]
            self.server_conns[cid] = conn
            while True:
                hdr = await self.read_exact(conn, buf, HDR.size, at_boundary=True)
                if hdr is None:
                    return  # the client closed between messages
                seq, size, crc = HDR.unpack(hdr)
                if size > MAX_MSG:
                    raise ChecksumError(f"request length {size} out of range")
                await self.read_checked(conn, buf, size, crc)
                self.r.messages += 1
                self.r.bytes += size
                out = self.payload(rng)
                await conn.writev([HDR.pack(seq, len(out), zlib.crc32(out)), out])
        except Exception as e:
            self.failed(e, cid, "server")
        finally:
            if cid is not None:
                self.server_conns.pop(cid, None)
                self.release(cid)
            self.close(conn)
            self.active -= 1

    async def client(self, slot: dict, addr: Any, rng: random.Random) -> None:
        buf = bytearray(BUF_SIZE)
        try:
            while not self.stop:
                try:
                    conn = await net.dial("tcp", addr, timeout=10)
                except Exception as e:
                    if self.path is not None and isinstance(e, TimeoutError):
                        self.expected["dial timeout"] += 1
                    else:
                        self.failed(e, None, "dial")
                    await netpoll.sleep(0.05)
                    continue
                self.r.dials += 1
                self.live.add(conn)
                self.keep_alive(conn)
                self.next_id += 1
                cid = self.next_id
                self.refs[cid] = 2  # the client and, once it reads the hello, the server
                slot.update(conn=conn, cid=cid, ready=False)
                seq = 0
                try:
                    await conn.write(HELLO.pack(cid))
                    while not self.stop:
                        seq += 1
                        out = self.payload(rng)
                        await conn.writev([HDR.pack(seq, len(out), zlib.crc32(out)), out])
                        hdr = await self.read_exact(conn, buf, HDR.size)
                        rseq, size, crc = HDR.unpack(hdr)
                        if rseq != seq or size > MAX_MSG:
                            raise ChecksumError(f"response header {rseq}/{size} for request {seq}")
                        await self.read_checked(conn, buf, size, crc)
                        self.r.messages += 1
                        self.r.bytes += size
                        slot["ready"] = True
                except Exception as e:
                    self.failed(e, cid, "client")
                finally:
                    slot.update(conn=None, ready=False)
                    self.close(conn)
                    self.release(cid)
                if not self.stop:
                    await netpoll.sleep(rng.random() * 0.01)  # then re-dial
        finally:
            self.active -= 1

    def keep_alive(self, conn: Any) -> None:
        # Shorter keep-alive than Go's 15 s: on a lossy path a reset the
        # path dropped is noticed only when the next packet draws another.
        if self.keep_alive_idle is None:
            return
        conn.set_keep_alive(True)
        s = socket.socket(fileno=conn.fileno())  # the conn's own socket
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self.keep_alive_idle)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        finally:
            s.detach()

    def close(self, conn: Any) -> None:
        self.live.discard(conn)
        try:
            conn.close()
        except Exception as e:  # a close error is never expected here
            self.r.unexpected.append(f"close: {e!r}")

    # -- chaos ------------------------------------------------------------------

    async def chaos_loop(self) -> None:
        rng = random.Random(self.rng.random())
        try:
            while not self.stop:
                at = netpoll.now() + rng.expovariate(1.0 / self.chaos_interval)
                while not self.stop and netpoll.now() < at:
                    await netpoll.sleep(min(0.1, at - netpoll.now()))
                if self.stop:
                    return
                slot = rng.choice(self.slots)
                if not slot["ready"]:
                    self.chaos["skipped"] += 1
                    continue
                cid = slot["cid"]
                server = rng.random() < 0.4
                conn = self.server_conns.get(cid) if server else slot["conn"]
                if conn is None:
                    self.chaos["skipped"] += 1
                    continue
                side = "server " if server else ""
                self.touched.add(cid)
                r = rng.random()
                try:
                    if r < 0.2:
                        self.chaos[side + "close"] += 1
                        self.close(conn)
                    elif r < 0.4:
                        self.chaos[side + "reset"] += 1
                        conn.set_linger(0)
                        self.close(conn)
                    else:
                        self.chaos[side + "deadline"] += 1
                        how = rng.random()
                        if how < 0.15:
                            t = netpoll.now() - 1.0                     # already past
                        elif how < 0.3:
                            t = None                                    # cleared
                        elif how < 0.45:
                            t = netpoll.now() + 3600.0                  # far ahead
                        else:
                            t = netpoll.now() + rng.uniform(0.001, 2.0)
                        mode = rng.choice(("r", "w", "rw"))
                        {"r": conn.set_read_deadline, "w": conn.set_write_deadline, "rw": conn.set_deadline}[mode](t)
                except netpoll.ClosedError:
                    self.chaos["raced a close"] += 1
        finally:
            self.active -= 1

    # -- the run ------------------------------------------------------------

    async def main(self) -> None:
        if self.path is None:
            ln = net.listen("tcp", "127.0.0.1:0", backlog=max(128, self.conns))
            addr = ln.addr
        else:
            # The runtime's thread is in the client namespace (run_soak);
            # the listener's socket is made in the server's.
            with self.path.server.entered():
                ln = net.listen("tcp", "0.0.0.0:0", backlog=max(128, self.conns))
            addr = f"{self.path.link.server_ip}:{ln.addr.port}"
        self.active += 1
        netpoll.go(self.serve(ln))
        for i in range(self.conns):
            slot = {"conn": None, "cid": None, "ready": False}
            self.slots.append(slot)
            self.active += 1
            netpoll.go(self.client(slot, addr, random.Random(self.rng.random())))
        self.active += 1
        netpoll.go(self.chaos_loop())
        start = netpoll.now()
        end = start + self.duration
        warm_at = start + self.warmup
        next_progress = start + self.progress if self.progress else math.inf
        while netpoll.now() < end:
            await netpoll.sleep(min(0.25, max(0.0, end - netpoll.now())))
            t = netpoll.now()
            if warm_at is not None and t >= warm_at:
                self.r.rss_warm_kib = rss_kib()
                warm_at = None
            if t >= next_progress:
                next_progress += self.progress
                print(f"[{t - start:7.1f} s] messages {self.r.messages:,} "
                      f"bytes {self.r.bytes:,} unexpected {len(self.r.unexpected)} "
                      f"rss {rss_kib():,} KiB", file=sys.stderr, flush=True)
        if warm_at is not None:
            self.r.rss_warm_kib = rss_kib()
        self.r.rss_end_kib = rss_kib()
        # Stop: slots finish their exchange and close; then the listener.
        self.stop = True
        limit = netpoll.now() + self.grace
        while self.active > 1 and netpoll.now() < limit:  # 1: the accept loop
            await netpoll.sleep(0.02)
        ln.close()
        while self.active > 0 and netpoll.now() < limit:
            await netpoll.sleep(0.02)
        self.r.stuck = self.active
        for conn in list(self.live):
            self.close(conn)


def run_soak(conns: int = 1000, duration: float = 60.0, seed: int = 1, backend: Optional[str] = None,
             chaos_interval: float = 0.01, warmup: Optional[float] = None, grace: float = 15.0,
             progress: Optional[float] = None, netns_loss: Optional[float] = None,
             rate: Optional[str] = None, keep_alive_idle: Optional[int] = None) -> Report:
    """Run one soak in this process and return its report; with
    ``netns_loss`` or ``rate``, over a network path between two namespaces."""
    name = backend or netpoll.BACKEND
    report = Report(backend=name, conns=conns, duration=duration, seed=seed,
                    netns_loss=netns_loss, rate=rate)
    if netns_loss is None and rate is None:
        return _run_soak(report, chaos_interval, warmup, grace, progress, None, keep_alive_idle)
    netns = import_netns()
    why = netns.unavailable()
    if why:
        raise SystemExit(f"--netns-loss/--rate need a network namespace: {why}")
    with netns.Path() as path:
        drops = path.set_loss(netns_loss) if netns_loss else []
        if rate:
            path.link.limit_rate(rate)
        try:
            return _run_soak(report, chaos_interval, warmup, grace, progress, path, keep_alive_idle)
        finally:
            report.dropped_packets = sum(path.hits(r) for r in drops)
            if rate:
                report.dropped_packets += sum(
                    path.link.qdisc_stats(side).get("drops", 0) for side in ("server", "client"))


def import_netns():
    """tests/netfaults/netns.py, the module that builds the path."""
    import importlib.util

    name = "netns"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(os.path.dirname(HERE), "tests", "netfaults", "netns.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _run_soak(report: Report, chaos_interval: float, warmup: Optional[float], grace: float,
              progress: Optional[float], path: Any, keep_alive_idle: Optional[int]) -> Report:
    name, conns, duration, seed = report.backend, report.conns, report.duration, report.seed
    max_fd = netpoll.backend_class(name).max_fd
    if max_fd is not None and 2 * conns + 64 > max_fd:
        fit = (max_fd - 64) // 2
        report.notes.append(f"{name} refuses descriptors >= {max_fd}: {conns} connections "
                            f"need {2 * conns} of them, so {fit} were used")
        conns = report.conns = fit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * conns + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors "
                             f"{conns} connections need")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    if warmup is None:
        warmup = min(60.0, duration / 10)
    gc.collect()
    report.fds_before = open_fd_count()
    report.rss_start_kib = rss_kib()
    soak = Soak(conns, duration, seed, chaos_interval, warmup, grace, report, progress, path,
                keep_alive_idle)
    t0 = time.monotonic()
    try:
        if path is None:
            netpoll.run(soak.main(), backend=name)
        else:
            with path.client.entered():
                netpoll.run(soak.main(), backend=name)
    finally:
        report.elapsed = time.monotonic() - t0
        report.expected = dict(soak.expected)
        report.chaos = dict(soak.chaos)
        gc.collect()
        report.fds_after = open_fd_count()
        report.rss_after_kib = rss_kib()
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return report


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=1000, help="concurrent connections (default 1000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default=None, help="default: netpoll.BACKEND")
    p.add_argument("--chaos-interval", type=float, default=0.01,
                   help="mean seconds between chaos actions (default 0.01)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before the warm RSS sample (default: a tenth of the run, at most 60)")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds the teardown may take (default 15; 45 over a lossy path)")
    p.add_argument("--progress", type=float, default=None, help="print progress every S seconds")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--netns-loss", type=float, default=None, metavar="PCT",
                   help="run over a veth path between two network namespaces that drops "
                        "PCT %% of the packets each way (root; ip, nft, tc)")
    p.add_argument("--rate", default=None, metavar="RATE",
                   help="rate-limit that path with tbf, in tc's spelling (e.g. 10mbit)")
    p.add_argument("--keep-alive-idle", type=int, default=None, metavar="S",
                   help="keep-alive probes after S s of silence, 1 s apart, on every conn "
                        "(default: netpoll's, 15 s)")
    a = p.parse_args(argv)
    if a.conns < 1 or a.duration <= 0 or a.chaos_interval <= 0 or a.duration > 86400:
        p.error("--conns must be >= 1, --duration in (0, 86400], --chaos-interval > 0")
    if a.keep_alive_idle is not None and not 1 <= a.keep_alive_idle <= 32767:
        p.error(f"--keep-alive-idle must be 1 to 32767 seconds, not {a.keep_alive_idle}")
    if a.netns_loss is not None and not 0 <= a.netns_loss <= 100:
        p.error(f"--netns-loss must be a percentage from 0 to 100, not {a.netns_loss:g}")
    if a.rate is not None and not re.fullmatch(r"\d+(\.\d+)?([kmgt]?(bit|bps))", a.rate, re.IGNORECASE):
        p.error(f"--rate must be a tc rate such as 1mbit, 500kbit or 10mbps, not {a.rate!r}")
    grace = a.grace if a.grace is not None else 15.0 if a.netns_loss is None and a.rate is None else 45.0
    r = run_soak(a.conns, a.duration, a.seed, a.backend, a.chaos_interval, a.warmup, grace,
                 a.progress, a.netns_loss, a.rate, a.keep_alive_idle)
    if a.json:
        print(json.dumps(dict(asdict(r), ok=r.ok), indent=2))
    else:
        print("\n".join(r.lines()))
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
