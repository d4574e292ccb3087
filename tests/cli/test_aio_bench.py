"""netpoll bench --asyncio (netpoll/benchmark/aio_bench.py): a quick run, the
request driver of --instructions and the argument checks."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from netpoll.benchmark import aio_bench

CMD = [sys.executable, "-m", "netpoll", "bench", "--asyncio"]
LIMIT = 300


@pytest.fixture(autouse=True)
def hang_guard():
    # Overrides the suite's 20 s guard for this module only: a quick run
    # starts six servers; the subprocess timeouts bound it.
    yield


def bench(*args):
    return subprocess.run(CMD + list(args), capture_output=True, text=True, timeout=LIMIT)


def test_quick_run_prints_both_echo_tables_with_the_netpoll_rows():
    p = bench("--quick", "--no-wrk", "--rounds", "1", "--duration", "0.5", "--warmup", "0.2")
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert "## protocols" in out and "## streams" in out and "## uvicorn" not in out
    for kind in ("protocols", "streams"):
        table = out.split(f"## {kind}")[1].split("##")[0]
        row = next(line for line in table.splitlines() if "netpoll.aio" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert any(c.replace(",", "").isdigit() and int(c.replace(",", "")) > 0 for c in cells), row


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


def test_requests_sends_exactly_the_count_over_the_connections(hello_server):
    port = hello_server(100)
    assert aio_bench._requests("127.0.0.1", port, 23, 4) == 23


def test_requests_counts_only_the_answers_that_came(hello_server):
    port = hello_server(2)  # each connection closes after two answers
    assert aio_bench._requests("127.0.0.1", port, 20, 4) == 8


@pytest.mark.parametrize("counts", ["5,1", "0,10", "3,3", "x,9"])
def test_bad_request_counts_are_refused(counts):
    p = bench("--instructions", "--requests", counts)
    assert p.returncode == 2
    assert f"--requests wants two counts 0 < A < B, not {counts!r}" in p.stderr


@pytest.mark.parametrize("messages", ["10,2", "x"])
def test_bad_message_counts_are_refused(messages):
    p = bench("--instructions", "--messages", messages)
    assert p.returncode == 2
    assert "--messages wants two counts" in p.stderr and repr(messages) in p.stderr


@pytest.mark.parametrize("conns", ["x", "0,64"])
def test_bad_conns_are_refused_by_the_module(conns):
    p = subprocess.run([sys.executable, "-m", "netpoll.benchmark.aio_bench", "--conns", conns],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "--conns" in p.stderr
