"""examples/https_hello.py run as a user would (a subprocess on port 0)
under each backend, against Python's blocking ssl client; a plaintext
client and a client that stalls mid-handshake do not stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

import netpoll
from tlsutil import client_ctx, pem_files, readline, tmpdir

pytest.importorskip("httptools", reason="examples/http_hello.py parses requests with httptools")

EXAMPLE = Path(__file__).parents[2] / "examples" / "https_hello.py"


def start(backend_name: str, *args: str) -> tuple[subprocess.Popen, int]:
    # The program imports the netpoll these tests import (installed or in place).
    root = os.path.dirname(os.path.dirname(netpoll.__file__))
    env = dict(os.environ, NETPOLL_BACKEND=backend_name,
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = readline(proc, 20)
    m = re.search(r"serving https://127\.0\.0\.1:(\d+) \(backend (\w+)\)", line)
    if not m:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no address from the example: {line!r}, stderr {err!r}")
    assert m.group(2) == backend_name
    return proc, int(m.group(1))


def stop(proc: subprocess.Popen) -> bytes:
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return err


def get(ctx: ssl.SSLContext, port: int, n: int = 2) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1"
            out = []
            for i in range(n):
                last = i == n - 1
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (b"Connection: close\r\n" if last else b""))
                data = b""
                while b"Hello, World!" not in data:
                    chunk = s.recv(4096)
                    assert chunk, data
                    data += chunk
                out.append(data)
            return out


def test_https_hello_with_a_certificate(backend_name):
    with tmpdir() as tmp:
        cert, key, _ = pem_files(tmp)
        proc, port = start(backend_name, "--cert", cert, "--key", key)
        try:
            # bad clients first: plaintext HTTP, and one that stalls mid-handshake
            with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
                plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                plain.recv(100)   # an alert or EOF, not an HTTP reply
            stall = socket.create_connection(("127.0.0.1", port), timeout=5)
            stall.sendall(b"\x16\x03\x01\x02\x00")
            ctx = client_ctx(alpn=["http/1.1"])
            replies = get(ctx, port, 3)
            stall.close()
            for r in replies:
                assert r.startswith(b"HTTP/1.1 200 OK\r\n") and r.endswith(b"Hello, World!")
        finally:
            if proc.poll() is None:
                err = stop(proc)
            else:
                err = proc.communicate()[1]
        assert b"plaintext HTTP request" in err


def test_https_hello_with_a_throwaway_certificate(backend_name):
    proc, port = start(backend_name)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE   # self-signed: nothing to verify it against
        ctx.set_alpn_protocols(["http/1.1"])
        (reply,) = get(ctx, port, 1)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        stop(proc)
