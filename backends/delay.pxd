# netpoll(delay) for every backend: the delay in each kernel's unit, and a
# wait that failed. delay < 0 blocks,
# 0 polls, > 0 waits at most that many nanoseconds. A delay is rounded *up*
# (Go truncates) so that netpoll never returns before the scheduler's next
# timer is due, and capped at MAX_DELAY_SEC, 1e6 s (about 11.6 days): Go caps
# epoll and poll at 1e9 ms, and Darwin's kevent rejects longer timeouts with
# EINVAL. The scheduler recomputes its sleep when it wakes early.
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t

cdef enum:
    MAX_DELAY_SEC = 1000000


cdef inline int delay_ms(int64_t delay) noexcept nogil:
    # epoll_wait and poll: -1 blocks.
    if delay < 0:
        return -1
    if delay >= <int64_t>MAX_DELAY_SEC * 1000000000:
        return MAX_DELAY_SEC * 1000
    return <int>((delay + 999999) // 1000000)


cdef inline int64_t delay_us(int64_t delay) noexcept nogil:
    # select's timeval, for delay >= 0.
    if delay >= <int64_t>MAX_DELAY_SEC * 1000000000:
        return <int64_t>MAX_DELAY_SEC * 1000000
    return (delay + 999) // 1000


cdef inline int64_t delay_ns(int64_t delay) noexcept nogil:
    # kevent's timespec, for delay >= 0: nanoseconds pass through unrounded.
    if delay >= <int64_t>MAX_DELAY_SEC * 1000000000:
        return <int64_t>MAX_DELAY_SEC * 1000000000
    return delay


cdef inline bint wait_interrupted(bint timed) except -1:
    # The kernel wait failed: anything but EINTR is raised. A signal lets its
    # Python handler run (KeyboardInterrupt leaves here); then True with a
    # timeout (return empty: the caller recomputes its sleep), False without
    # (wait again).
    if errno != EINTR:
        PyErr_SetFromErrno(OSError)
    PyErr_CheckSignals()
    return timed
