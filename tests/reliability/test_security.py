"""Security properties: descriptors do not leak into children, listeners do
not share their port, an old descriptor's events and timers cannot reach a
newer one, a stalled peer cannot make a writer buffer without bound, and
many idle connections do not slow an active one."""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import resource
import socket
import subprocess
import sys
import time

import pytest

import netpoll
from netpoll import net
from netpoll._netpoll import monotonic_ns, pollclose

from support import read_full, run

# -- close-on-exec ------------------------------------------------------------------

CHILD_FDS = r"""
import json, os
links = {}
for n in os.listdir("/proc/self/fd"):
    try:
        links[n] = os.readlink("/proc/self/fd/" + n)
    except OSError:
        pass
print(json.dumps(links))
"""


def links() -> dict[int, str]:
    out = {}
    for n in os.listdir("/proc/self/fd"):
        try:
            out[int(n)] = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_child_inherits_no_descriptor_netpoll_created(backend_name, tmp_path):
    """Every descriptor netpoll made in this runtime (the poller and its
    wakeup channel, listeners, dialed and accepted connections, UDP and unix
    sockets, descriptors of a to_thread hand-off) stays out of a child
    started with close_fds=False. tests/net/test_fdflags.py checks the net
    layer's sockets one by one; this one diffs the whole descriptor table."""
    before = links()

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = await net.dial("tcp", ln.addr)
        s = await ln.accept()
        u = net.listen_packet("udp", "127.0.0.1:0")
        ud = await net.dial("udp", u.local_addr)
        uln = net.listen("unix", str(tmp_path / "s"))
        uc = await net.dial("unix", str(tmp_path / "s"))
        us = await uln.accept()
        ug = net.listen_packet("unixgram", str(tmp_path / "g"))
        await netpoll.to_thread(time.sleep, 0.001)
        ours = {fd: link for fd, link in links().items() if fd not in before}
        try:
            # The poller and its wakeup channel are among them.
            assert len(ours) >= 11, ours
            # A control: an inheritable pipe does reach the child.
            r, w = os.pipe()
            os.set_inheritable(w, True)
            control = os.readlink(f"/proc/self/fd/{w}")
            try:
                out = subprocess.run([sys.executable, "-c", CHILD_FDS], close_fds=False,
                                     capture_output=True, text=True, timeout=20, check=True).stdout
            finally:
                os.close(r)
                os.close(w)
            child = set(json.loads(out).values())
            assert control in child, "the control pipe was not inherited"
            leaked = {fd: link for fd, link in ours.items() if link in child}
            assert not leaked, f"inherited by the child: {leaked}"
        finally:
            for x in (c, s, ln, u, ud, uc, us, uln, ug):
                x.close()

    run(backend_name, main)


# -- SO_REUSEPORT -----------------------------------------------------------------------

