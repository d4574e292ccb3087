"""tests/aio: the suites of other projects run whole modules in a child
process, each test under the child's own watchdog, so the parent's hang
guard allows a test marked ``suite`` SUITE_LIMIT seconds instead."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading

import pytest

HANG_LIMIT = float(os.environ.get("NETPOLL_TEST_HANG_LIMIT", "20"))
SUITE_LIMIT = max(HANG_LIMIT, 900.0)


def pytest_configure(config):
    config.addinivalue_line("markers", "suite: runs another project's test module in a child process")


class HangError(Exception):
    """The test ran past its limit."""


@pytest.fixture(autouse=True)
def hang_guard(request):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    limit = SUITE_LIMIT if request.node.get_closest_marker("suite") else HANG_LIMIT

    def on_alarm(signum, frame):
        raise HangError(f"test still running after {limit} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(limit * 3, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)
