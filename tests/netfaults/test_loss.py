"""Random packet loss on a real path: 200 connections exchange checksummed
messages of 1 B to 1 MiB through a veth pair that drops 1 %, 5 % or 20 % of
the packets each way (nftables ``numgen random``), each connection under a
deadline of its own.

Every connection's client dials, then runs a plan of up to four exchanges
(a request of a log-uniform size from 1 B to 1 MiB, framed as sequence
number, length and CRC-32, answered by a response of another such size);
one connection in 25 sends a request of exactly 1 B first, one in 25
exactly 1 MiB. Each client has a deadline LOAD[loss] seconds after the
start, with its dial bounded by the time left; the server side of each
connection gets that deadline plus SERVER_GRACE. Expected: no checksum or
sequence failure; the only error a client sees is its own deadline, at or
after it (within SLACK), or, for at most 1 in 50, a reset by the server's
kernel for a connection the server never accepted (see judge_resets: a
handshake the kernel dropped); a server side fails only once its client has given
up (the client's reset or close, or the server's later deadline: a side
that never got its client's hello counts against the clients that gave up,
and fails only after their deadline), or, after
a client that finished, while it waits for that client's FIN; every
connection ends, finished or timed out; descriptors before == after.

Heavy: up to LOAD[loss] + SERVER_GRACE seconds each (9 s), less when every
connection finishes sooner.
"""

from __future__ import annotations

import math
import random
import struct
import zlib

import pytest

import netpoll
from netpoll import net

from support import open_fds
from nfutil import SLACK, addr, listen, run

CONNS = 200
MAX_MSG = 1 << 20
EXCHANGES = 4
LOAD = {1: 6.0, 5: 6.0, 20: 6.0}
SERVER_GRACE = 3.0
HDR = struct.Struct("!QII")  # sequence number, length, CRC-32
HELLO = struct.Struct("!Q")  # connection index


def plan(i: int, rng: random.Random) -> list[tuple[int, int]]:
    def size() -> int:
        return min(MAX_MSG, max(1, int(math.exp(rng.uniform(0.0, math.log(MAX_MSG + 1))))))

    p = [(size(), size()) for _ in range(EXCHANGES)]
    if i % 25 == 0:
        p[0] = (1, p[0][1])
    elif i % 25 == 1:
        p[0] = (MAX_MSG, p[0][1])
    return p


class Checksum(Exception):
    pass


