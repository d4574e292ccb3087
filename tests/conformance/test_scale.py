"""Backend conformance: thousands of registered descriptors, few of them active."""

from __future__ import annotations

import resource
import socket

import pytest

from support import drain
from support.conformance import Waiter, collect, settle_edges

NPAIRS = 5000


@pytest.fixture
def nofile():
    """Raise the soft RLIMIT_NOFILE toward the hard limit for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * NPAIRS + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_thousands_registered_few_active(backend, nofile):
    if backend.max_fd is not None and backend.max_fd < 2 * NPAIRS + 64:
        pytest.skip(f"max_fd is {backend.max_fd}: {NPAIRS} socketpairs do not fit "
                    "(test_fd_beyond_max_fd_is_refused covers the limit)")
    from netpoll._netpoll import pollclose, pollopen
    pairs, pds = [], []
    try:
        for _ in range(NPAIRS):
            a, b = socket.socketpair()
            pairs.append((a, b))
            a.setblocking(False)
            b.setblocking(False)
        for a, _ in pairs:
            pds.append(pollopen(backend, a.fileno()))
        settle_edges(backend, pds)
        waiters = [Waiter(f"r{i}") for i in range(NPAIRS)]
        for pd, w in zip(pds, waiters):
            assert pd.park("r", w) is False
        assert backend.netpoll(0) == []
        for active in ([0], [7, 1234, 4999], list(range(2500, 2510)), [NPAIRS - 1, 3, 1000]):
            for i in active:
                pairs[i][1].send(b"x")
            got = collect(backend, lambda g: len(g) >= len(active), timeout=3)
            got += backend.netpoll(0)
            assert sorted(map(id, got)) == sorted(id(waiters[i]) for i in active), \
                f"expected exactly {active}"
            for i in active:  # the woken goroutines read and wait again
                assert drain(pairs[i][0]) == b"x"
                pds[i].prepare("r")
                assert pds[i].park("r", waiters[i]) is False
            assert backend.netpoll(0) == []
    finally:
        for pd in pds:
            if not pd.closing:
                pd.evict()
            pollclose(pd)
        for a, b in pairs:
            a.close()
            b.close()
