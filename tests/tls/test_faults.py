"""Fault injection under TLS: resets at every stage of the handshake,
ciphertext in tiny pieces (EAGAIN storms on the reader), short writes of
ciphertext (a socket hook that shrinks every send buffer), accept failures
from the socktest switch. Every operation ends with data, EOF, ClosedError,
a timeout or a clear TLS error; nothing hangs or leaks."""

from __future__ import annotations

import errno
import socket

import pytest

import netpoll
from netpoll import hooks, net, tls
from netpoll.socktest import Switch, fail

from tlsutil import client_ctx, pattern, read_all, read_full, run, server_ctx, sha

OUTCOMES = (tls.TLSError, ConnectionResetError, BrokenPipeError, netpoll.ClosedError, TimeoutError)


class Proxy:
    """Forwards between a client and a TLS server, ``chunk`` bytes per
    write with a yield between (so the far reader sees a trickle), and
    resets the client's side after ``cut`` bytes from the server."""

    def __init__(self, target, chunk: int = 65536, cut: int = -1) -> None:
        self.ln = net.listen("tcp", "127.0.0.1:0")
        self.target, self.chunk, self.cut = target, chunk, cut
        self.g = netpoll.go(self._serve())

    async def _serve(self) -> None:
        a = await self.ln.accept()
        b = await net.dial("tcp", self.target)
        try:
            up = netpoll.go(self._pump(a, b, -1))
            await self._pump(b, a, self.cut)
            await up
        finally:
            a.close()
            b.close()

    async def _pump(self, src, dst, cut: int) -> None:
        buf = bytearray(65536)
        sent = 0
        try:
            while n := await src.read(buf):
                for i in range(0, n, self.chunk):
                    piece = buf[i:min(n, i + self.chunk)]
                    if 0 <= cut <= sent + len(piece):
                        await dst.write(piece[:cut - sent])
                        dst.set_linger(0)     # close now sends RST
                        dst.close()
                        src.close()
                        return
                    await dst.write(piece)
                    sent += len(piece)
                    if self.chunk < 64:
                        await netpoll.sleep(0)
            dst.close_write()
        except OSError:
            src.close()
            dst.close()

    async def stop(self) -> None:
        self.ln.close()
        try:
            await self.g
        except OSError:
            pass


async def echo_server(ln, served: list):
    while True:
        try:
            s = await ln.accept()
        except netpoll.ClosedError:
            return
        except OSError as e:        # an injected accept failure: keep serving
            served.append(e)
            continue
        netpoll.go(_echo(s, served))


async def _echo(s, served):
    with s:
        s.set_deadline(netpoll.now() + 15)
        buf = bytearray(65536)
        try:
            while n := await s.read(buf):
                await s.write(memoryview(buf)[:n])
            await s.close_write()
            served.append("ok")
        except OSError as e:
            served.append(e)


@pytest.mark.parametrize("cut", [0, 1, 5, 60, 400, 1200, 2500, 100000])
def test_reset_during_handshake_from_server_side(backend_name, cut):
    # The proxy resets the client after `cut` bytes of the server's flight:
    # inside the first record header, inside ServerHello, inside the
    # certificate, after the handshake.
    async def main():
        served: list = []
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        srv = netpoll.go(echo_server(ln, served))
        px = Proxy(ln.addr, cut=cut)
        outcome = None
        try:
            c = await tls.dial("tcp", px.ln.addr, client_ctx(), server_name="localhost", timeout=5)
            with c:
                await c.write(b"hello")
                outcome = await read_full(c, 5)
        except OSError as e:
            assert isinstance(e, OUTCOMES), repr(e)
            outcome = e
        await px.stop()
        # the server keeps serving
        c = await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost")
        with c:
            await c.write(b"again")
            assert await read_full(c, 5) == b"again"
        ln.close()
        await srv
        return outcome

    with Switch() as sw:
        outcome = run(backend_name, main)
        assert not sw.sockets()
    if cut == 100000:
        assert outcome == b"hello"
    elif cut <= 400:   # inside the server's first flight: the handshake cannot finish
        assert isinstance(outcome, OSError)
    else:              # in the certificate or after the handshake: either
        assert outcome == b"hello" or isinstance(outcome, OSError)


