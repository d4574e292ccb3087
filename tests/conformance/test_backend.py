"""Backend conformance: readiness, hang-ups, errors, close and fd reuse.

Every test runs against each backend under test (see tests/conftest.py) with
real descriptors. Waiters are parked with PollDesc.park: on needs_arm
backends that arms the interest; edge-triggered backends also report
readiness nobody waits for, which shows as pdReady in PollDesc.sema().
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import tempfile
import time

import pytest

import netpoll
from support import MS, drain, fill
from support.conformance import PD_READY, Waiter, collect, error_events, rst_close, settle_edges, wait_for
from netpoll._netpoll import (POLL_ERR_NOT_POLLABLE, POLL_NO_ERROR, lookup_token, pollclose,
                              pollopen)

QUIET = 50 * MS  # how long "nothing happens" is watched for


# -- readiness ---------------------------------------------------------------

def test_write_then_read_readiness_from_one_registration(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    w = Waiter("w")
    assert pd.park("w", w) is False  # nothing polled yet: the writer parks
    got = wait_for(backend, w)
    assert got == [w], "a fresh socket is writable"

    r = Waiter("r")
    assert pd.park("r", r) is False
    assert backend.netpoll(QUIET) == [], "nothing to read yet"
    b.send(b"x")
    got = wait_for(backend, r)
    assert got == [r], "the peer wrote: the reader is woken, the writer is not parked"
    assert a.recv(10) == b"x"


def test_writability_does_not_wake_a_reader(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    r = Waiter("r")
    assert pd.park("r", r) is False
    got = collect(backend, lambda g: False, timeout=0.1)
    assert got == [], "only write readiness exists; the reader must stay parked"
    assert pd.sema("r") is r
    b.send(b"x")
    assert wait_for(backend, r) == [r]


def test_write_readiness_returns_after_the_buffer_drains(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    fill(a.send)
    w = Waiter("w")
    assert pd.park("w", w) is False
    assert backend.netpoll(QUIET) == [], "the send buffer is full"
    drain(b)
    assert wait_for(backend, w) == [w]


def test_directions_are_independent(backend, kit):
    # A reader and a writer parked together: the read firing must neither
    # wake nor disarm the writer, and the other way round.
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    fill(a.send)
    pd.prepare("w")
    r, w = Waiter("r"), Waiter("w")
    assert pd.park("r", r) is False
    assert pd.park("w", w) is False
    assert backend.netpoll(QUIET) == []
    b.send(b"x")
    assert wait_for(backend, r) == [r]
    assert pd.sema("w") is w, "the read readiness woke the writer"
    assert drain(a) == b"x"
    assert backend.netpoll(QUIET) == []
    drain(b)
    assert wait_for(backend, w) == [w], "the writer was disarmed by the reader's wake"
    pd.prepare("r")
    r2 = Waiter("r2")
    assert pd.park("r", r2) is False
    assert backend.netpoll(QUIET) == [], "the write readiness woke the reader"
    b.send(b"y")
    assert wait_for(backend, r2) == [r2]


def test_readiness_before_wait_is_kept_and_consumed_once(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    b.send(b"1")
    r1, r2 = Waiter("r1"), Waiter("r2")
    if backend.edge_triggered:
        # The edge is reported with nobody waiting and kept as pdReady.
        got = collect(backend, lambda g: pd.sema("r") == PD_READY)
        assert got == []
        assert pd.sema("r") == PD_READY, "readiness before the wait was lost"
        assert pd.park("r", r1) is True, "the pending readiness is consumed without parking"
        assert pd.park("r", r2) is False, "...exactly once"
        assert backend.netpoll(QUIET) == [], "no second wake for the same edge"
        assert drain(a) == b"1"
    else:
        # The kernel keeps level readiness; the park arms it.
        assert backend.netpoll(QUIET) == [], "nobody waits"
        assert pd.park("r", r1) is False
        assert wait_for(backend, r1) == [r1], "readiness before the wait was lost"
        assert pd.park("r", Waiter("x")) is True, "the wake left pdReady for the woken waiter"
        assert drain(a) == b"1"
        assert pd.park("r", r2) is False
    # Drained to EAGAIN and parked: quiet until the peer writes again.
    assert backend.netpoll(QUIET) == []
    assert pd.sema("r") is r2
    b.send(b"2")
    assert wait_for(backend, r2) == [r2]
    assert drain(a) == b"2"


def test_nonblocking_netpoll_reports_readiness_already_there(backend, kit):
    # The scheduler polls with delay 0 between goroutines: readiness that
    # arrived before that call is reported by it, not only by a blocking one.
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    b.send(b"x")
    time.sleep(0.02)
    got = []
    for _ in range(50):  # the event is queued at once; allow a slow kernel
        got += backend.netpoll(0)
        if got:
            break
        time.sleep(0.01)
    assert got == [r]
    assert backend.netpoll(QUIET) == [], "reported once"


def test_unconsumed_readiness_does_not_spin(backend, kit):
    # Data sits unread and nobody waits: after the first report, netpoll must
    # sleep its whole delay (a level backend drops a fired interest).
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    b.send(b"x")
    assert wait_for(backend, r) == [r]
    for _ in range(3):
        t0 = time.monotonic()
        assert backend.netpoll(QUIET) == []
        took = time.monotonic() - t0
        assert took >= QUIET / 1e9, f"netpoll({QUIET} ns) returned after {took:.4f} s"


def test_readiness_on_many_descriptors_in_one_netpoll(backend, kit):
    pairs = [kit.socketpair() for _ in range(200)]
    pds = [kit.open(a) for a, _ in pairs]
    settle_edges(backend, pds)
    waiters = [Waiter(f"r{i}") for i in range(len(pds))]
    for pd, w in zip(pds, waiters):
        assert pd.park("r", w) is False
    for _, b in pairs:
        b.send(b"x")
    got = collect(backend, lambda g: len(g) >= len(waiters))
    assert sorted(map(id, got)) == sorted(map(id, waiters)), "each waiter exactly once"


# -- hang-ups, resets and errors ---------------------------------------------------

def test_peer_close_gives_read_readiness_and_eof_socketpair(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    b.close()
    assert wait_for(backend, r) == [r]
    assert a.recv(10) == b""


def test_peer_close_gives_read_readiness_and_eof_pipe(backend, kit):
    # A pipe's reader sees the writer's close as a hang-up alone (no IN).
    rfd, wfd = kit.pipe()
    pd = kit.open(rfd)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    assert backend.netpoll(QUIET) == []
    kit.close_fd(wfd)
    assert wait_for(backend, r) == [r]
    assert os.read(rfd, 10) == b""


def test_peer_close_after_data_on_tcp(backend, kit):
    c, s = kit.tcp_pair()
    pd = kit.open(c)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    s.sendall(b"last words")
    s.close()
    assert wait_for(backend, r) == [r]
    data = b""
    for _ in range(100):
        chunk = drain(c)
        data += chunk
        if not chunk:
            break
    assert data == b"last words"
    assert c.recv(10) == b"", "EOF after the data"


def test_reset_wakes_both_directions(backend, kit):
    c, s = kit.tcp_pair(sndbuf=4096, rcvbuf=4096)
    pd = kit.open(c)
    settle_edges(backend, [pd])
    fill(c.send)
    pd.prepare("w")
    r, w = Waiter("r"), Waiter("w")
    assert pd.park("r", r) is False
    assert pd.park("w", w) is False
    assert backend.netpoll(QUIET) == [], "nothing to read and the send side is full"
    rst_close(s)
    got = wait_for(backend, r, w)
    assert sorted(map(id, got)) == sorted([id(r), id(w)])
    with pytest.raises(ConnectionResetError):
        for _ in range(100):
            c.recv(65536)


def test_hang_up_wakes_a_parked_writer(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    fill(a.send)
    pd.prepare("w")
    w = Waiter("w")
    assert pd.park("w", w) is False
    assert backend.netpoll(QUIET) == []
    b.close()
    assert wait_for(backend, w) == [w]
    with pytest.raises(BrokenPipeError):
        a.send(b"x")


def test_error_only_event_wakes_and_sets_everr(backend, kit):
    # The write end of a full pipe whose reader has gone: EPOLLERR / POLLERR
    # and nothing else.
    rfd, wfd = kit.pipe()
    pd = kit.open(wfd)
    settle_edges(backend, [pd])
    fill(lambda data: os.write(wfd, data))
    pd.prepare("w")
    w = Waiter("w")
    assert pd.park("w", w) is False
    assert backend.netpoll(QUIET) == [], "the pipe is full"
    kit.close_fd(rfd)
    assert wait_for(backend, w) == [w], "an error wakes the writer"
    with pytest.raises(BrokenPipeError):
        os.write(wfd, b"x")
    if not error_events(backend):
        pytest.skip("error_events is false for this backend (see support.conformance."
                    "error_events): its kernel interface reports an error only as "
                    "readiness, so there is no error-only event to set everr")
    assert pd.everr is True
    assert pd.check("r") == POLL_ERR_NOT_POLLABLE, "an error-only event is reported to readers as not pollable"
    assert pd.check("w") == POLL_NO_ERROR, "...and not to writers, who get the errno from write"
    with pytest.raises(netpoll.NotPollableError) as ei:
        pd.park("r", Waiter("r"))
    assert ei.value.fd == wfd, "the error names the descriptor"


# -- close, stale events and fd reuse ----------------------------------------------

def test_no_events_after_pollclose(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    token = pd.token
    assert lookup_token(token) is pd
    b.send(b"ready but not polled")
    assert pd.evict() == [r], "evict wakes the parked reader"
    pollclose(pd)
    assert lookup_token(token) is None, "the old token is stale after pollclose"
    assert backend.netpoll(QUIET) == []
    b.send(b"more")
    b.close()
    assert backend.netpoll(QUIET) == []
    assert a.fileno() not in backend.registered


def test_reused_fd_gets_no_stale_event(backend, kit):
    a, peer_a = kit.socketpair()
    pd_a = kit.open(a)
    settle_edges(backend, [pd_a])
    ra = Waiter("old")
    assert pd_a.park("r", ra) is False
    old_token = pd_a.token
    peer_a.send(b"for the old registration")  # ready, never polled
    fd = a.fileno()
    assert kit.close_pd(pd_a) == [ra]
    a.close()
    assert lookup_token(old_token) is None

    c, peer_c = kit.socketpair()  # a new socket on the old number
    if peer_c.fileno() == fd:
        c, peer_c = peer_c, c
    if c.fileno() != fd:
        kit.adopt_fd(os.dup2(c.fileno(), fd))
    pd_b = kit.open(fd)
    assert lookup_token(old_token) is None, "a recycled PollDesc must not answer to the old token"
    rb = Waiter("new")
    assert pd_b.park("r", rb) is False
    got = collect(backend, lambda g: False, timeout=0.1)
    assert got == [], "the old registration's readiness leaked into the new PollDesc"
    assert pd_b.sema("r") is rb
    peer_c.send(b"for the new one")
    assert wait_for(backend, rb) == [rb]
    assert os.read(fd, 100) == b"for the new one"


def test_register_close_reopen_many_times(backend, kit):
    # Recycled PollDescs and fd numbers, readiness left behind each time.
    for i in range(50):
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            pd = pollopen(backend, a.fileno())
            w = Waiter(f"r{i}")
            assert pd.park("r", w) is False
            b.send(b"x")
            if i % 2:
                backend.netpoll(0)
            if not pd.closing:
                pd.evict()
            pollclose(pd)
        finally:
            a.close()
            b.close()
    assert backend.registered == {}
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("last")
    assert pd.park("r", r) is False
    assert collect(backend, lambda g: False, timeout=0.1) == []
    b.send(b"y")
    assert wait_for(backend, r) == [r]


def test_dup_registered_beside_its_original(backend, kit):
    a, b = kit.socketpair()
    d = kit.adopt_fd(os.dup(a.fileno()))
    pd_a = kit.open(a)
    pd_d = kit.open(d)
    settle_edges(backend, [pd_a, pd_d])
    ra, rd = Waiter("orig"), Waiter("dup")
    assert pd_a.park("r", ra) is False
    assert pd_d.park("r", rd) is False
    b.send(b"1")
    got = wait_for(backend, ra, rd)
    assert sorted(map(id, got)) == sorted([id(ra), id(rd)]), "both registrations see the readiness"
    assert drain(a) == b"1"

    kit.close_pd(pd_d)
    kit.close_fd(d)
    pd_a.prepare("r")
    ra2 = Waiter("orig2")
    assert pd_a.park("r", ra2) is False
    assert backend.netpoll(QUIET) == []
    b.send(b"2")
    assert wait_for(backend, ra2) == [ra2], "closing the dup broke the original"
    assert drain(a) == b"2"


# -- what cannot be registered -------------------------------------------------------

def test_regular_file_is_not_pollable(backend):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(netpoll.NotPollableError):
            pollopen(backend, f.fileno())
    assert backend.registered == {}


def test_directory_is_not_pollable(backend):
    fd = os.open(tempfile.gettempdir(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(netpoll.NotPollableError):
            pollopen(backend, fd)
    finally:
        os.close(fd)


def test_negative_fd_is_ebadf(backend):
    with pytest.raises(OSError) as ei:
        pollopen(backend, -1)
    assert ei.value.errno == errno.EBADF
    assert "-1" in str(ei.value)


def test_closed_fd_is_ebadf(backend):
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError) as ei:
        pollopen(backend, fd)
    assert ei.value.errno == errno.EBADF
    assert str(fd) in str(ei.value)
    assert backend.registered == {}


def test_registering_twice_is_an_error(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    with pytest.raises(OSError):
        pollopen(backend, a.fileno())
    assert backend.registered == {a.fileno(): pd}
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    b.send(b"x")
    assert wait_for(backend, r) == [r], "the failed second registration broke the first"


def test_fd_beyond_max_fd_is_refused(backend, kit):
    if backend.max_fd is None:
        pytest.skip("max_fd is None: the backend has no descriptor limit")
    need = backend.max_fd + 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        a, b = kit.socketpair()
        high = kit.adopt_fd(os.dup2(a.fileno(), backend.max_fd))
        with pytest.raises(ValueError, match="FD_SETSIZE"):
            pollopen(backend, high)
        assert backend.registered == {}
        kit.close_fd(high)
        edge = kit.adopt_fd(os.dup2(a.fileno(), backend.max_fd - 1))
        pd = kit.open(edge)  # the last descriptor that fits
        settle_edges(backend, [pd])
        r = Waiter("r")
        assert pd.park("r", r) is False
        b.send(b"x")
        assert wait_for(backend, r) == [r]
        kit.close_pd(pd)
        kit.close_fd(edge)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
