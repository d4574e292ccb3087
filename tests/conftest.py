"""Fixtures shared by every test: the backend under test, descriptor kits,
an fd-leak check, a hang guard, and a guard against shadowed tests.

The backends come from one place: NETPOLL_BACKEND when it is set (tox runs
one environment per backend), otherwise every backend available here. Tests
branch on a backend's capabilities (edge_triggered, needs_arm, max_fd), never
on its name.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
import threading
import time

import pytest

try:
    import netpoll
except ImportError:  # a source checkout built in place, not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import netpoll
# Programs the tests start (python -m netpoll, the examples) import the
# netpoll under test, whether installed or built in place.
_root = os.path.dirname(os.path.dirname(os.path.abspath(netpoll.__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH")) if p)
from support import FD_DIR, SCAN_GAP, Kit, describe_fd, open_fds, shadowed_tests

BACKENDS = [netpoll.BACKEND] if os.environ.get("NETPOLL_BACKEND") else netpoll.available_backends()

# No test may run longer than this (seconds); a hung netpoll becomes a failure.
HANG_LIMIT = float(os.environ.get("NETPOLL_TEST_HANG_LIMIT", "20"))


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    return request.param


@pytest.fixture
def backend(backend_name):
    b = netpoll.backend_class(backend_name)()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def kit(backend):
    k = Kit(backend)
    try:
        yield k
    finally:
        k.cleanup()


# -- descriptor leaks ---------------------------------------------------------

@pytest.fixture(autouse=True)
def no_fd_leak(request):
    before = open_fds()
    yield
    after = open_fds()
    # Grace: objects dropped by a failed test close their fds when collected.
    for _ in range(20):
        if after == before:
            return
        gc.collect()
        time.sleep(0.025)
        after = open_fds()
    leaked = sorted(after - before)
    lost = sorted(before - after)
    detail = {fd: describe_fd(fd) for fd in leaked}
    pytest.fail(f"descriptor leak: opened and not closed {detail}; closed but not ours {lost}")


# -- hangs ----------------------------------------------------------------------

class HangError(Exception):
    """The test ran past HANG_LIMIT (a netpoll that never returned)."""


def _on_alarm(signum, frame):
    raise HangError(f"test still running after {HANG_LIMIT} s")


@pytest.fixture(autouse=True)
def hang_guard():
    # SIGALRM interrupts a blocking netpoll (EINTR) and its handler's
    # exception propagates out of it; faulthandler is the last resort for a
    # netpoll that swallows it.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_LIMIT)
    faulthandler.dump_traceback_later(HANG_LIMIT * 3, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)


# -- shadowed tests -------------------------------------------------------------

class _ShadowedTests(pytest.File):
    def __init__(self, *, names, **kw):
        super().__init__(**kw)
        self.names = names

    def collect(self):
        raise self.CollectError(
            f"{self.path.name} defines a test name twice, so the earlier test never runs: "
            + "; ".join(self.names)
        )


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("test_"):
        return None
    names = shadowed_tests(file_path.read_text(encoding="utf-8"))
    if names:
        return _ShadowedTests.from_parent(parent, path=file_path, names=names)
    return None


def pytest_report_header(config):
    fds = FD_DIR or f"fcntl over every number (to {SCAN_GAP} past the highest open)"
    return [f"netpoll backends under test: {', '.join(BACKENDS) or 'none'}",
            f"descriptor-leak check reads: {fds}"]
