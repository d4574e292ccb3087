"""CPython's own asyncio tests, run against netpoll.aio on every backend.

The runner (cpython_suite.py) runs one module in a child process; here each
module must pass at least its floor (what passes today, so a regression
fails), hang nowhere, and every test that fails must be listed, with its
reason, in docs/aio_conformance.md (suitecheck.py: a failure is first run
again alone, as CPython's own runner does).
"""

from __future__ import annotations

import os

import pytest

from suitecheck import HERE, check_module, run_child

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


def argv(backend: str) -> list[str]:
    return [os.path.join(HERE, "cpython_suite.py"), "--backend", backend, "--timeout", "120"]


@pytest.mark.suite
@pytest.mark.skipif(not HAVE_SUITE, reason="this Python has no test.test_asyncio package")
@pytest.mark.parametrize("module", sorted(FLOORS))
def test_cpython_asyncio_module(module, backend_name):
    check_module(argv(backend_name), module, backend_name, FLOORS[module])


@pytest.mark.skipif(not HAVE_SUITE, reason="this Python has no test.test_asyncio package")
def test_runner_reruns_one_test_alone(backend_name):
    """The rerun's selection: exactly the named tests run, nothing else."""
    tid = "test_events.SelectEventLoopTests.test_run_until_complete"
    rows, counts = run_child(argv(backend_name), "test_events", (tid, tid + "_nope"))
    assert [(r["test"], r["status"]) for r in rows] == [(tid, "pass")]
    assert counts["pass"] == 1 and sum(counts.values()) == 1, counts
