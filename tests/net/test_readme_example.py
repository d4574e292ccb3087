"""The echo server from the README, run as written (only its port changed)
in a child process under each backend, against real clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import netpoll
from netpoll import net

from support import read_full, run

README = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "README.md")


def readme_example() -> str:
    """The first python code block under the README's "An echo server"."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## An echo server"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


EXAMPLE = readme_example()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_example(backend_name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    assert EXAMPLE.count("127.0.0.1:8080") == 1
    code = EXAMPLE.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    env = dict(os.environ, NETPOLL_BACKEND=backend_name)
    root = os.path.dirname(os.path.dirname(os.path.abspath(netpoll.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, f"127.0.0.1:{port}"


async def connect(addr: str, proc: subprocess.Popen):
    deadline = time.monotonic() + 15
    while True:
        try:
            return await net.dial("tcp", addr, timeout=1)
        except ConnectionRefusedError:
            assert proc.poll() is None, "the example exited"
            assert time.monotonic() < deadline, "the example never listened"
            await netpoll.sleep(0.05)


async def client(addr: str, proc: subprocess.Popen, i: int) -> int:
    c = await connect(addr, proc)
    try:
        for size in (1, 4096, 10_000 + i):
            msg = os.urandom(size)
            await c.write(msg)
            assert await read_full(c, size) == msg
        c.close_write()
        assert await c.read(bytearray(1)) == 0  # the server closed its end
        return i
    finally:
        c.close()


def test_readme_echo_server(backend_name):
    proc, addr = start_example(backend_name)
    try:
        async def main():
            assert await client(addr, proc, 0) == 0
            gs = [netpoll.go(client(addr, proc, i)) for i in range(1, 11)]
            assert [await g for g in gs] == list(range(1, 11))
            # A client that resets its connection does not bring the server down.
            c = await connect(addr, proc)
            await c.write(b"bye")
            assert await read_full(c, 3) == b"bye"
            c.set_linger(0)
            c.close()
            await netpoll.sleep(0.05)
            assert await client(addr, proc, 99) == 99

        run(backend_name, main)
        assert proc.poll() is None, "the example exited"
    finally:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    assert not err.strip(), err.decode(errors="replace")
