"""kqueue backend: the translations that do not need the kernel.

kevent -> mode and delay -> timespec are plain functions of the module, so
they are checked wherever the module builds: on macOS and the BSDs against
the real <sys/event.h>, on Linux against the kqueue-over-epoll shim.
"""

from __future__ import annotations

import socket

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


def test_a_read_eof_alone_wakes_a_parked_writer():
    # The peer's FIN while our send side is full: a real kernel reports it as
    # EVFILT_READ with EV_EOF and nothing on EVFILT_WRITE (the send side is
    # still open), and so does the shim (tests/kqueue_shim: a hang-up fires
    # the read filter only). The backend's mapping of a read EV_EOF to 'r'
    # and 'w' is all that wakes the writer, who retries and learns the
    # outcome from its write.
    from support import Kit, fill
    from support.conformance import Waiter, settle_edges, wait_for

    b = kqueue.KqueueBackend()
    kit = Kit(b)
    try:
        c, s = kit.tcp_pair(sndbuf=4096, rcvbuf=4096)
        pd = kit.open(c)
        settle_edges(b, [pd])
        fill(c.send)
        pd.prepare("w")
        w = Waiter("w")
        assert pd.park("w", w) is False
        assert b.netpoll(50_000_000) == [], "the send side is full"
        s.shutdown(socket.SHUT_WR)
        assert wait_for(b, w) == [w], "the read EOF did not wake the writer"
        with pytest.raises(BlockingIOError):
            c.send(b"x" * 65536)  # woken early: the peer still has to read
    finally:
        kit.cleanup()
        b.close()