def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_listeners_do_not_set_reuseport(backend_name):
    """No listener netpoll makes sets SO_REUSEPORT (the API has no way to ask
    for it), so no other socket, of this process or another user's, can
    bind the same port and take a share of its connections: a second listen
    on the port fails with EADDRINUSE, even from a plain socket that asks for
    SO_REUSEPORT itself. (SO_REUSEADDR, which Go sets on stream listeners,
    only allows rebinding over TIME_WAIT.)"""
    async def main():
        nets = [("tcp", "127.0.0.1:0"), ("tcp4", "127.0.0.1:0"), ("tcp", "0.0.0.0:0")]
        if _ipv6_loopback():
            nets += [("tcp6", "[::1]:0"), ("tcp", "[::]:0")]
        for network, addr in nets:
            ln = net.listen(network, addr)
            try:
                on = ln._fd._control(lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
                assert on == 0, f"{network} {addr}: SO_REUSEPORT is set"
                port = ln.addr.port
                with pytest.raises(net.OpError) as ei:
                    net.listen(network, (ln.addr.host, port))
                assert isinstance(ei.value, OSError) and ei.value.errno == errno.EADDRINUSE
                fam = socket.AF_INET6 if ":" in ln.addr.host else socket.AF_INET
                with socket.socket(fam, socket.SOCK_STREAM) as thief:
                    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    with pytest.raises(OSError) as ei:
                        thief.bind((ln.addr.host, port))
                    assert ei.value.errno == errno.EADDRINUSE
            finally:
                ln.close()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            on = pc._control(lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
            assert on == 0, "udp: SO_REUSEPORT is set"
            with pytest.raises(net.OpError) as ei:
                net.listen_packet("udp", pc.local_addr)
            assert ei.value.errno == errno.EADDRINUSE
        finally:
            pc.close()

    run(backend_name, main)


# -- stale readiness and timers ---------------------------------------------------------

ROUNDS = 150


def test_stale_readiness_or_timer_never_wakes_a_newer_descriptor(backend_name):
    """Round after round, a descriptor is registered, given a pending read
    readiness (data its owner never reads), an armed read deadline a
    fraction of a millisecond to a few milliseconds ahead and, sometimes, a
    parked reader; then it is closed (evict, pollclose, close) and a new
    socket takes its number, usually with the same recycled PollDesc. A
    goroutine of the new descriptor waits for reading with no deadline: it
    must not be woken until its own peer writes, neither by the old
    readiness nor by the old timer (fdseq and rseq make both stale)."""
    rng = random.Random(11)

    async def waiter(pd, woke):
        await pd.wait("r")
        woke.append(netpoll.now())

    async def main():
        rt = netpoll.current_runtime()
        same_fd = same_pd = 0
        for i in range(ROUNDS):
            a, b = socket.socketpair()
            a.setblocking(False)
            pd = rt.pollopen(a.fileno())
            fd, old_seq = a.fileno(), pd.fdseq
            old = None
            if rng.random() < 0.5:
                old = netpoll.go(pd.wait("r"))
                await netpoll.sleep(0)
            b.send(b"old")  # readiness for the old incarnation
            ahead = rng.uniform(0.0002, 0.004)
            rt.wake(pd.set_deadline(monotonic_ns() + int(ahead * 1e9), "r"))
            if rng.random() < 0.5:
                await netpoll.sleep(0)  # sometimes the event is polled first
            rt.wake(pd.evict())
            pollclose(pd)
            a.close()
            if old is not None:
                try:
                    await old  # woken by its readiness, or by the close
                except netpoll.ClosedError:
                    pass
            a2, b2 = socket.socketpair()
            a2.setblocking(False)
            if b2.fileno() == fd:
                a2, b2 = b2, a2
                a2.setblocking(False)
            pd2 = rt.pollopen(a2.fileno())
            same_fd += a2.fileno() == fd
            if pd2 is pd:
                same_pd += 1
                assert pd2.fdseq != old_seq
            try:
                woke: list = []
                g = netpoll.go(waiter(pd2, woke))
                await netpoll.sleep(ahead + 0.002)  # past the old deadline
                assert not woke, f"round {i}: a stale event or timer woke the new descriptor's reader"
                assert pd2.check("r") == 0, f"round {i}: the old deadline reached the new descriptor"
                b2.send(b"new")
                await g
                assert len(woke) == 1 and a2.recv(16) == b"new"
            finally:
                rt.wake(pd2.evict())
                pollclose(pd2)
                for x in (a2, b2, b):
                    x.close()
        return same_fd, same_pd

    same_fd, same_pd = run(backend_name, main)
    assert same_fd > ROUNDS // 2, f"the new socket took the old number in only {same_fd} rounds"
    assert same_pd > 0


def test_stale_deadline_and_data_never_reach_a_newer_conn(backend_name):
    """The same at the net layer: an old connection with a parked reader
    whose read deadline is about to fire, and a peer with unread data, is
    closed; a new connection on the same numbers reads only its own data
    and never times out."""
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        reused = raced = 0
        try:
            for i in range(40):
                c = await net.dial("tcp", ln.addr)
                s = await ln.accept()
                numbers = {c.fileno(), s.fileno()}
                await c.write(b"old data")  # never read: readiness pending for s
                c.set_read_deadline(netpoll.now() + 0.02)
                r = netpoll.go(c.read(bytearray(8)))  # parked until the deadline
                await netpoll.sleep(0)
                c.close()
                s.close()
                try:
                    await r
                except netpoll.ClosedError:
                    raced += 1  # closed with its timer armed
                except TimeoutError:
                    pass  # a host that stalled 20 ms: this round checks reuse only
                else:
                    raise AssertionError(f"round {i}: a read of a closed conn returned")
                c2 = await net.dial("tcp", ln.addr)
                s2 = await ln.accept()
                reused += bool(numbers & {c2.fileno(), s2.fileno()})
                try:
                    got_c = netpoll.go(read_full(c2, 8))
                    got_s = netpoll.go(read_full(s2, 8))
                    await netpoll.sleep(0.025)  # past the old deadline
                    assert not got_c.done and not got_s.done, f"round {i}: a new conn's read ended early"
                    await s2.write(b"new to c")
                    await c2.write(b"new to s")
                    assert await got_c == b"new to c"
                    assert await got_s == b"new to s"
                finally:
                    c2.close()
                    s2.close()
        finally:
            ln.close()
        return reused, raced

    reused, raced = run(backend_name, main)
    assert reused > 20 and raced > 20, f"{reused} of 40 rounds reused a number, {raced} closed before the deadline"


# -- a stalled peer ---------------------------------------------------------------------

def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_stalled_peer_cannot_make_a_writer_buffer_without_bound(backend_name):
    """A peer that never reads: a 64 MiB write blocks once the kernel's
    buffers are full (it does not return, and netpoll copies nothing: the
    write sends from the caller's buffer), the write deadline ends it with
    a timeout, and neither the bytes taken nor the process's memory grow
    with the size of the write or the number of attempts."""
    big = bytes(64 << 20)  # allocated before the baseline

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = await net.dial("tcp", ln.addr)
        s = await ln.accept()  # never read
        try:
            gc.collect()
            base = rss_kib()
            g = netpoll.go(c.write(big))
            await netpoll.sleep(0.2)
            assert not g.done, "a 64 MiB write to a peer that never reads returned"
            c.set_write_deadline(netpoll.now() + 0.05)
            with pytest.raises(TimeoutError):
                await g
            for _ in range(20):  # retries do not accumulate anything
                c.set_write_deadline(netpoll.now() + 0.01)
                with pytest.raises(TimeoutError):
                    await c.write(memoryview(big)[: 8 << 20])
                with pytest.raises(TimeoutError):
                    await c.writev([memoryview(big)[: 4 << 20]] * 4)
            grown = rss_kib() - base
            assert grown < 16 * 1024, f"RSS grew by {grown} KiB while writing to a stalled peer"
            # What the kernel took is bounded by its buffers, not by the writes.
            c.close()
            taken = 0
            buf = bytearray(1 << 20)
            s.set_read_deadline(netpoll.now() + 5)
            while n := await s.read(buf):
                taken += n
            assert taken < 32 << 20, f"{taken} bytes were accepted for a peer that never read"
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


# -- 10,000 idle connections ----------------------------------------------------------

IDLE = 10_000
IDLE_CHILD = r"""
import resource, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, hard))
conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
"""


def _raise_nofile(need: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft, hard
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit is {hard}: {IDLE} idle connections need {need} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return soft, hard


def test_many_idle_connections_do_not_slow_an_active_one(backend_name):
    """10,000 idle connections, each with a goroutine parked in read under a
    one-hour read deadline (the clients live in a child process), do not
    degrade an active connection's round trips: the best of five batches
    with them is within 3x the best without (loose: a scan over every
    registered descriptor per wait would be ~100x). Only for the
    registered-once backends (edge_triggered: epoll, kqueue), whose wait
    costs what is ready, not what is registered; poll and select scan their
    armed descriptors on every wait, and select cannot hold 10,000 of them."""
    backend = netpoll.backend_class(backend_name)
    if not backend.edge_triggered:
        pytest.skip(f"{backend_name} scans every armed descriptor per wait (not registered once)")
    soft, hard = _raise_nofile(IDLE + 1024)
    TRIPS, BATCHES = 500, 5

    async def round_trips(c) -> float:
        best = float("inf")
        one = bytearray(1)
        for _ in range(BATCHES):
            t = time.perf_counter()
            for _ in range(TRIPS):
                await c.write(b"x")
                await c.read(one)
            best = min(best, time.perf_counter() - t)
        return best / TRIPS

    async def echo(s):
        buf = bytearray(16)
        try:
            while n := await s.read(buf):
                await s.write(memoryview(buf)[:n])
        except netpoll.ClosedError:
            pass

    async def idle(conn, ended):
        try:
            conn.set_read_deadline(netpoll.now() + 3600)
            await conn.read(bytearray(1))
        except OSError:
            pass
        finally:
            ended.append(1)

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = await net.dial("tcp", ln.addr)
        s = await ln.accept()
        netpoll.go(echo(s))
        idles: list = []
        ended: list = []
        proc = None
        try:
            without = await round_trips(c)
            proc = subprocess.Popen([sys.executable, "-c", IDLE_CHILD, str(ln.addr.port), str(IDLE)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            ready = netpoll.go(netpoll.to_thread(proc.stdout.readline))
            while len(idles) < IDLE:
                conn = await ln.accept()
                idles.append(conn)
                netpoll.go(idle(conn, ended))
            assert (await ready).strip() == "ready"
            await netpoll.sleep(0.05)
            assert not ended, "an idle connection's reader ended"
            with_idle = await round_trips(c)
            ratio = with_idle / without
            print(f"{backend_name}: round trip {without * 1e6:.1f} us alone, "
                  f"{with_idle * 1e6:.1f} us beside {IDLE} idle connections ({ratio:.2f}x)")
            assert ratio < 3.0, (f"{IDLE} idle connections slowed the active one {ratio:.1f}x "
                                 f"({without * 1e6:.1f} -> {with_idle * 1e6:.1f} us per round trip)")
        finally:
            if proc is not None:
                proc.stdin.close()
                proc.wait(timeout=30)
                proc.stdout.close()
            for x in idles:
                x.close()
            c.close()
            s.close()
            ln.close()

    try:
        run(backend_name, main)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
