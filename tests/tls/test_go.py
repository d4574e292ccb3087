"""netpoll.tls against Go's crypto/tls (tests/tls/go/peer.go), when `go` is
on PATH: TLS 1.2 and 1.3, ALPN, SNI, client certificates, session
resumption (Go's LRU client cache against OpenSSL's tickets, and ours
against Go's), 16 MiB each way, close_notify both directions."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading

import pytest

import netpoll
from netpoll import tls

from tlsutil import (CLIENT_CERT, WAIT, client_ctx, kill, pem_files, read_all, read_full, run,
                     server_ctx, tmpdir)

HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {"tls1.2": ("1.2", "TLSv1.2"), "tls1.3": ("1.3", "TLSv1.3")}


@pytest.fixture(scope="module")
def go_peer():
    go = shutil.which("go")
    if not go:
        pytest.skip("go is not on PATH (apt-get install golang-go): the crypto/tls interop tests need it")
    with tmpdir() as tmp:
        exe = os.path.join(tmp, "peer")
        env = dict(os.environ, GO111MODULE="off", GOFLAGS="", CGO_ENABLED="0")
        if not env.get("GOCACHE") and not os.access(os.path.expanduser("~"), os.W_OK):
            env["GOCACHE"] = os.path.join(tmp, "gocache")   # no writable home: a throwaway cache
        r = subprocess.run([go, "build", "-o", exe, os.path.join(HERE, "go", "peer.go")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        cert, key, ca = pem_files(tmp)
        ccert, ckey = os.path.join(tmp, "client.pem"), os.path.join(tmp, "client-key.pem")
        CLIENT_CERT.private_key_and_cert_chain_pem.write_to_path(ccert)
        CLIENT_CERT.private_key_pem.write_to_path(ckey)
        yield {"exe": exe, "cert": cert, "key": key, "ca": ca, "ccert": ccert, "ckey": ckey}


class GoProc:
    def __init__(self, args: list[str]) -> None:
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.port = None
        if "-mode=server" in args:
            first = self.p.stdout.readline()
            self.lines.append(first)
            assert first.startswith("LISTEN"), first + self.p.stdout.read()
            self.port = int(first.split()[1])
        self._t = threading.Thread(target=lambda: self.lines.extend(self.p.stdout), daemon=True)
        self._t.start()

    async def finish(self) -> list[str]:
        rc = await netpoll.to_thread(self.p.wait, WAIT * 3)
        await netpoll.to_thread(self._t.join, WAIT)
        assert rc == 0, "".join(self.lines)
        return [ln.strip() for ln in self.lines]

    def stop(self) -> None:
        # The pump thread reads stdout until the process is gone; close the
        # pipe only after it has finished.
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(WAIT)
        self._t.join(WAIT)
        kill(self.p)


def states(lines: list[str]) -> list[dict]:
    return [dict(kv.split("=", 1) for kv in ln.split()[1:]) for ln in lines if ln.startswith("STATE")]


def go_pattern(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


@pytest.mark.parametrize("ver", list(VERSIONS))
def test_client_against_go_server(backend_name, go_peer, ver):
    gov, name = VERSIONS[ver]
    g = GoProc([go_peer["exe"], "-mode=server", f"-max={gov}", "-alpn=h2,http/1.1", "-clientauth",
                "-n=2", f"-cert={go_peer['cert']}", f"-key={go_peer['key']}", f"-ca={go_peer['ca']}"])

    async def main():
        cctx = client_ctx(alpn=["h2"], cert=CLIENT_CERT)
        cctx.netpoll_session_cache = tls.ClientSessionCache()
        resumed = []
        for i in range(2):
            c = await tls.dial("tcp", f"localhost:{g.port}", cctx)
            with c:
                st = c.connection_state()
                assert st.version == name and st.negotiated_protocol == "h2"
                msg = b"hello go %d" % i
                await c.write(msg)
                assert await read_full(c, len(msg)) == msg
                await c.close_write()               # Go's Read sees io.EOF ...
                assert await read_all(c) == b""     # ... and its CloseWrite reaches us
                resumed.append(c.connection_state().did_resume)
        return resumed, await g.finish()

    try:
        resumed, lines = run(backend_name, main)
    finally:
        g.stop()
    assert resumed == [False, True]
    got = states(lines)
    assert [s["resumed"] for s in got] == ["false", "true"]
    for s in got:
        assert s["version"] == name and s["alpn"] == "h2" and s["sni"] == "localhost"
    assert got[0]["peer"] == "client.example"
    assert lines.count("EOF") == 2


@pytest.mark.parametrize("ver", list(VERSIONS))
def test_server_against_go_client(backend_name, go_peer, ver):
    gov, name = VERSIONS[ver]

    async def main():
        ln = tls.listen("tcp", "127.0.0.1:0", server_ctx(alpn=["http/1.1"], require_client_cert=True))
        with ln:
            g = GoProc([go_peer["exe"], "-mode=client", f"-addr=127.0.0.1:{ln.addr.port}", f"-max={gov}",
                        "-alpn=http/1.1", "-n=2", f"-ca={go_peer['ca']}", f"-cert={go_peer['ccert']}",
                        f"-key={go_peer['ckey']}"])
            try:
                seen = []
                for _ in range(2):
                    s = await ln.accept()
                    with s:
                        buf = bytearray(4096)
                        while n := await s.read(buf):
                            await s.write(buf[:n])
                        await s.close_write()       # Go's io.Copy ends on our close_notify
                        seen.append(s.connection_state())
                return seen, await g.finish()
            finally:
                g.stop()

    seen, lines = run(backend_name, main)
    for st in seen:
        assert st.version == name and st.negotiated_protocol == "http/1.1" and st.server_name == "localhost"
        assert ("DNS", "client.example") in st.peer_certificate["subjectAltName"]
    assert [st.did_resume for st in seen] == [False, True]
    assert [s["resumed"] for s in states(lines)] == ["false", "true"]
    assert "REPLY ping 0" in lines and "REPLY ping 1" in lines


def test_16mib_each_way_with_go_server(backend_name, go_peer):
    size = 16 << 20
    g = GoProc([go_peer["exe"], "-mode=server", f"-bulk={size}", f"-cert={go_peer['cert']}",
                f"-key={go_peer['key']}"])
    data = go_pattern(size)

    async def main():
        c = await tls.dial("tcp", f"localhost:{g.port}", client_ctx())
        with c:
            async def send():
                await c.write(data)
                await c.close_write()

            w = netpoll.go(send())
            got = await read_all(c)
            await w
        return got, await g.finish()

    try:
        got, lines = run(backend_name, main)
    finally:
        g.stop()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest() and len(got) == size
    assert f"GOT {size} {hashlib.sha256(data).hexdigest()}" in lines