class Load:
    def __init__(self, loss: int, seed: int) -> None:
        self.loss = loss
        self.rng = random.Random(seed)
        self.pool = self.rng.randbytes(2 * MAX_MSG)
        self.gave_up: set[int] = set()
        self.done: set[int] = set()  # clients that verified their last response
        self.finished = 0
        self.timed_out = 0
        self.timed_out_in_dial = 0
        self.messages = 0
        self.bytes = 0
        self.largest = 0
        self.checksum_failures: list[str] = []
        self.unexpected: list[str] = []
        self.ends: dict[int, str] = {}  # client port: how its server side ended
        # Clients reset with no server side: (client, port, what it said).
        self.resets: list[tuple[int, int, str]] = []
        self.kernel_resets = 0
        self.late: list[float] = []
        self.running = 0
        # Server sides that failed before the hello: when (from the
        # deadline) and how.
        self.anonymous: list[tuple[float, str]] = []

    def payload(self, size: int) -> memoryview:
        off = self.rng.randrange(len(self.pool) - size + 1)
        return memoryview(self.pool)[off: off + size]

    async def send(self, conn, seq: int, size: int) -> None:
        out = self.payload(size)
        await conn.writev([HDR.pack(seq, size, zlib.crc32(out)), out])

    async def recv(self, conn, buf: bytearray, seq: int, at_boundary: bool = False):
        hdr = await self.read_exact(conn, buf, HDR.size, at_boundary)
        if hdr is None:
            return None
        rseq, size, crc = HDR.unpack(hdr)
        if rseq != seq or size > MAX_MSG:
            raise Checksum(f"header {rseq}/{size}, expected sequence {seq}")
        mv = memoryview(buf)
        got = c = 0
        while got < size:
            m = await conn.read(mv[: min(len(buf), size - got)])
            if m == 0:
                raise EOFError(f"EOF after {got} of {size} payload bytes")
            c = zlib.crc32(mv[:m], c)
            got += m
        if c != crc:
            raise Checksum(f"CRC {c:#010x} != {crc:#010x} over {size} bytes")
        self.messages += 1
        self.bytes += size
        self.largest = max(self.largest, size)
        return size

    @staticmethod
    async def read_exact(conn, buf: bytearray, n: int, at_boundary: bool = False):
        out = bytearray()
        mv = memoryview(buf)
        while len(out) < n:
            m = await conn.read(mv[: n - len(out)])
            if m == 0:
                if at_boundary and not out:
                    return None
                raise EOFError(f"EOF after {len(out)} of {n} bytes")
            out += mv[:m]
        return bytes(out)

    async def client(self, i: int, address: str, deadline: float) -> None:
        conn = None
        buf = bytearray(65536)
        phase = "dial"
        try:
            conn = await net.dial("tcp", address, timeout=deadline - netpoll.now())
            conn.set_deadline(deadline)
            phase = "hello"
            await conn.write(HELLO.pack(i))
            for seq, (req, resp) in enumerate(plan(i, random.Random(f"{i}")), 1):
                phase = f"request {seq}"
                await self.send(conn, seq, req)
                phase = f"response {seq}"
                if await self.recv(conn, buf, seq) != resp:
                    raise Checksum(f"response {seq} is not {resp} bytes")
            self.finished += 1
            self.done.add(i)
        except TimeoutError as e:
            t = netpoll.now()
            self.gave_up.add(i)
            if t < deadline - 0.01:
                self.unexpected.append(f"client {i}: timeout {deadline - t:.3f} s before its deadline: {e!r}")
            else:
                self.late.append(t - deadline)
                self.timed_out += 1
                self.timed_out_in_dial += conn is None
        except Checksum as e:
            self.gave_up.add(i)
            self.checksum_failures.append(f"client {i}: {e}")
        except Exception as e:
            self.gave_up.add(i)
            what = f"{e!r} in {phase}, {netpoll.now() - deadline:+.3f} s from its deadline"
            if isinstance(e, ConnectionResetError) and conn is not None:
                self.resets.append((i, conn.local_addr.port, what))  # judged by judge_resets
            else:
                self.unexpected.append(f"client {i}: {what}")
        finally:
            if conn is not None:
                conn.close()
            self.running -= 1

    async def handle(self, conn, deadline: float) -> None:
        i = None
        last = False  # waiting for the EOF after the last response
        buf = bytearray(65536)
        port = conn.remote_addr.port
        outcome = "finished"
        try:
            conn.set_deadline(deadline + SERVER_GRACE)
            i = HELLO.unpack(await self.read_exact(conn, buf, HELLO.size))[0]
            p = plan(i, random.Random(f"{i}"))
            for seq, (req, resp) in enumerate(p, 1):
                got = await self.recv(conn, buf, seq, at_boundary=True)
                if got is None:
                    raise EOFError(f"the client closed before request {seq}")
                if got != req:
                    raise Checksum(f"request {seq} is not {req} bytes")
                await self.send(conn, seq, resp)
            last = True
            if await self.read_exact(conn, buf, 1, at_boundary=True) is not None:
                raise Checksum("bytes after the last request")
        except Checksum as e:
            outcome = repr(e)
            self.checksum_failures.append(f"server {i}: {e}")
        except (TimeoutError, ConnectionResetError, BrokenPipeError, EOFError) as e:
            outcome = repr(e)
            # The client gave up (its deadline) and closed or reset; or
            # its reset was lost and this side's own later deadline fired.
            # Or the client finished and this side's deadline came before
            # the client's FIN got through (retransmissions back off).
            if i is None:
                # The hello never came: the client is unknown, so it is
                # matched by count (at most one per client that gave up)
                # and by time (not before the clients' deadline).
                self.anonymous.append((netpoll.now() - deadline, repr(e)))
            elif not (i in self.gave_up or (last and i in self.done)):
                self.unexpected.append(f"server {i} (client still on): {e!r}")
        except Exception as e:
            outcome = repr(e)
            self.unexpected.append(f"server {i}: {e!r}")
        finally:
            conn.close()
            self.ends[port] = f"server side {i} ended {netpoll.now() - deadline:+.3f} s from the deadline: {outcome}"
            self.running -= 1

    def judge_resets(self) -> None:
        """A client reset before its deadline is unexpected when the server
        accepted its connection: no server side closes before its client
        gives up. When the server never accepted it, the reset came from the
        server's kernel with no socket behind it: a handshake whose request
        the kernel dropped (under this loss, rarely, the SYN-ACK timer, a
        retransmitted SYN and the final ACK meet within a fraction of a
        millisecond), then a listener's answer to the data that follows."""
        for i, port, what in self.resets:
            if port in self.ends:
                self.unexpected.append(f"client {i}: {what}; its {self.ends[port]}")
            else:
                self.kernel_resets += 1

    async def serve(self, ln, deadline: float) -> None:
        while True:
            try:
                conn = await ln.accept()
            except netpoll.ClosedError:
                return
            self.running += 1
            netpoll.go(self.handle(conn, deadline))


