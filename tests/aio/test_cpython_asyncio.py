"""CPython's own asyncio tests, run against netpoll.aio on every backend.

The runner (cpython_suite.py) runs one module in a child process; here each
module must pass at least its floor (what passes today, so a regression
fails), hang nowhere, and every test that fails must be listed, with its
reason, in docs/aio_conformance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFORMANCE = os.path.join(ROOT, "docs", "aio_conformance.md")

# Tests that pass on netpoll.aio today, per module (the same on every backend).
FLOORS = {
    "test_events": 77,
    "test_streams": 67,
    "test_sock_lowlevel": 13,
    "test_server": 2,
    "test_sslproto": 21,
    "test_subprocess": 116,
    "test_sendfile": 20,
    "test_ssl": 22,
    "test_buffered_proto": 1,
    "test_unix_events": 12,
    "test_tasks": 253,
    "test_taskgroups": 35,
    "test_timeouts": 32,
    "test_runners": 25,
    "test_waitfor": 15,
    "test_threads": 6,
    "test_queues": 44,
    "test_locks": 70,
}

try:
    import test.test_asyncio  # noqa: F401
    HAVE_SUITE = True
except ImportError:
    HAVE_SUITE = False


def run_suite(module: str, backend: str) -> tuple[list[dict], dict]:
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "cpython_suite.py"), "--backend", backend,
         "--timeout", "120", module],
        capture_output=True, text=True, timeout=850, cwd=HERE)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    hung = [r for r in rows if r.get("status") == "hang"]
    assert not hung, f"{hung[0]['test']} hung; child stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and rows and "summary" in rows[-1], (
        f"runner exited {proc.returncode}; stderr:\n{proc.stderr[-3000:]}")
    return rows[:-1], rows[-1]["summary"][module]


@pytest.mark.suite
@pytest.mark.skipif(not HAVE_SUITE, reason="this Python has no test.test_asyncio package")
@pytest.mark.parametrize("module", sorted(FLOORS))
def test_cpython_asyncio_module(module, backend_name):
    rows, counts = run_suite(module, backend_name)
    documented = open(CONFORMANCE, encoding="utf-8").read()
    undocumented = [r["test"] for r in rows if r["status"] == "fail" and r["test"] not in documented]
    assert not undocumented, f"failing and not listed in docs/aio_conformance.md: {undocumented}"
    assert counts["pass"] >= FLOORS[module], (
        f"{module} on {backend_name}: {counts} (floor {FLOORS[module]} passes); failures: "
        + "; ".join(f"{r['test']}: {r['why']}" for r in rows if r["status"] == "fail"))
