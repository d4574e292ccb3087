"""netpoll.tls against Debian's openssl s_server and s_client: TLS 1.2 and
1.3, ALPN, SNI, client certificates, key updates, renegotiation refused,
session resumption, 16 MiB each way, close_notify both directions."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading

import pytest

import netpoll
from netpoll import tls

from tlsutil import (CLIENT_CERT, WAIT, client_ctx, kill, need_openssl, pattern, pem_files, read_all,
                     read_full, run, server_ctx, sha, tmpdir)

VERSIONS = {"tls1.2": ("-tls1_2", "TLSv1.2", ssl.TLSVersion.TLSv1_2),
            "tls1.3": ("-tls1_3", "TLSv1.3", ssl.TLSVersion.TLSv1_3)}


class SServer:
    """openssl s_server in its default mode: stdin goes to the client, what
    the client sends comes out on stdout with the server's log; one-letter
    lines on stdin are commands (K: key update, r: renegotiate)."""

    def __init__(self, tmp: str, *args: str) -> None:
        cert, key, ca = pem_files(tmp)
        self.p = subprocess.Popen(
            [need_openssl(), "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key,
             "-CAfile", ca, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        while True:
            line = self.p.stdout.readline().decode(errors="replace")
            if not line:
                raise AssertionError("s_server ended: " + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("ACCEPT"):
                self.port = int(line.rsplit(":", 1)[1])
                break
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        for raw in self.p.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def send(self, text: str) -> None:
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def output(self) -> str:
        return "".join(self.lines)

    async def wait_for(self, text: str) -> None:
        for _ in range(int(WAIT / 0.01)):
            if text in self.output():
                return
            await netpoll.sleep(0.01)
        raise AssertionError(f"s_server never printed {text!r}:\n{self.output()}")

    def stop(self) -> None:
        # The pump thread reads stdout until the process is gone; close the
        # pipe only after it has finished.
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(WAIT)
        self._t.join(WAIT)
        kill(self.p)


@pytest.mark.parametrize("ver", list(VERSIONS))
def test_client_against_s_server(backend_name, ver):
    flag, name, _ = VERSIONS[ver]
    with tmpdir() as tmp:
        srv = SServer(tmp, flag, "-alpn", "http/1.1", "-naccept", "1", "-Verify", "1")

        async def main():
            cctx = client_ctx(alpn=["h2", "http/1.1"], cert=CLIENT_CERT)
            c = await tls.dial("tcp", f"localhost:{srv.port}", cctx)
            with c:
                st = c.connection_state()
                assert st.version == name and st.negotiated_protocol == "http/1.1"
                await c.write(b"hello from netpoll\n")
                await srv.wait_for("hello from netpoll")
                srv.send("hello from s_server\n")
                assert await read_full(c, 20) == b"hello from s_server\n"
                await c.close_write()                 # s_server reads close_notify ...
                assert await read_all(c) == b""       # ... and answers with its own
                await srv.wait_for("DONE")
            out = srv.output()
            assert "depth=0" in out and "verify return:1" in out   # it verified our certificate
            assert "verify error" not in out
        try:
            run(backend_name, main)
        finally:
            srv.stop()


def test_key_update_requested_by_s_server(backend_name):
    with tmpdir() as tmp:
        srv = SServer(tmp, "-tls1_3", "-naccept", "1", "-msg")

        async def main():
            c = await tls.dial("tcp", f"localhost:{srv.port}", client_ctx())
            with c:
                await c.write(b"one\n")
                await srv.wait_for("one")
                srv.send("K\n")                 # KeyUpdate, update_requested
                await srv.wait_for("KeyUpdate")
                srv.send("data\n")              # under the new keys
                assert await read_full(c, 5) == b"data\n"
                await c.write(b"two\n")         # our reply went first: it decrypts this
                await srv.wait_for("two")
                await c.close_write()
                assert await read_all(c) == b""
        try:
            run(backend_name, main)
        finally:
            srv.stop()
        out = srv.output()
        assert "ERROR" not in out
        # -msg logs its KeyUpdate (>>>) and ours in reply (<<<).
        updates = [ln for ln in out.splitlines() if "KeyUpdate" in ln]
        assert any(ln.startswith(">>>") for ln in updates) and any(ln.startswith("<<<") for ln in updates), updates


def test_renegotiation_is_refused(backend_name):
    with tmpdir() as tmp:
        srv = SServer(tmp, "-tls1_2", "-naccept", "1")

        async def main():
            c = await tls.dial("tcp", f"localhost:{srv.port}", client_ctx())
            with c:
                await c.write(b"hi\n")
                await srv.wait_for("hi")
                srv.send("r\n")                 # HelloRequest
                with pytest.raises(tls.TLSError) as ei:
                    c.set_read_deadline(netpoll.now() + WAIT)
                    await c.read(bytearray(10))  # we answer no_renegotiation; it gives up
                assert ei.value.kind == "remote alert"
                await srv.wait_for("no renegotiation")
        try:
            run(backend_name, main)
        finally:
            srv.stop()


def test_session_resumption_against_s_server(backend_name):
    with tmpdir() as tmp:
        srv = SServer(tmp, "-naccept", "2")

        async def main():
            cctx = client_ctx()
            cctx.netpoll_session_cache = tls.ClientSessionCache()
            resumed = []
            for i in range(2):
                c = await tls.dial("tcp", f"localhost:{srv.port}", cctx)
                with c:
                    await c.write(b"x%d\n" % i)
                    await srv.wait_for("x%d" % i)
                    srv.send("y\n")
                    assert await read_full(c, 2) == b"y\n"
                    resumed.append(c.connection_state().did_resume)
                    await c.close_write()
                    assert await read_all(c) == b""
            return resumed

        try:
            assert run(backend_name, main) == [False, True]
        finally:
            srv.stop()


def s_client(port: int, tmp: str, *args: str, stdin=subprocess.PIPE) -> subprocess.Popen:
    cert, key, ca = pem_files(tmp)
    return subprocess.Popen(
        [need_openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca,
         "-verify_return_error", "-servername", "localhost", *args],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("ver", list(VERSIONS))
def test_server_against_s_client(backend_name, ver):
    flag, name, _ = VERSIONS[ver]
    with tmpdir() as tmp:
        ck, kk = os.path.join(tmp, "c.pem"), os.path.join(tmp, "ck.pem")
        CLIENT_CERT.private_key_and_cert_chain_pem.write_to_path(ck)
        CLIENT_CERT.private_key_pem.write_to_path(kk)
        sess = os.path.join(tmp, "sess.pem")

        async def main():
            ln = tls.listen("tcp", "127.0.0.1:0", server_ctx(alpn=["h2"], require_client_cert=True))
            with ln:
                states = []
                for i in range(2):
                    resume = ["-sess_in", sess] if i else ["-sess_out", sess]
                    p = s_client(ln.addr.port, tmp, flag, "-alpn", "h2", "-cert", ck, "-key", kk,
                                 "-quiet", *resume)
                    try:
                        s = await ln.accept()
                        with s:
                            p.stdin.write(b"ping\n")
                            p.stdin.flush()
                            assert await read_full(s, 5) == b"ping\n"
                            await s.write(b"pong\n")
                            out = await netpoll.to_thread(p.stdout.readline)
                            assert out == b"pong\n"
                            states.append(s.connection_state())
                            await s.close_write()    # s_client exits on our close_notify
                            p.stdin.close()
                            assert await read_all(s) == b""
                            assert await netpoll.to_thread(p.wait, WAIT) == 0
                    finally:
                        kill(p)
                return states

        first, second = run(backend_name, main)
        for st in (first, second):
            assert st.version == name and st.negotiated_protocol == "h2"
            assert st.server_name == "localhost"
            assert ("DNS", "client.example") in st.peer_certificate["subjectAltName"]
        assert (first.did_resume, second.did_resume) == (False, True)


def test_16mib_each_way_with_s_client(backend_name):
    up, down = pattern(16 << 20, 7), pattern(16 << 20, 8)
    with tmpdir() as tmp:
        src = os.path.join(tmp, "up.bin")
        with open(src, "wb") as f:
            f.write(up)

        async def main():
            ln = tls.listen("tcp", "127.0.0.1:0", server_ctx())
            with ln, open(src, "rb") as fin:
                p = s_client(ln.addr.port, tmp, "-quiet", stdin=fin)
                try:
                    got = []
                    reader = threading.Thread(target=lambda: got.append(p.stdout.read()), daemon=True)
                    reader.start()
                    s = await ln.accept()
                    with s:
                        w = netpoll.go(s.write(down))
                        data = await read_full(s, len(up))
                        await w
                        await s.close_write()
                    await netpoll.to_thread(reader.join, WAIT * 3)
                    assert await netpoll.to_thread(p.wait, WAIT) == 0
                finally:
                    kill(p)
                return sha(data), sha(got[0])

        assert run(backend_name, main) == (sha(up), sha(down))