def run_load(path, backend_name, load: Load, conns: int, seconds: float) -> int:
    """``conns`` clients with a deadline ``seconds`` ahead; the goroutines
    still running when every one should have ended (0 expected)."""

    async def main():
        ln = listen(path, backlog=conns)
        deadline = netpoll.now() + seconds
        acceptor = netpoll.go(load.serve(ln, deadline))
        address = addr(path, ln)
        for i in range(conns):
            load.running += 1
            netpoll.go(load.client(i, address, deadline))
        # Each goroutine ends by its own deadline: clients at deadline,
        # servers at deadline + SERVER_GRACE at the latest.
        limit = deadline + SERVER_GRACE + SLACK + 5.0
        while load.running and netpoll.now() < limit:
            await netpoll.sleep(0.05)
        ln.close()
        await acceptor
        return load.running

    return run(path, backend_name, main)


@pytest.mark.parametrize("loss", sorted(LOAD))
def test_loss(backend_name, path, loss):
    drops = path.set_loss(loss)
    load = Load(loss, seed=loss)
    before = open_fds()
    still = run_load(path, backend_name, load, CONNS, LOAD[loss])
    after = open_fds()
    load.judge_resets()
    report = (f"loss {loss} %: {load.finished} finished, {load.timed_out} timed out "
              f"({load.timed_out_in_dial} in dial), {load.messages} messages, {load.bytes:,} bytes, "
              f"largest {load.largest:,}, dropped {[path.hits(r) for r in drops]} packets, "
              f"{len(load.anonymous)} server sides without a hello "
              f"{[f'{t:+.3f} s {e}' for t, e in sorted(load.anonymous)[:3]]}; "
              f"{load.kernel_resets} reset with no server side; "
              f"checksum failures {load.checksum_failures[:5]}; unexpected {load.unexpected[:5]}; "
              f"server TCP counters {path.server.tcp_counters()}, client {path.client.tcp_counters()}")
    print(report)
    assert still == 0, f"{still} goroutines outlived their deadlines; {report}"
    assert load.checksum_failures == [], report
    assert load.unexpected == [], report
    assert load.finished + load.timed_out + load.kernel_resets == CONNS, report
    assert load.kernel_resets <= CONNS // 50, report
    assert len(load.anonymous) <= load.timed_out, f"{len(load.anonymous)} server sides failed before a hello; {report}"
    assert min(load.anonymous, default=(0.0,))[0] >= -0.01, f"a server side failed before the deadline; {report}"
    assert max(load.late, default=0.0) < SLACK, f"a deadline fired {max(load.late):.2f} s late; {report}"
    assert after == before, f"descriptors {sorted(before)} before, {sorted(after)} after"
    # The path did drop packets both ways, and the load got through it.
    assert all(path.hits(r) > 0 for r in drops), report
    assert load.messages > 0, report


def test_loss_harness_detects_corruption(backend_name, path, monkeypatch):
    """A control: the checks can fail. Every 7th message is sent with a
    wrong CRC in its header, over a path with no loss."""
    real = zlib.crc32
    sent = [0]

    def crc32(data, value=0):
        c = real(data, value)
        if value == 0 and getattr(data, "readonly", False):  # a sender's whole-payload CRC
            sent[0] += 1
            if sent[0] % 7 == 0:
                return c ^ 1
        return c

    monkeypatch.setattr(zlib, "crc32", crc32)
    load = Load(0, seed=3)
    assert run_load(path, backend_name, load, 10, 2.0) == 0
    assert load.checksum_failures, f"{load.messages} messages, no checksum failure"


def test_loss_harness_flags_a_reset_by_an_accepted_conn(backend_name, path):
    """A control for judge_resets: every 3rd connection the server accepts
    is reset at once (linger 0), over a path with no loss. Those three
    clients fail unexpectedly, a reset naming how its server side ended;
    none is taken for a kernel's."""
    class Resetting(Load):
        accepted = 0

        async def handle(self, conn, deadline):
            self.accepted += 1
            if self.accepted % 3 == 0:
                self.ends[conn.remote_addr.port] = "server side reset on accept"
                conn.set_linger(0)
                conn.close()
                self.running -= 1
                return
            await super().handle(conn, deadline)

    load = Resetting(0, seed=4)
    assert run_load(path, backend_name, load, 9, 2.0) == 0
    load.judge_resets()
    assert load.kernel_resets == 0, load.unexpected
    # A reset client fails with ECONNRESET, or EPIPE on a write.
    assert len(load.unexpected) == 3, load.unexpected
    assert all("its server side reset on accept" in u or "BrokenPipeError" in u for u in load.unexpected), load.unexpected
