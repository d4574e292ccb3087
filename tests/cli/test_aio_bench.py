"""bench/aio_bench.py --instructions: its request driver and its argument checks."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench", "aio_bench.py")


@pytest.fixture(scope="module")
def aio_bench():
    spec = importlib.util.spec_from_file_location("aio_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def hello_server():
    """start(n): a keep-alive HTTP server answering each request with
    uvicorn's hello body and closing a connection after n answers; its port.
    Closed, with its threads joined, after the test."""
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nHello, world!"
    listeners, threads = [], []

    def conn(c, n):
        with c:
            buf = b""
            try:
                for _ in range(n):
                    while b"\r\n\r\n" not in buf:
                        chunk = c.recv(4096)
                        if not chunk:
                            return
                        buf += chunk
                    buf = buf[buf.index(b"\r\n\r\n") + 4:]
                    c.sendall(reply)
            except OSError:
                pass  # the client went first

    def accept(srv, n):
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return  # closed
            t = threading.Thread(target=conn, args=(c, n), daemon=True)
            threads.append(t)
            t.start()

    def start(n):
        srv = socket.create_server(("127.0.0.1", 0))
        listeners.append(srv)
        t = threading.Thread(target=accept, args=(srv, n), daemon=True)
        threads.append(t)
        t.start()
        return srv.getsockname()[1]

    yield start
    for srv in listeners:
        try:
            srv.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        except OSError:
            pass
        srv.close()
    for t in threads:
        t.join(10)


def test_requests_sends_exactly_the_count_over_the_connections(aio_bench, hello_server):
    port = hello_server(100)
    assert aio_bench._requests("127.0.0.1", port, 23, 4) == 23


def test_requests_counts_only_the_answers_that_came(aio_bench, hello_server):
    port = hello_server(2)  # each connection closes after two answers
    assert aio_bench._requests("127.0.0.1", port, 20, 4) == 8


@pytest.mark.parametrize("counts", ["5,1", "0,10", "3,3"])
def test_bad_request_counts_are_refused(counts):
    p = subprocess.run([sys.executable, BENCH, "--instructions", "--requests", counts],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert f"--requests wants two counts 0 < A < B, not {counts!r}" in p.stderr
