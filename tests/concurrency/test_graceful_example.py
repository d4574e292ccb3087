"""examples/graceful_shutdown.py as a user runs it (a subprocess) under each
backend, driven by plain sockets: SIGTERM stops accepting, in-flight
connections finish, and the drain deadline cuts the ones that do not."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import readline

EXAMPLE = Path(__file__).parents[2] / "examples" / "graceful_shutdown.py"


def start(backend_name: str, drain: float) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, NETPOLL_BACKEND=backend_name)
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0", "--drain", str(drain)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = readline(proc, 10)
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no address from the example: {line!r}, stderr {err!r}")
    return proc, int(m.group(1))


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        out += chunk
    return out


def refused(port: int, timeout: float = 5) -> bool:
    # The listener is closed once a connect is refused.
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


def test_sigterm_lets_in_flight_connections_finish(backend_name):
    proc, port = start(backend_name, drain=30)
    try:
        a = socket.create_connection(("127.0.0.1", port), timeout=5)
        b = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert ask(a, b"before") == b"echo: before\n"
        proc.send_signal(signal.SIGTERM)
        assert readline(proc, 10) == "shutting down: draining 2 connection(s)\n"
        assert refused(port), "still accepting after SIGTERM"
        # The in-flight connections are still served until they close.
        assert ask(a, b"during") == b"echo: during\n"
        assert ask(b, b"also") == b"echo: also\n"
        a.close()
        time.sleep(0.05)
        assert proc.poll() is None, "exited with a connection in flight"
        b.close()
        out, err = proc.communicate(timeout=10)
        assert out == b"drained\n", err
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_drain_deadline_cuts_connections_that_linger(backend_name):
    proc, port = start(backend_name, drain=0.3)
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert ask(c, b"hi") == b"echo: hi\n"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 >= 0.25
        assert out == b"shutting down: draining 1 connection(s)\ndrain deadline passed: connections cut\n", err
        assert proc.returncode == 0, err
        assert c.recv(10) == b"", "the server did not close the lingering connection"
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_with_no_connections_exits_at_once(backend_name):
    proc, port = start(backend_name, drain=30)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert out == b"shutting down: draining 0 connection(s)\ndrained\n", err
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
