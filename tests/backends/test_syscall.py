"""netpoll._syscall: the platform-gated system calls.

Whichever variant this build chose (accept4 or accept + fcntl, pipe2 or
pipe + fcntl, eventfd or a pipe for epoll's wakeup), the descriptors it
returns are non-blocking and close-on-exec. A NETPOLL_PORTABLE=1 build (the
`portable` tox environment sets the variable for its tests too) must have
taken every fallback.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat

import pytest

import netpoll
from netpoll import _syscall


def _nonblocking_cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK) and bool(
        fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


def test_the_variant_matches_the_build_switch():
    if os.environ.get("NETPOLL_PORTABLE") == "1":
        assert _syscall.PORTABLE, "NETPOLL_PORTABLE=1 but the build is not portable"
        assert not (_syscall.ACCEPT4 or _syscall.PIPE2 or _syscall.EVENTFD)
    elif not _syscall.PORTABLE and os.uname().sysname == "Linux":
        assert _syscall.ACCEPT4 and _syscall.PIPE2 and _syscall.EVENTFD
    if os.uname().sysname == "Darwin":
        assert not (_syscall.ACCEPT4 or _syscall.PIPE2), "macOS has neither accept4 nor pipe2"


def test_pipe_is_nonblocking_and_cloexec():
    r, w = _syscall.pipe()
    try:
        assert _nonblocking_cloexec(r) and _nonblocking_cloexec(w)
        assert stat.S_ISFIFO(os.fstat(r).st_mode)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
        os.write(w, b"x")
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)


def test_accept_is_nonblocking_and_cloexec():
    with socket.socket() as ln:
        ln.bind(("127.0.0.1", 0))
        ln.listen(1)
        ln.setblocking(False)
        with pytest.raises(BlockingIOError):
            _syscall.accept(ln.fileno())
        with socket.create_connection(ln.getsockname()) as c:
            fd = _syscall.accept(ln.fileno())
            try:
                assert _nonblocking_cloexec(fd)
                s = socket.socket(fileno=os.dup(fd))
                with s:
                    assert s.getpeername() == c.getsockname()
            finally:
                os.close(fd)


def test_accept_error_names_the_errno():
    with socket.socket() as s:  # not listening
        with pytest.raises(OSError) as ei:
            _syscall.accept(s.fileno())
        assert ei.value.errno == errno.EINVAL
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as ei:
        _syscall.accept(r)
    assert ei.value.errno == errno.EBADF


def test_the_wakeup_channel_is_the_one_the_build_chose(backend_name):
    # epoll wakes through an eventfd, or a pipe without one; poll and select
    # always through a pipe. kqueue has EVFILT_USER (or the shim's eventfds).
    b = netpoll.backend_class(backend_name)()
    try:
        if backend_name == "kqueue":
            pytest.skip("kqueue wakes through EVFILT_USER, no descriptor of ours")
        mine = [fd for fd in range(4096) if b.is_poll_descriptor(fd)]
        fifos = [fd for fd in mine if stat.S_ISFIFO(os.fstat(fd).st_mode)]
        for fd in mine:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, f"fd {fd} is inherited"
        if backend_name == "epoll" and _syscall.EVENTFD:
            assert fifos == [], "epoll built with eventfd wakes through a pipe"
        else:
            assert len(fifos) == 2, f"{backend_name} should wake through a pipe: {mine}"
            for fd in fifos:
                assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        b.close()
