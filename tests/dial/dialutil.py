"""Helpers for the resolver and dialer tests: a getaddrinfo stand-in that
counts its calls and can be slow, and a runner."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Awaitable, Callable

import netpoll

# How much later than expected something may happen on a slow CI host.
SLACK = 2.0


def run(backend_name: str, main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return netpoll.run(main(*args), backend=backend_name)


class FakeGAI:
    """socket.getaddrinfo for names in ``table`` (name -> addresses, in
    order; an int is a gaierror code to raise), after ``delay`` seconds.
    Other names go to the real one. Counts calls per name, and the most
    calls in progress at once."""

    def __init__(self, table: dict[str, Any], delay: float = 0.0) -> None:
        self.table = table
        self.delay = delay
        self.calls: dict[str, int] = {}
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        self._active = 0
        self.max_active = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        if host not in self.table:
            return self._real(host, port, family, type, proto, flags)
        with self._lock:
            self.calls[host] = self.calls.get(host, 0) + 1
            self.threads.add(threading.current_thread().name)
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            if self.delay:
                time.sleep(self.delay)
            entry = self.table[host]
            if isinstance(entry, int):
                raise socket.gaierror(entry, f"fake error {entry}")
            if isinstance(entry, BaseException):
                raise entry
            out = []
            for a in entry:
                fam = socket.AF_INET6 if ":" in a else socket.AF_INET
                if family and fam != family:
                    continue
                sa = (a, port or 0, 0, 0) if fam == socket.AF_INET6 else (a, port or 0)
                out.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sa))
            if not out:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return out
        finally:
            with self._lock:
                self._active -= 1


async def ticker(period: float, ticks: list[float], stop: netpoll.Event) -> None:
    """Append netpoll.now() every ``period`` until ``stop`` is set."""
    while not stop.is_set():
        ticks.append(netpoll.now())
        await netpoll.sleep(period)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def refused_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> tuple[socket.socket, int]:
    """A port nothing listens on, held bound (not listening) so that no
    other test takes it: a connect to it is refused."""
    s = socket.socket(family)
    s.bind((host, 0))
    return s, s.getsockname()[1]

