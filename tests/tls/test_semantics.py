"""TLSConn semantics between two netpoll conns: full duplex, serialised
readers, deadlines through the handshake and the records, permanent write
timeouts, close waking everything, close_write, the EOF rule."""

from __future__ import annotations

import ssl

import pytest

import netpoll
from netpoll import net, tls

from tlsutil import client_ctx, pattern, read_all, read_full, run, server_ctx, sha, tls_pair


def test_full_duplex_16mib_each_way(backend_name):
    up, down = pattern(16 << 20, 3), pattern(16 << 20, 4)

    async def main():
        ln, c, s = await tls_pair()
        with ln:
            async def send(conn, data):
                await conn.write(data)
                await conn.close_write()

            g1 = netpoll.go(send(c, up))
            g2 = netpoll.go(send(s, down))
            got_s = netpoll.go(read_all(s))
            got_c = await read_all(c)
            got_s = await got_s
            await g1
            await g2
            c.close()
            s.close()
        return sha(got_c), sha(got_s)

    assert run(backend_name, main) == (sha(down), sha(up))


def test_two_readers_serialise_and_both_get_data(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            bufs = [bytearray(10), bytearray(10)]
            g1 = netpoll.go(s.read(bufs[0]))
            g2 = netpoll.go(s.read(bufs[1]))
            await netpoll.sleep(0.01)
            await c.write(b"a" * 10)
            n1 = await g1
            await c.write(b"b" * 10)
            n2 = await g2
            return bytes(bufs[0][:n1]), bytes(bufs[1][:n2])

    assert run(backend_name, main) == (b"a" * 10, b"b" * 10)


def test_implicit_handshake_on_first_read_and_write(backend_name):
    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        with ln:
            g = netpoll.go(ln.accept())
            conn = await net.dial("tcp", ln.addr)
            c = tls.client(conn, client_ctx(), server_name="localhost")
            s = await g
            assert not c.connection_state().handshake_complete
            echo = netpoll.go(s.read(bytearray(5)))
            await c.write(b"hello")          # runs the client handshake
            assert await echo == 5           # the server's read ran its handshake
            assert c.connection_state().handshake_complete
            assert s.connection_state().server_name == "localhost"
            c.close()
            s.close()

    run(backend_name, main)


def test_handshake_bounded_by_deadline_against_a_silent_server(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")   # accepts, never answers
        with ln:
            g = netpoll.go(ln.accept())
            conn = await net.dial("tcp", ln.addr)
            peer = await g
            c = tls.client(conn, client_ctx(), server_name="localhost")
            c.set_deadline(netpoll.now() + 0.2)
            with pytest.raises(TimeoutError):
                await c.handshake()
            assert c.closed
            with pytest.raises(TimeoutError):   # the failure is kept
                await c.read(bytearray(1))
            peer.close()

    run(backend_name, main)


def test_dial_timeout_covers_the_handshake(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        with ln:
            g = netpoll.go(ln.accept())
            t0 = netpoll.now()
            with pytest.raises(TimeoutError):
                await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost", timeout=0.2)
            assert netpoll.now() - t0 < 5
            (await g).close()

    run(backend_name, main)


def test_read_timeout_is_not_sticky(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            c.set_read_deadline(netpoll.now() + 0.05)
            with pytest.raises(TimeoutError):
                await c.read(bytearray(10))
            c.set_read_deadline(None)
            await s.write(b"later")
            assert await read_full(c, 5) == b"later"

    run(backend_name, main)


def test_write_timeout_is_permanent(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            c.set_write_deadline(netpoll.now() + 0.1)
            big = b"x" * (64 << 20)       # more than the socket buffers hold; nobody reads
            with pytest.raises(TimeoutError) as first:
                await c.write(big)
            c.set_write_deadline(None)
            with pytest.raises(TimeoutError) as second:
                await c.write(b"small")
            assert second.value is first.value

    run(backend_name, main)


def test_close_from_a_third_goroutine_wakes_reader_and_writer(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, s:
            r = netpoll.go(c.read(bytearray(10)))
            w = netpoll.go(c.write(b"y" * (64 << 20)))   # parks: nobody reads
            await netpoll.sleep(0.1)

            async def closer():
                c.close()

            await netpoll.go(closer())
            for g in (r, w):
                with pytest.raises(netpoll.ClosedError):
                    await g
            with pytest.raises(netpoll.ClosedError):
                await c.read(bytearray(1))

    run(backend_name, main)


def test_close_sends_close_notify_when_idle(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, s:
            await s.write(b"!")       # the client reads all the server sent (its
            await read_full(c, 1)     # TLS 1.3 tickets too): no reset at close
            await c.write(b"last")
            c.close()
            assert await read_all(s) == b"last"    # close_notify: a clean EOF
            assert await s.read(bytearray(1)) == 0

    run(backend_name, main)


def test_close_write_then_peer_still_writes(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            await c.close_write()
            await c.close_write()               # once is enough; twice is a no-op
            assert await s.read(bytearray(1)) == 0
            with pytest.raises(tls.TLSError, match="protocol is shutdown"):
                await c.write(b"no")
            await s.write(b"after")             # the other direction still works
            assert await read_full(c, 5) == b"after"

    run(backend_name, main)


def test_close_write_keeps_buffered_plaintext(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            await s.write(b"0123456789")
            await s.write(b"abc")
            assert await read_full(c, 3) == b"012"   # the rest sits decrypted in OpenSSL
            await c.close_write()
            assert await read_full(c, 10) == b"3456789abc"

    run(backend_name, main)


def test_close_write_before_handshake_is_an_error(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        with ln:
            g = netpoll.go(ln.accept())
            conn = await net.dial("tcp", ln.addr)
            c = tls.client(conn, client_ctx(), server_name="localhost")
            with pytest.raises(tls.TLSError, match="before the handshake"):
                await c.close_write()
            c.close()
            (await g).close()

    run(backend_name, main)


def test_writev(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            assert await c.writev([b"ab", bytearray(b"cd"), memoryview(b"ef")]) == 6
            big = [pattern(100_000, 5), b"", pattern(70_000, 6)]
            assert await c.writev(big) == 170_000
            assert await read_full(s, 6 + 170_000) == b"abcdef" + b"".join(big)

    run(backend_name, main)


def test_write_nbytes_writes_a_prefix_and_bad_counts_fail_at_the_call(backend_name):
    """write(buf, n) as a plain conn's: the first n bytes; a bad n is a
    clear error before anything is sent, and the conn stays usable."""
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            buf = bytearray(pattern(100_000, 7))
            assert await c.write(buf, 70_000) == 70_000
            assert await c.write(buf, 0) == 0
            assert await c.write(b"tail", nbytes=None) == 4
            for bad, cls, msg in [(-1, ValueError, "must not be negative"),
                                  (100_001, ValueError, "larger than the buffer"),
                                  (1.0, TypeError, "must be an int or None, not float"),
                                  (True, TypeError, "must be an int or None, not bool")]:
                with pytest.raises(cls, match=msg):
                    await c.write(buf, bad)
            assert await read_full(s, 70_004) == bytes(buf[:70_000]) + b"tail"

    run(backend_name, main)


def test_deadlines_and_addresses_pass_through(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            assert c.remote_addr == s.local_addr == c.net_conn.remote_addr
            assert c.local_addr == s.remote_addr
            s.set_deadline(netpoll.now() - 1)          # past: fails at once
            with pytest.raises(TimeoutError):
                await s.read(bytearray(1))
            s.set_deadline(None)

    run(backend_name, main)


def test_client_needs_a_server_name_when_verifying(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        with ln:
            g = netpoll.go(ln.accept())
            conn = await net.dial("tcp", ln.addr)
            with conn:
                with pytest.raises(ValueError, match="server_name"):
                    tls.client(conn, client_ctx())
                with pytest.raises(TypeError, match="SSLContext"):
                    tls.client(conn, object())
            (await g).close()

    run(backend_name, main)


def test_dial_takes_server_name_from_address(backend_name):
    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        with ln:
            async def accept():
                s = await ln.accept()
                await s.handshake()
                return s

            g = netpoll.go(accept())
            c = await tls.dial("tcp", f"localhost:{ln.addr.port}", client_ctx())
            s = await g
            assert c.connection_state().server_name == "localhost"
            assert s.connection_state().server_name == "localhost"
            c.close()
            s.close()

    run(backend_name, main)


def test_dial_default_context_verifies(backend_name):
    # ssl_ctx=None is ssl.create_default_context(): the system store does
    # not know this test's CA, so the handshake must fail verification.
    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        with ln:
            async def serve():
                s = await ln.accept()
                with s:
                    with pytest.raises(tls.TLSError):
                        await s.handshake()

            g = netpoll.go(serve())
            with pytest.raises(ssl.SSLCertVerificationError):
                await tls.dial("tcp", f"localhost:{ln.addr.port}")
            await g

    run(backend_name, main)


def test_session_resumption_between_netpoll_peers(backend_name):
    async def main():
        sctx = server_ctx()
        cctx = client_ctx()
        cctx.netpoll_session_cache = tls.ClientSessionCache()
        out = []
        for _ in range(3):
            ln, c, s = await tls_pair(sctx, cctx)
            with ln, c, s:
                await s.write(b"x")
                await read_full(c, 1)
                out.append((c.connection_state().did_resume, s.connection_state().did_resume))
        return out

    assert run(backend_name, main) == [(False, False), (True, True), (True, True)]


def test_session_cache_bounds():
    cache = tls.ClientSessionCache(2)
    for k in "abc":
        cache.put(k, object())
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") is not None
    with pytest.raises(ValueError):
        tls.ClientSessionCache(0)


def test_wait_readable_sees_buffered_plaintext(backend_name):
    async def main():
        ln, c, s = await tls_pair()
        with ln, c, s:
            await s.write(b"0123456789")
            await c.wait_readable()
            assert await read_full(c, 4) == b"0123"
            # The rest is plaintext inside OpenSSL, not on the socket: a
            # wait on the socket would never end; this one returns at once.
            c.set_read_deadline(netpoll.now() + 5)
            await c.wait_readable()
            assert await read_full(c, 6) == b"456789"
            w = netpoll.go(c.wait_readable())
            await netpoll.sleep(0.05)
            await s.write(b"x")
            await w
            assert await read_full(c, 1) == b"x"

    run(backend_name, main)


def test_close_with_a_write_in_flight_skips_close_notify(backend_name):
    # Go's rule: close() during a write breaks the conn at once; the peer
    # never reads a clean EOF, since the alert would follow half a record.
    async def main():
        ln, c, s = await tls_pair()
        with ln, s:
            w = netpoll.go(c.write(b"q" * (32 << 20)))   # parks: nobody reads yet
            await netpoll.sleep(0.1)
            c.close()
            with pytest.raises(netpoll.ClosedError):
                await w
            s.set_read_deadline(netpoll.now() + 10)
            with pytest.raises((tls.TLSError, ConnectionResetError)) as ei:
                await read_all(s)
            if isinstance(ei.value, tls.TLSError):
                assert ei.value.kind in ("unexpected EOF", "bad record")

    run(backend_name, main)


def test_concurrent_first_read_and_write_share_one_handshake(backend_name):
    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
        with ln:
            async def echo_once():
                s = await ln.accept()
                with s:
                    await s.write(await read_full(s, 4))
                    assert await s.read(bytearray(1)) == 0

            srv = netpoll.go(echo_once())
            conn = await net.dial("tcp", ln.addr)
            c = tls.client(conn, client_ctx(), server_name="localhost")
            with c:
                r = netpoll.go(read_full(c, 4))    # both start the handshake ...
                w = netpoll.go(c.write(b"ping"))   # ... which runs once
                assert await w == 4
                assert await r == b"ping"
                assert c.connection_state().handshake_complete
                await c.close_write()
            await srv

    run(backend_name, main)
