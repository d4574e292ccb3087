"""`python -m netpoll echo --tls [CERT KEY]` against Python's ssl client."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys

import pytest

import netpoll
from tlsutil import client_ctx, pem_files, readline, tmpdir


def start(backend_name: str, *args: str) -> tuple[subprocess.Popen, int]:
    root = os.path.dirname(os.path.dirname(netpoll.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "netpoll", "echo", "--port", "0", "--backend", backend_name,
                             "--tls", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = readline(proc, 20)
    m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(backend (\w+)\) over TLS", line)
    if not m:
        proc.kill()
        pytest.fail(f"unexpected first line {line!r}: {proc.communicate()[1]!r}")
    assert m.group(2) == backend_name
    return proc, int(m.group(1))


def echo(ctx: ssl.SSLContext, port: int, msg: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            return got


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"stopped" in out


def test_echo_tls_with_cert_and_key(backend_name):
    with tmpdir() as tmp:
        cert, key, _ = pem_files(tmp)
        proc, port = start(backend_name, cert, key)
        try:
            msg = os.urandom(200_000)
            assert echo(client_ctx(), port, msg) == msg
        finally:
            stop(proc)


def test_echo_tls_throwaway_certificate(backend_name):
    proc, port = start(backend_name)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert echo(ctx, port, b"hello over tls") == b"hello over tls"
        # the certificate is self-signed for localhost: a verifying client says so
        with pytest.raises(ssl.SSLCertVerificationError, match="self-signed"):
            echo(ssl.create_default_context(), port, b"x")
    finally:
        stop(proc)


def test_echo_tls_bad_files():
    p = subprocess.run([sys.executable, "-m", "netpoll", "echo", "--port", "0", "--tls", "/nonexistent.pem"],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(netpoll.__file__))))
    assert p.returncode == 1 and "--tls" in p.stderr and "No such file" in p.stderr
