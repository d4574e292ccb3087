"""netpoll.tls against Python's blocking ssl sockets (OpenSSL driven by
CPython's _ssl on a blocking socket, in a thread): both directions, TLS 1.2
and 1.3, ALPN, SNI, client certificates, bulk data, close_notify, session
resumption."""

from __future__ import annotations

import select
import socket
import ssl
import time

import pytest

import netpoll
from netpoll import tls

from tlsutil import (CLIENT_CERT, WAIT, PeerThread, client_ctx, pattern, read_all, read_full,
                     run, server_ctx, sha)

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def python_echo_server(ctx: ssl.SSLContext, *, close_notify: bool = True, seen: dict = None):
    def serve(sock: socket.socket):
        with ctx.wrap_socket(sock, server_side=True) as ss:
            if seen is not None:
                seen["version"] = ss.version()
                seen["alpn"] = ss.selected_alpn_protocol()
                seen["peer"] = ss.getpeercert()
            while True:
                d = ss.recv(65536)
                if not d:
                    break
                ss.sendall(d)
            if close_notify:
                ss.unwrap()
    return serve


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_client_against_python_server(backend_name, version):
    seen: dict = {}
    sctx = server_ctx(version=version, alpn=["h2", "http/1.1"])
    names = []
    sctx.sni_callback = lambda obj, name, c: names.append(name)
    peer = PeerThread(python_echo_server(sctx, seen=seen))

    async def main():
        tc = await tls.dial("tcp", f"localhost:{peer.addr[1]}", client_ctx(alpn=["h2"]))
        st = tc.connection_state()
        assert st.handshake_complete
        assert st.version == ("TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
        assert st.negotiated_protocol == "h2"
        assert st.server_name == "localhost"
        assert ("DNS", "localhost") in st.peer_certificate["subjectAltName"]
        assert st.peer_certificate_der and st.cipher
        for msg in (b"x", b"hello" * 1000, pattern(100_000)):
            await tc.write(msg)
            assert await read_full(tc, len(msg)) == msg
        await tc.close_write()          # our close_notify: the server's recv sees EOF
        assert await read_all(tc) == b""  # its close_notify reads as EOF
        tc.close()
        await peer.wait()

    run(backend_name, main)
    assert seen["version"] == ("TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    assert seen["alpn"] == "h2"
    assert names == ["localhost"]


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_server_against_python_client(backend_name, version):
    sctx = server_ctx(alpn=["h2", "http/1.1"], require_client_cert=True)
    ln_holder = {}

    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", sctx)
        ln_holder["addr"] = ln.addr

        def client(sock: socket.socket):
            cctx = client_ctx(version=version, alpn=["http/1.1"], cert=CLIENT_CERT)
            with cctx.wrap_socket(sock, server_hostname="localhost") as cs:
                v = cs.version()
                cs.sendall(b"ping")
                got = cs.recv(4)
                cs.sendall(b"bye")
                cs.unwrap()   # close_notify, and waits for the server's
                return got, v

        peer = PeerThread(client, listen=False, addr=("127.0.0.1", ln.addr.port))
        with ln:
            tc = await ln.accept()
            await tc.handshake()
            st = tc.connection_state()
            assert st.server_name == "localhost"
            assert st.negotiated_protocol == "http/1.1"
            assert ("DNS", "client.example") in st.peer_certificate["subjectAltName"]
            assert await read_full(tc, 4) == b"ping"
            await tc.write(b"pong")
            assert await read_all(tc) == b"bye"   # then its close_notify: EOF
            await tc.close_write()                 # answer it, so its unwrap returns
            tc.close()
            got, v = await peer.wait()
        assert got == b"pong"
        assert v == ("TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")

    run(backend_name, main)


def test_bulk_16mib_each_way_python_peer(backend_name):
    data_up = pattern(16 << 20, 1)
    data_down = pattern(16 << 20, 2)
    sctx = server_ctx()

    def serve(sock: socket.socket):
        # Both ways at once from one thread, the socket non-blocking: one
        # SSLSocket must not be read and written from two threads (OpenSSL's
        # rule for an SSL object; Python before 3.13 does not lock it, and
        # the TLS state is corrupted now and then).
        with sctx.wrap_socket(sock, server_side=True) as ss:
            ss.setblocking(False)
            got = bytearray()
            out = memoryview(data_down)
            eof = False
            end = time.monotonic() + 4 * WAIT
            while not eof or out:
                progress = False
                if out:
                    try:
                        n = ss.send(out[:65536])
                        out = out[n:]
                        progress = True
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                if not eof:
                    try:
                        d = ss.recv(65536)
                        eof = not d
                        got += d
                        progress = True
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                if not progress and not ss.pending():
                    if time.monotonic() > end:
                        raise TimeoutError(f"peer: {len(got)} bytes in, {len(out)} still to send")
                    select.select([ss], [ss] if out else [], [], 1.0)
            return sha(bytes(got))

    peer = PeerThread(serve)

    async def main():
        tc = await tls.dial("tcp", ("127.0.0.1", peer.addr[1]), client_ctx(), server_name="localhost")

        async def writer():
            await tc.write(data_up)
            await tc.close_write()

        try:
            g = netpoll.go(writer())
            down = await read_full(tc, len(data_down))
            await g
        finally:
            tc.close()
        return sha(down), await peer.wait()

    down, up = run(backend_name, main)
    assert down == sha(data_down)
    assert up == sha(data_up)


def test_session_resumption_python_server(backend_name):
    sctx = server_ctx()
    peer_results = []

    def serve_twice(sock: socket.socket):
        with sctx.wrap_socket(sock, server_side=True) as ss:
            ss.sendall(b"hi")
            ss.recv(1)
            return ss.session_reused

    async def main():
        cctx = client_ctx()
        cctx.netpoll_session_cache = tls.ClientSessionCache(4)
        resumed = []
        for _ in range(2):
            peer = PeerThread(serve_twice)
            tc = await tls.dial("tcp", ("127.0.0.1", peer.addr[1]), cctx, server_name="localhost")
            assert await read_full(tc, 2) == b"hi"   # the TLS 1.3 ticket comes before the data
            await tc.write(b"!")
            resumed.append(tc.connection_state().did_resume)
            tc.close()
            peer_results.append(await peer.wait())
        assert len(cctx.netpoll_session_cache) == 1
        return resumed

    assert run(backend_name, main) == [False, True]
    assert peer_results == [False, True]


def test_pem_ca_unknown_to_client_fails_clearly(backend_name):
    peer = PeerThread(python_echo_server(server_ctx()))

    async def main():
        import trustme
        with pytest.raises(tls.TLSError) as ei:
            await tls.dial("tcp", ("127.0.0.1", peer.addr[1]), client_ctx(ca=trustme.CA()),
                           server_name="localhost")
        assert ei.value.kind == "unknown CA"
        assert isinstance(ei.value, ssl.SSLCertVerificationError)
        assert "certificate verify failed" in str(ei.value)
        with pytest.raises(Exception):
            await peer.wait()

    run(backend_name, main)
