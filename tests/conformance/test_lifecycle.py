"""Backend conformance: the protocol itself, poller life cycle, and fork."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

import netpoll
from support import MS, describe_fd, open_fds
from support.conformance import Waiter, collect, settle_edges, wait_for
from netpoll._netpoll import Backend, pollclose, pollopen

PROTOCOL = ("netpollinit", "netpollopen", "netpollclose", "netpollarm", "netpoll",
            "netpollbreak", "is_poll_descriptor", "close")


def _defined_below_base(cls, name):
    """The class in cls's MRO, below the core's Backend, that defines name."""
    for c in cls.__mro__:
        if c is Backend:
            return None
        if name in vars(c):
            return c
    return None


def test_backend_class_follows_the_protocol(backend_name):
    cls = netpoll.backend_class(backend_name)
    assert issubclass(cls, Backend)
    for name in PROTOCOL:
        assert callable(getattr(cls, name, None)), f"{cls.__name__} has no {name}"
        if name == "netpollarm" and not cls.needs_arm:
            continue  # the core's netpollarm raises "unused", as Go's epoll does
        if name in ("netpollbreak", "is_poll_descriptor"):
            # The core's are real: the wake channel of wakepipe.pxd, which a
            # backend opens in netpollinit (the tests below see it work).
            continue
        assert _defined_below_base(cls, name) is not None, \
            f"{cls.__name__} does not implement {name} (it inherits the core's placeholder)"
    assert isinstance(cls.name, str) and cls.name == backend_name
    assert type(cls.edge_triggered) is bool
    assert type(cls.needs_arm) is bool
    assert cls.edge_triggered != cls.needs_arm, \
        "an edge-triggered backend needs no arming; a level-triggered one must arm"
    assert cls.max_fd is None or (type(cls.max_fd) is int and cls.max_fd > 0)
    declared = getattr(cls, "error_events", None)
    assert declared is None or type(declared) is bool


def test_unused_netpollarm_is_an_invariant_error(backend, kit):
    if backend.needs_arm:
        pytest.skip("needs_arm: netpollarm is part of this backend's protocol")
    a, _ = kit.socketpair()
    pd = kit.open(a)
    with pytest.raises(netpoll.NetpollError):
        backend.netpollarm(pd, ord("r"))


def test_many_pollers_leak_nothing(backend_name):
    cls = netpoll.backend_class(backend_name)
    before = open_fds()
    for _ in range(1000):
        b = cls()
        b.close()
    assert open_fds() == before
    for _ in range(100):  # and when nobody calls close()
        cls()
    gc.collect()
    assert open_fds() == before


def test_close_is_idempotent(backend_name):
    b = netpoll.backend_class(backend_name)()
    b.close()
    b.close()
    assert b.closed
    with b:  # the context manager closes again
        pass
    assert b.closed


def test_closed_backend_refuses_registrations(backend, kit):
    a, _ = kit.socketpair()
    backend.close()
    with pytest.raises(ValueError):
        pollopen(backend, a.fileno())


def test_poll_descriptors_are_the_pollers_own_and_close_on_exec(backend_name, kit):
    cls = netpoll.backend_class(backend_name)
    before = open_fds()
    b = cls()
    try:
        own = open_fds() - before
        assert own, "a poller owns at least one descriptor (the wakeup channel)"
        for fd in own:
            assert b.is_poll_descriptor(fd), f"fd {fd} ({describe_fd(fd)})"
            assert not os.get_inheritable(fd), f"fd {fd} is not close-on-exec"
        a, c = kit.socketpair()
        assert not b.is_poll_descriptor(a.fileno())
        assert not b.is_poll_descriptor(-1)
        pollopen(b, a.fileno()).evict()
        assert not b.is_poll_descriptor(a.fileno()), "a registered user socket is not the poller's"
    finally:
        b.close()
    for fd in own:
        assert not b.is_poll_descriptor(fd), "a closed poller owns nothing"
    assert open_fds() == before | {a.fileno(), c.fileno()}


def test_backends_are_independent(backend_name, kit):
    cls = netpoll.backend_class(backend_name)
    one, two = cls(), cls()
    try:
        a, b = kit.socketpair()
        pd = pollopen(one, a.fileno())
        r = Waiter("r")
        settle_edges(one, [pd])
        assert pd.park("r", r) is False
        b.send(b"x")
        assert two.netpoll(50 * MS) == [], "another poller saw this one's descriptor"
        two.netpollbreak()
        t0 = time.monotonic()
        assert wait_for(one, r) == [r]
        assert one.netpoll(50 * MS) == []
        assert time.monotonic() - t0 >= 0.05, "a break on one poller woke the other"
        pd.evict()
        pollclose(pd)
    finally:
        one.close()
        two.close()


# -- fork -------------------------------------------------------------------------

def _child(backend, pd, r, b) -> int:
    # Runs in the child: exit codes say what failed.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(10)  # a hung child dies instead of hanging the parent
    if pd.sema("r") is not r:
        return 10
    b.send(b"from the child")
    got = collect(backend, lambda g: r in g, timeout=3)
    if got != [r]:
        return 11
    # A break here must stay here: the child has its own wakeup channel.
    backend.netpollbreak()
    return 0


def test_fork_child_gets_a_fresh_working_poller(backend, kit):
    a, b = kit.socketpair()
    pd = kit.open(a)
    settle_edges(backend, [pd])
    r = Waiter("r")
    assert pd.park("r", r) is False
    pid = os.fork()
    if pid == 0:
        code = 12
        try:
            code = _child(backend, pd, r, b)
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.01)
    assert os.WIFEXITED(status), f"child died: status {status:#x}"
    assert os.WEXITSTATUS(status) == 0, {
        10: "the child lost the parked waiter",
        11: "the child's poller did not wake the parked waiter",
        12: "the child raised",
    }.get(os.WEXITSTATUS(status), os.WEXITSTATUS(status))
    # The parent's poller still works, and saw the same readiness (the socket
    # is shared): the child did not consume the parent's events.
    assert wait_for(backend, r) == [r]
    assert a.recv(100) == b"from the child"
    t0 = time.monotonic()
    assert backend.netpoll(80 * MS) == []
    assert time.monotonic() - t0 >= 0.08, "the child's break woke the parent's poller"
    # And new registrations in the parent work.
    c, d = kit.socketpair()
    pd2 = kit.open(c)
    settle_edges(backend, [pd2])
    r2 = Waiter("r2")
    assert pd2.park("r", r2) is False
    d.send(b"y")
    assert wait_for(backend, r2) == [r2]
