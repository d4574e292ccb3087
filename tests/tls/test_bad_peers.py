"""Bad certificates and bad peers: each ends in a clear error that names
the cause, nothing leaks (the socktest switch sees every socket closed, and
the suite checks descriptors), and the server goes on serving."""

from __future__ import annotations

import datetime
import socket
import ssl

import pytest

import netpoll
from netpoll import net, tls
from netpoll.socktest import Switch

from tlsutil import (EXPIRED, OTHER_CA, PeerThread, client_ctx, read_all, read_full, run,
                     server_ctx)


def self_signed_ctx() -> ssl.SSLContext:
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.NamedTemporaryFile("wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
        f.flush()
        ctx.load_cert_chain(f.name)
    return ctx


class Server:
    """A TLS echo server goroutine; per-connection errors are collected."""

    def __init__(self, ctx: ssl.SSLContext, deadline: float = 3.0) -> None:
        self.ln = tls.listen("tcp", "127.0.0.1:0", ctx)
        self.errors: list[BaseException] = []
        self.served = 0
        self.deadline = deadline
        self.g = netpoll.go(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                tc = await self.ln.accept()
            except netpoll.ClosedError:
                return
            netpoll.go(self._handle(tc))

    async def _handle(self, tc: tls.TLSConn) -> None:
        with tc:
            tc.set_deadline(netpoll.now() + self.deadline)
            buf = bytearray(4096)
            try:
                while n := await tc.read(buf):
                    await tc.write(buf[:n])
                self.served += 1
            except Exception as e:
                self.errors.append(e)

    @property
    def port(self) -> int:
        return self.ln.addr.port

    async def check_still_serving(self) -> None:
        c = await tls.dial("tcp", ("127.0.0.1", self.port), client_ctx(), server_name="localhost")
        with c:
            await c.write(b"still here")
            assert await read_full(c, 10) == b"still here"
            await c.close_write()
            assert await read_all(c) == b""

    async def stop(self) -> None:
        self.ln.close()
        await self.g

    async def error(self) -> BaseException:
        for _ in range(200):
            if self.errors:
                return self.errors.pop(0)
            await netpoll.sleep(0.01)
        raise AssertionError("the server saw no error")


def scenario(backend_name, body, ctx=None):
    with Switch() as sw:
        async def main():
            srv = Server(ctx or server_ctx())
            try:
                await body(srv)
                await srv.check_still_serving()
            finally:
                await srv.stop()
        run(backend_name, main)
        assert not sw.sockets(), f"sockets left open: {sw.sockets()}"


@pytest.mark.parametrize("case", ["expired", "wrong-host", "self-signed", "unknown-ca"])
def test_bad_certificates(backend_name, case):
    expect = {"expired": ("certificate expired", "certificate has expired"),
              "wrong-host": ("hostname mismatch", "Hostname mismatch"),
              "self-signed": ("self-signed certificate", "self-signed certificate"),
              "unknown-ca": ("unknown CA", "unable to get local issuer certificate")}[case]
    bad_ctx = {"expired": lambda: server_ctx(EXPIRED), "self-signed": self_signed_ctx,
               "unknown-ca": lambda: server_ctx(OTHER_CA.issue_cert("localhost"))}.get(case)

    async def body(srv: Server):
        bad = Server(bad_ctx()) if bad_ctx else srv
        try:
            name = "wrong.example" if case == "wrong-host" else "localhost"
            with pytest.raises(tls.TLSError) as ei:
                await tls.dial("tcp", ("127.0.0.1", bad.port), client_ctx(), server_name=name)
            e = ei.value
            assert e.kind == expect[0]
            assert expect[1] in str(e) and "certificate verify failed" in str(e)
            assert isinstance(e, ssl.SSLCertVerificationError)
            # The server hears our alert: a clear error on its side too.
            se = await bad.error()
            assert isinstance(se, tls.TLSError), se
        finally:
            if bad is not srv:
                await bad.stop()

    scenario(backend_name, body)


def test_client_certificate_required(backend_name):
    async def body(srv: Server):
        c = await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(), server_name="localhost")
        with c:
            # TLS 1.3: the client learns of the refusal at its first read.
            with pytest.raises(tls.TLSError) as ei:
                await c.write(b"x")
                await c.read(bytearray(1))
            assert "certificate" in str(ei.value)
        se = await srv.error()
        assert isinstance(se, tls.TLSError) and se.kind == "certificate verify failed"
        assert "sent no certificate" in str(se)

    with Switch() as sw:
        async def main():
            srv = Server(server_ctx(require_client_cert=True))
            try:
                await body(srv)
                from tlsutil import CLIENT_CERT
                c = await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(cert=CLIENT_CERT),
                                   server_name="localhost")
                with c:
                    await c.write(b"mtls")
                    assert await read_full(c, 4) == b"mtls"
            finally:
                await srv.stop()
        run(backend_name, main)
        assert not sw.sockets()


def test_protocol_version_mismatch(backend_name):
    async def body(srv: Server):
        with pytest.raises(tls.TLSError) as ei:
            await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(version=ssl.TLSVersion.TLSv1_2),
                           server_name="localhost")
        assert ei.value.kind == "protocol version"
        se = await srv.error()
        assert isinstance(se, tls.TLSError) and se.kind == "protocol version"

    scenario(backend_name, body, server_ctx(version=ssl.TLSVersion.TLSv1_3))