def test_client_reset_mid_handshake(backend_name):
    async def main():
        served: list = []
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        srv = netpoll.go(echo_server(ln, served))
        conn = await net.dial("tcp", ln.addr)
        # A real ClientHello's first bytes, then a reset.
        await conn.write(b"\x16\x03\x01\x00\xf0\x01\x00\x00\xec\x03\x03" + b"\x00" * 40)
        conn.set_linger(0)
        conn.close()
        for _ in range(500):
            if served:
                break
            await netpoll.sleep(0.01)
        err = served.pop()
        assert isinstance(err, (ConnectionResetError, tls.TLSError)), repr(err)
        ln.close()
        await srv

    with Switch() as sw:
        run(backend_name, main)
        assert not sw.sockets()


@pytest.mark.parametrize("chunk", [1, 7])
def test_ciphertext_in_tiny_pieces(backend_name, chunk):
    # Each record reaches the reader a few bytes at a time: many EAGAINs,
    # record headers split across reads, the handshake in slices.
    data = pattern(6_000 if chunk == 1 else 40_000, 9)

    async def main():
        served: list = []
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        srv = netpoll.go(echo_server(ln, served))
        px = Proxy(ln.addr, chunk=chunk)
        c = await tls.dial("tcp", px.ln.addr, client_ctx(), server_name="localhost")
        with c:
            w = netpoll.go(c.write(data))
            got = await read_full(c, len(data))
            await w
            await c.close_write()
            assert await read_all(c) == b""
        await px.stop()
        ln.close()
        await srv
        return got, served

    got, served = run(backend_name, main)
    assert sha(got) == sha(data)
    assert served == ["ok"]


def test_short_writes_of_ciphertext(backend_name):
    # A socket hook shrinks every new socket's buffers: each ciphertext
    # write(2) is partial and the FD layer parks and loops.
    data = pattern(2 << 20, 10)
    real = hooks.socket

    def small_socket(family, type, proto):
        s = real(family, type, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return s

    async def main():
        served: list = []
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        srv = netpoll.go(echo_server(ln, served))
        c = await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost")
        with c:
            w = netpoll.go(c.write(data))
            got = await read_full(c, len(data))
            await w
        ln.close()
        await srv
        return got

    hooks.socket = small_socket
    try:
        with Switch() as sw:
            assert sha(run(backend_name, main)) == sha(data)
            assert not sw.sockets()
    finally:
        hooks.socket = real


def test_accept_failures_then_serving(backend_name):
    async def main():
        served: list = []
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        srv = netpoll.go(echo_server(ln, served))
        # The conn the failed accept took is closed by the switch: its
        # client hears the close mid-handshake.
        with pytest.raises((tls.TLSError, ConnectionResetError)) as ei:
            await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost", timeout=5)
        if isinstance(ei.value, tls.TLSError):
            assert ei.value.kind == "peer closed during handshake"
        for i in range(3):
            c = await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost", timeout=5)
            with c:
                await c.write(b"n%d" % i)
                assert await read_full(c, 2) == b"n%d" % i
        ln.close()
        await srv
        return served

    with Switch() as sw:
        calls = {"n": 0}

        def accept_filter(st):
            calls["n"] += 1
            if calls["n"] == 1:
                def after(st):
                    fail(errno.EMFILE)   # after accept(2): the switch closes the new socket
                return after
            return None

        sw.set("accept", accept_filter)
        served = run(backend_name, main)
        assert not sw.sockets()
    errs = [e for e in served if isinstance(e, OSError)]
    assert errs and errs[0].errno == errno.EMFILE


def test_write_timeout_mid_record_breaks_only_writes(backend_name):
    # A write deadline that fires with half a record on the wire: later
    # writes fail with that error; reads still work.
    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        with ln:
            async def accept():
                s = await ln.accept()
                await s.handshake()
                return s

            g = netpoll.go(accept())
            c = await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost")
            s = await g
            with c, s:
                c.set_write_deadline(netpoll.now() + 0.1)
                with pytest.raises(TimeoutError):
                    await c.write(b"z" * (32 << 20))
                with pytest.raises(TimeoutError):
                    await c.writev([b"a", b"b"])
                await s.write(b"still readable")
                assert await read_full(c, 14) == b"still readable"

    run(backend_name, main)
