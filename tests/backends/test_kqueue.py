"""kqueue backend: the translations that do not need the kernel.

kevent -> mode and delay -> timespec are plain functions of the module, so
they are checked wherever the module builds: on macOS and the BSDs against
the real <sys/event.h>, on Linux against the kqueue-over-epoll shim.
"""

from __future__ import annotations

import pytest

kqueue = pytest.importorskip("netpoll.backends.kqueue")

C = kqueue.CONSTANTS
MODE_R, MODE_W, MODE_RW = 114, 119, 233


@pytest.mark.parametrize(
    "filt, flags, mode",
    [
        ("EVFILT_READ", 0, MODE_R),
        ("EVFILT_READ", C["EV_CLEAR"], MODE_R),
        # A read EOF wakes the writer too: some kernels tell the writer of a
        # pipe whose reader closed only this way.
        ("EVFILT_READ", C["EV_CLEAR"] | C["EV_EOF"], MODE_RW),
        ("EVFILT_WRITE", C["EV_CLEAR"], MODE_W),
        ("EVFILT_WRITE", C["EV_CLEAR"] | C["EV_EOF"], MODE_W),
        ("EVFILT_READ", C["EV_ERROR"], MODE_R),
        ("EVFILT_WRITE", C["EV_ERROR"], MODE_W),
        ("EVFILT_USER", C["EV_CLEAR"], 0),
    ],
)
def test_kevent_mode(filt, flags, mode):
    assert kqueue.kevent_mode(C[filt], flags) == mode


@pytest.mark.parametrize(
    "delay, ts",
    [
        (-1, None),                          # block: NULL timespec
        (-(2**63), None),
        (0, (0, 0)),                         # poll: a zero timespec, not NULL
        (1, (0, 1)),                         # nanoseconds pass through unrounded
        (1_500_000_000, (1, 500_000_000)),
        (10**15 - 1, (999_999, 999_999_999)),  # just under the cap
        (10**15, (1_000_000, 0)),
        (10**18, (1_000_000, 0)),            # Darwin: EINVAL above 1e6 s
        (2**63 - 1, (1_000_000, 0)),
    ],
)
def test_delay_to_timespec(delay, ts):
    assert kqueue.delay_to_timespec(delay) == ts


def test_capabilities():
    cls = kqueue.KqueueBackend
    assert (cls.name, cls.edge_triggered, cls.needs_arm, cls.max_fd) == ("kqueue", True, False, None)