def test_plaintext_client_to_tls_server(backend_name):
    async def body(srv: Server):
        conn = await net.dial("tcp", ("127.0.0.1", srv.port))
        with conn:
            await conn.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            se = await srv.error()
            assert isinstance(se, tls.TLSError) and se.kind == "not TLS"
            assert "plaintext HTTP request" in str(se)
            await read_all(conn)   # the server closed it (after an alert)

    scenario(backend_name, body)


def test_tls_client_to_plaintext_server(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        with ln:
            async def plain():
                conn = await ln.accept()
                with conn:
                    await conn.read(bytearray(4096))
                    await conn.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

            g = netpoll.go(plain())
            with pytest.raises(tls.TLSError) as ei:
                await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost")
            assert ei.value.kind == "not TLS", ei.value
            assert "does not speak TLS" in str(ei.value)
            await g

    with Switch() as sw:
        run(backend_name, main)
        assert not sw.sockets()


def test_client_stalling_mid_handshake(backend_name):
    async def body(srv: Server):
        srv.deadline = 0.3
        conn = await net.dial("tcp", ("127.0.0.1", srv.port))
        with conn:
            await conn.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
            se = await srv.error()
            assert isinstance(se, TimeoutError), se
            assert await read_all(conn) == b""   # the server gave up and closed
        srv.deadline = 3.0

    scenario(backend_name, body)


def test_peer_closing_during_handshake(backend_name):
    async def body(srv: Server):
        conn = await net.dial("tcp", ("127.0.0.1", srv.port))
        await conn.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        conn.close()
        se = await srv.error()
        assert isinstance(se, (tls.TLSError, ConnectionResetError)), se
        if isinstance(se, tls.TLSError):
            assert se.kind == "peer closed during handshake"
            assert "closed the connection during the handshake" in str(se)

    scenario(backend_name, body)


def test_server_closing_during_handshake(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        with ln:
            async def rude():
                conn = await ln.accept()
                await conn.read(bytearray(4096))   # the ClientHello
                conn.close()

            g = netpoll.go(rude())
            with pytest.raises((tls.TLSError, ConnectionResetError)) as ei:
                await tls.dial("tcp", ln.addr, client_ctx(), server_name="localhost")
            if isinstance(ei.value, tls.TLSError):
                assert ei.value.kind == "peer closed during handshake"
            await g

    run(backend_name, main)


def test_garbage_record_after_handshake(backend_name):
    async def body(srv: Server):
        c = await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(), server_name="localhost")
        with c:
            await c.write(b"ok")
            assert await read_full(c, 2) == b"ok"
            await c.net_conn.write(b"\x17\x03\x03\x00\x20" + b"\xde\xad\xbe\xef" * 8)  # forged record
            se = await srv.error()
            assert isinstance(se, tls.TLSError) and se.kind == "bad record", se
            with pytest.raises(tls.TLSError):     # its alert reaches us
                await c.read(bytearray(10))

    scenario(backend_name, body)


def test_record_too_long_is_garbage(backend_name):
    async def body(srv: Server):
        c = await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(), server_name="localhost")
        with c:
            await c.write(b"ok")
            await read_full(c, 2)
            await c.net_conn.write(b"\x17\x03\x03\xff\xff" + b"\x00" * 100)
            se = await srv.error()
            assert isinstance(se, tls.TLSError) and se.kind == "bad record", se

    scenario(backend_name, body)


def test_ragged_eof_mid_record_is_an_error(backend_name):
    async def body(srv: Server):
        c = await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(), server_name="localhost")
        with c:
            await c.write(b"ok")
            await read_full(c, 2)
            await c.net_conn.write(b"\x17\x03\x03\x00\x40" + b"\x00" * 10)  # 15 of 69 bytes
            c.net_conn.close_write()
            se = await srv.error()
            assert isinstance(se, tls.TLSError) and se.kind == "unexpected EOF", se
            assert "in the middle of a record" in str(se)
            assert isinstance(se, ssl.SSLEOFError)

    scenario(backend_name, body)


def test_eof_at_record_boundary_without_close_notify_reads_as_eof(backend_name):
    # Go's rule: a TCP FIN right after a whole record is EOF, not an error.
    async def body(srv: Server):
        c = await tls.dial("tcp", ("127.0.0.1", srv.port), client_ctx(), server_name="localhost")
        with c:
            await c.write(b"bye")
            assert await read_full(c, 3) == b"bye"
            c.net_conn.close_write()           # TCP FIN, no close_notify
            for _ in range(200):
                if srv.served:
                    break
                await netpoll.sleep(0.01)
            assert srv.served == 1 and not srv.errors

    scenario(backend_name, body)


def test_python_server_fin_without_close_notify(backend_name):
    def serve(sock: socket.socket):
        ss = server_ctx().wrap_socket(sock, server_side=True)
        ss.sendall(b"body")
        socket.socket.shutdown(ss, socket.SHUT_WR)   # under the TLS layer: no close_notify
        assert ss.recv(10) == b""                     # our close_notify
        ss.close()

    peer = PeerThread(serve)

    async def main():
        c = await tls.dial("tcp", ("127.0.0.1", peer.addr[1]), client_ctx(), server_name="localhost")
        with c:
            assert await read_all(c) == b"body"
            assert await c.read(bytearray(1)) == 0   # and again
        await peer.wait()

    run(backend_name, main)
