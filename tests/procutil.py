"""Helpers for tests that run netpoll programs as subprocesses."""

from __future__ import annotations

import os
import select
import subprocess
import time


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
