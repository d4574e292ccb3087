# cython: language_level=3
"""The platform-gated system calls (see _syscall.pxd), for Python callers: the
hook table's accept, and tests that check which variant this build uses."""

from cpython.exc cimport PyErr_SetFromErrno
from libc.errno cimport EINTR, errno

#: Which calls this build uses: False means the fallback (macOS, or a build
#: with NETPOLL_PORTABLE=1).
ACCEPT4 = HAVE_ACCEPT4
PIPE2 = HAVE_PIPE2
EVENTFD = HAVE_EVENTFD
#: Built with NETPOLL_PORTABLE=1: every fallback forced, and the test harness
#: does without /proc.
PORTABLE = FORCED_PORTABLE


def accept(int fd):
    """Accept one connection: the new descriptor, non-blocking and
    close-on-exec. EINTR is retried; EAGAIN is BlockingIOError."""
    cdef int nfd
    while True:
        nfd = netpoll_accept(fd)
        if nfd >= 0:
            return nfd
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)


def pipe():
    """A non-blocking, close-on-exec pipe: (read end, write end)."""
    cdef int p[2]
    if netpoll_pipe(p) < 0:
        PyErr_SetFromErrno(OSError)
    return p[0], p[1]
