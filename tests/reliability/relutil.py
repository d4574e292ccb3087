"""Helpers shared by the reliability tests: running a main goroutine under a
backend, exact reads, descriptor counts, the soak module from bench/."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Awaitable, Callable

import netpoll

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def run(backend_name: str, main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``main(*args)`` as the main goroutine under ``backend_name``."""
    return netpoll.run(main(*args), backend=backend_name)


def import_bench(name: str):
    """A module from bench/ (bench/soak.py is both a script and a library),
    loaded from its file so that nothing else in bench/ shadows a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def read_full(conn: Any, n: int) -> bytes:
    """Exactly ``n`` bytes; EOFError on an early end of stream."""
    out = bytearray()
    buf = bytearray(min(65536, max(n, 1)))
    while len(out) < n:
        m = await conn.read(memoryview(buf)[: min(len(buf), n - len(out))])
        if m == 0:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += buf[:m]
    return bytes(out)
