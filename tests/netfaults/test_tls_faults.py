"""netpoll.tls on a faulty path: the ciphertext goes through the FD layer,
so loss, resets and black holes reach a TLS conn as they reach a plain one.

- Loss: 40 TLS connections through 5 % random loss each way, each under a
  deadline of its own, handshake and four echoed messages of up to 256 KiB.
  Expected: every connection finishes or times out at its deadline (within
  SLACK); the bytes that come back are the bytes sent; no other error
  (but at most one reset of a connection the server never accepted, its
  kernel's, as in test_loss), and no TLS error at all before the deadline
  (TCP repairs loss below the record layer, so a record that fails
  authentication would be netpoll's fault; after it, a server side sees its
  client's handshake or stream cut short); descriptors before == after.
- A RST in the middle of a TLS stream fails the reader's read with
  ConnectionResetError (the FD layer's OpError, not a TLS record error and
  not an EOF).
- A handshake into a black hole ends with a timeout at its deadline.
"""

from __future__ import annotations

import random
import ssl

import pytest

import netpoll
from netpoll import net, tls

from support import open_fds
from nfutil import SLACK, addr, close_all, listen, pair, read_full, reject_from, run

trustme = pytest.importorskip("trustme", reason="the TLS tests make their certificates with trustme")

CA = trustme.CA()
CERT = CA.issue_cert("localhost", "198.18.0.1")
CONNS = 40
SECONDS = 8.0
MAX_MSG = 256 << 10


def server_ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CERT.configure_cert(ctx)
    return ctx


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    CA.configure_trust(ctx)
    return ctx


async def write_all(tc, msg: bytes):
    """tc.write(msg) in a goroutine of its own: its error is returned, so a
    reader that fails first (the same deadline) leaves no lost failure."""
    try:
        await tc.write(msg)
    except OSError as e:
        return e
    return None


def test_tls_through_loss(backend_name, path):
    path.set_loss(5)
    stats = {"finished": 0, "timed_out": 0, "late": [], "unexpected": [], "running": 0,
             "accepted": set(), "resets": [], "kernel_resets": 0}

    async def echo(conn, deadline):
        tc = tls.server(conn, server_ctx())
        try:
            tc.set_deadline(deadline + 2.0)
            buf = bytearray(65536)
            while True:
                n = await tc.read(buf)
                if n == 0:
                    return
                await tc.write(memoryview(buf)[:n])
        except Exception as e:
            # Clients give up at the deadline, closing or resetting mid-way
            # (a TLS error too: a handshake cut short); before it, no
            # server side fails.
            if netpoll.now() < deadline:
                stats["unexpected"].append(f"server: {e!r}, {deadline - netpoll.now():.3f} s before the deadline")
        finally:
            tc.close()
            stats["running"] -= 1

    async def serve(ln, deadline):
        while True:
            try:
                conn = await ln.accept()
            except netpoll.ClosedError:
                return
            stats["running"] += 1
            stats["accepted"].add(conn.remote_addr.port)
            netpoll.go(echo(conn, deadline))

    async def client(i, address, deadline):
        rng = random.Random(i)
        tc = None
        try:
            conn = await net.dial("tcp", address, timeout=deadline - netpoll.now())
            tc = tls.client(conn, client_ctx(), server_name="localhost")
            tc.set_deadline(deadline)
            await tc.handshake()
            for _ in range(4):
                msg = rng.randbytes(rng.randrange(1, MAX_MSG))
                writer = netpoll.go(write_all(tc, msg))
                got = await read_full(tc, len(msg))
                failed = await writer
                if failed is not None:
                    raise failed
                if got != msg:
                    stats["unexpected"].append(f"client {i}: {len(msg)} bytes came back altered")
                    return
            stats["finished"] += 1
        except TimeoutError:
            late = netpoll.now() - deadline
            if late < -0.01:
                stats["unexpected"].append(f"client {i}: timeout {-late:.3f} s before its deadline")
            else:
                stats["timed_out"] += 1
                stats["late"].append(late)
        except ConnectionResetError as e:
            port = tc.local_addr.port if tc is not None else None
            stats["resets"].append((port, f"client {i}: {e!r}"))
        except Exception as e:
            stats["unexpected"].append(f"client {i}: {e!r}")
        finally:
            if tc is not None:
                tc.close()
            stats["running"] -= 1

    async def main():
        ln = listen(path, backlog=4 * CONNS)
        deadline = netpoll.now() + SECONDS
        acceptor = netpoll.go(serve(ln, deadline))
        for i in range(CONNS):
            stats["running"] += 1
            netpoll.go(client(i, addr(path, ln), deadline))
        while stats["running"] and netpoll.now() < deadline + 2.0 + SLACK + 5.0:
            await netpoll.sleep(0.05)
        ln.close()
        await acceptor

    before = open_fds()
    run(path, backend_name, main)
    after = open_fds()
    # As in test_loss.judge_resets: a reset of a connection the server never
    # accepted is its kernel's (a handshake it dropped), not netpoll's.
    for port, what in stats["resets"]:
        if port in stats["accepted"]:
            stats["unexpected"].append(what)
        else:
            stats["kernel_resets"] += 1
    report = {k: v for k, v in stats.items() if k not in ("late", "accepted", "resets")}
    assert stats["running"] == 0, report
    assert stats["unexpected"] == [], report
    assert stats["finished"] + stats["timed_out"] + stats["kernel_resets"] == CONNS, report
    assert stats["kernel_resets"] <= 1, report
    assert stats["finished"] > 0, report
    assert max(stats["late"], default=0.0) < SLACK, report
    assert after == before


def test_rst_mid_tls_stream_fails_the_read(backend_name, path):
    """The server streams TLS records; after 256 KiB the client's ACKs draw
    a RST from the path: the client's read fails with a reset."""
    pattern = bytes(range(256)) * 64  # 16 KiB

    async def main():
        ln, c, s = await pair(path)
        tc = tls.client(c, client_ctx(), server_name="localhost")
        ts = tls.server(s, server_ctx())
        sending = [True]

        async def stream():
            ts.set_write_deadline(netpoll.now() + 10.0)
            try:
                while sending[0]:
                    await ts.write(pattern)
            except OSError:
                pass

        try:
            tc.set_deadline(netpoll.now() + 10.0)
            g = netpoll.go(stream())
            await tc.handshake()
            buf = bytearray(65536)
            got, rule = 0, None
            with pytest.raises(ConnectionResetError) as err:
                while True:
                    n = await tc.read(buf)
                    assert n > 0, f"EOF after {got} bytes instead of a reset"
                    assert bytes(buf[:n]) == (pattern * 2)[got % len(pattern):][:n], f"corrupt at byte {got}"
                    got += n
                    if rule is None and got >= 256 << 10:
                        rule = reject_from(path, "client", c)
            assert isinstance(err.value, net.OpError) and not isinstance(err.value, tls.TLSError), repr(err.value)
            assert rule is not None and path.hits(rule) > 0
            sending[0] = False
            ts.close()
            await g
        finally:
            close_all(tc, ts, ln)

    run(path, backend_name, main)


def test_tls_handshake_into_a_black_hole_times_out(backend_name, path):
    async def main():
        ln, c, s = await pair(path)
        try:
            path.black_hole()
            tc = tls.client(c, client_ctx(), server_name="localhost")
            t0 = netpoll.now()
            tc.set_deadline(t0 + 0.5)
            with pytest.raises(TimeoutError):
                await tc.handshake()
            assert netpoll.now() - t0 < 0.5 + SLACK
            tc.close()
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)
