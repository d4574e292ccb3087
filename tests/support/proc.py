"""Tests that run programs: reading a child's output with a timeout, and
loading a script of bench/ as a module."""

from __future__ import annotations

import importlib.util
import os
import select
import subprocess
import sys
import time

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def readline(proc: subprocess.Popen, timeout: float) -> str:
    """One line of ``proc``'s stdout, or what came before ``timeout`` seconds
    passed or the stream ended (never blocks past the timeout)."""
    end = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n") and time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        c = os.read(proc.stdout.fileno(), 1)
        if not c:
            break
        buf += c
    return buf.decode()


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
