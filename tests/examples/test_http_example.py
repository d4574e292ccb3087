"""examples/http_hello.py, run as a user would (a subprocess on port 0), under
each backend, against a plain socket client."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from support import readline

pytest.importorskip("httptools", reason="examples/http_hello.py parses requests with httptools")

EXAMPLE = Path(__file__).parents[2] / "examples" / "http_hello.py"

GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\n\r\n"


class Server:
    def __init__(self, backend_name: str, *args: str) -> None:
        env = dict(os.environ, NETPOLL_BACKEND=backend_name)
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = readline(self.proc, 10)
        m = re.search(r"serving http://127\.0\.0\.1:(\d+) \(backend (\w+)\)", line)
        if not m:
            self.kill()
            pytest.fail(f"no address from the example: {line!r}, stderr {self.stderr!r}")
        self.port, self.backend = int(m.group(1)), m.group(2)
        self.stderr = b""

    def stop(self) -> tuple[int, bytes]:
        """SIGTERM; the exit code and what it printed after the address."""
        self.proc.send_signal(signal.SIGTERM)
        out, self.stderr = self.proc.communicate(timeout=5)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        _, self.stderr = self.proc.communicate()


@pytest.fixture
def server(backend_name):
    srv = Server(backend_name)
    try:
        assert srv.backend == backend_name
        yield srv
        # Whatever the test sent, the server is still up and stops cleanly.
        assert srv.proc.poll() is None, f"the server died: {srv.proc.communicate()[1]!r}"
        code, out = srv.stop()
        assert code == 0, srv.stderr
    finally:
        srv.kill()


class Client:
    """A plain socket and a reader of Content-Length framed responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed with {self.buf!r} unread"
        self.buf += chunk

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = top.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in lines:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers["content-length"])
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status), headers, body

    def at_eof(self) -> bool:
        return self.buf == b"" and self.sock.recv(1) == b""


def check_hello(resp: tuple[int, dict[str, str], bytes], head: bool = False) -> dict[str, str]:
    status, headers, body = resp
    assert status == 200
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == "13"
    assert body == (b"" if head else b"Hello, World!")
    return headers


def test_get(server):
    with Client(server.port) as c:
        c.sock.sendall(GET)
        headers = check_hello(c.response())
        assert "connection" not in headers
        assert "date" in headers


def test_pipelined_requests_are_answered_in_order(server):
    with Client(server.port) as c:
        c.sock.sendall(GET + HEAD + GET_CLOSE)
        assert "connection" not in check_hello(c.response())
        assert "connection" not in check_hello(c.response(head=True), head=True)
        assert check_hello(c.response())["connection"] == "close"
        assert c.at_eof()


def test_keep_alive(server):
    with Client(server.port) as c:
        for _ in range(3):
            c.sock.sendall(GET)
            assert "connection" not in check_hello(c.response())


def test_http10_keep_alive_is_said_in_the_response(server):
    with Client(server.port) as c:
        for _ in range(2):
            c.sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert check_hello(c.response())["connection"].lower() == "keep-alive"


@pytest.mark.parametrize("request_", [GET_CLOSE, GET_10], ids=["connection-close", "http10"])
def test_close_after_the_response(server, request_):
    with Client(server.port) as c:
        c.sock.sendall(request_)
        assert check_hello(c.response())["connection"] == "close"
        assert c.at_eof()


def test_malformed_request_gets_400_and_eof(server):
    with Client(server.port) as c:
        c.sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        status, headers, body = c.response()
        assert status == 400
        assert headers["connection"] == "close"
        assert c.at_eof()


def test_malformed_request_after_good_ones(server):
    with Client(server.port) as c:
        c.sock.sendall(GET + GET + b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        check_hello(c.response())
        check_hello(c.response())
        assert c.response()[0] == 400
        assert c.at_eof()


def test_a_reset_ends_only_its_connection(server):
    with Client(server.port) as c:
        c.sock.sendall(GET)
        select.select([c.sock], [], [], 5)  # the response is in, unread
        # Linger 0: close sends a reset, which the server's next read reports.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with Client(server.port) as c:
        c.sock.sendall(GET)
        check_hello(c.response())


def test_sigterm_stops_it_with_exit_code_0(backend_name):
    srv = Server(backend_name)
    try:
        with Client(srv.port) as idle, Client(srv.port) as c:
            c.sock.sendall(GET)
            check_hello(c.response())
            code, out = srv.stop()
            assert code == 0, srv.stderr
            assert b"stopped" in out
            # Stopping closed the connections it had.
            assert idle.at_eof() and c.at_eof()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    finally:
        srv.kill()
