"""Helpers for the TLS tests: certificates made at test time (trustme),
contexts, connected TLS pairs, peers written by others (Python's blocking
ssl in a thread, openssl s_server/s_client, Go's crypto/tls)."""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Optional

import pytest

import netpoll
from netpoll import tls

trustme = pytest.importorskip("trustme", reason="the TLS tests make their certificates with trustme (pip install trustme)")

CA = trustme.CA()
CERT = CA.issue_cert("localhost", "127.0.0.1", "::1")
# A second authority nobody trusts, and a certificate that expired.
OTHER_CA = trustme.CA()
EXPIRED = CA.issue_cert("localhost", "127.0.0.1",
                        not_after=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1))
CLIENT_CERT = CA.issue_cert("client.example")

WAIT = 10.0  # generous bound for a peer thread or process


def server_ctx(cert: Any = CERT, *, version: Optional[ssl.TLSVersion] = None, alpn=None,
               require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        CA.configure_trust(ctx)
    return ctx


def client_ctx(*, ca: Any = CA, version: Optional[ssl.TLSVersion] = None, alpn=None,
               cert: Any = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def pem_files(tmp: str, cert: Any = CERT) -> tuple[str, str, str]:
    """(cert chain, key, CA) as files, for openssl and Go."""
    c, k, a = (os.path.join(tmp, n) for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(c)
    cert.private_key_pem.write_to_path(k)
    CA.cert_pem.write_to_path(a)
    return c, k, a


def run(backend_name: str, main: Callable[..., Any], *args: Any) -> Any:
    return netpoll.run(main(*args), backend=backend_name)


def pattern(n: int, seed: int = 0) -> bytes:
    """n bytes that are not all alike, so a lost or reordered chunk shows."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


async def read_full(conn: Any, n: int) -> bytes:
    out = bytearray()
    buf = bytearray(65536)
    while len(out) < n:
        m = await conn.read(memoryview(buf)[: min(len(buf), n - len(out))])
        if m == 0:
            raise AssertionError(f"EOF after {len(out)} of {n} bytes")
        out += buf[:m]
    return bytes(out)


async def read_all(conn: Any) -> bytes:
    out = bytearray()
    buf = bytearray(65536)
    while True:
        m = await conn.read(buf)
        if m == 0:
            return bytes(out)
        out += buf[:m]


async def tls_pair(sctx: Optional[ssl.SSLContext] = None, cctx: Optional[ssl.SSLContext] = None,
                   server_name: str = "localhost"):
    """(listener, client TLSConn, server TLSConn), handshaken."""
    ln = tls.listen("tcp", "127.0.0.1:0", sctx or server_ctx())
    try:
        async def accept():
            s = await ln.accept()
            await s.handshake()
            return s

        g = netpoll.go(accept())
        c = await tls.dial("tcp", ln.addr, cctx or client_ctx(), server_name=server_name)
        s = await g
    except BaseException:
        ln.close()
        raise
    return ln, c, s


class PeerThread:
    """A blocking peer in a thread: ``fn(sock)`` runs on an accepted socket
    (server) or a connected one (client); its result or exception is kept.
    The socket is closed when fn returns."""

    def __init__(self, fn: Callable[[socket.socket], Any], *, listen: bool = True,
                 addr: Any = None) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.lsock: Optional[socket.socket] = None
        if listen:
            self.lsock = socket.socket()
            self.lsock.bind(("127.0.0.1", 0))
            self.lsock.listen(8)
            self.addr = self.lsock.getsockname()
        else:
            self.addr = addr
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            if self.lsock is not None:
                self.lsock.settimeout(WAIT)
                sock, _ = self.lsock.accept()
            else:
                sock = socket.create_connection(self.addr, timeout=WAIT)
            sock.settimeout(WAIT)
            with sock:
                self.result = self.fn(sock)
        except BaseException as e:  # handed to join()
            self.error = e
        finally:
            if self.lsock is not None:
                self.lsock.close()

    async def wait(self) -> Any:
        """Wait for the thread from a goroutine (the runtime goes on)."""
        await netpoll.to_thread(self.thread.join, WAIT)
        assert not self.thread.is_alive(), "peer thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def have(tool: str) -> Optional[str]:
    return shutil.which(tool)


def need_openssl() -> str:
    path = have("openssl")
    if not path:
        pytest.skip("openssl not on PATH (apt-get install openssl)")
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tmpdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="netpoll-tls-")


def kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(WAIT)
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            f.close()


def readline(proc: subprocess.Popen, timeout: float) -> str:
    """The first line a started program prints on stdout, waiting at most
    ``timeout`` seconds ("" if it printed none)."""
    import select

    fd = proc.stdout.fileno()
    buf = b""
    end = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")
