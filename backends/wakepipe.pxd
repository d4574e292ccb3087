# The wakeup channel of the level-triggered backends (poll, select): a
# non-blocking, close-on-exec pipe whose read end is always polled for input.
# netpollbreak writes one byte only when `wakesig` was clear; only a blocking
# netpoll drains the pipe and then clears `wakesig`, so a non-blocking poll
# that sees the byte leaves the break pending for the next blocking one:
# breaks coalesce (one write for a storm) and none is lost.
from cpython.exc cimport PyErr_SetFromErrno

from sys_unix cimport EAGAIN, EINTR, O_CLOEXEC, O_NONBLOCK, close, errno, pipe2, read, write


cdef struct WakePipe:
    int rfd
    int wfd
    bint wakesig


cdef inline void wakepipe_init(WakePipe *w) noexcept:
    w.rfd = -1
    w.wfd = -1
    w.wakesig = False


cdef inline int wakepipe_open(WakePipe *w) except -1:
    cdef int p[2]
    if pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0:
        PyErr_SetFromErrno(OSError)
    w.rfd = p[0]
    w.wfd = p[1]
    w.wakesig = False
    return 0


cdef inline void wakepipe_drain(WakePipe *w) noexcept:
    # Empty the pipe before clearing wakesig: a break that lands after the
    # clear writes a fresh byte, which the next poll sees.
    cdef char buf[64]
    cdef ssize_t r
    while True:
        r = read(w.rfd, buf, sizeof(buf))
        if r > 0 or (r < 0 and errno == EINTR):
            continue
        break
    w.wakesig = False


cdef inline int wakepipe_break(WakePipe *w) except -1:
    cdef char b = 0
    cdef ssize_t r
    if w.wakesig or w.wfd < 0:
        return 0
    w.wakesig = True
    while True:
        r = write(w.wfd, &b, 1)
        if r == 1 or errno == EAGAIN:  # EAGAIN: the pipe is full, so it is signalled
            return 0
        if errno != EINTR:
            w.wakesig = False
            PyErr_SetFromErrno(OSError)


cdef inline void wakepipe_close(WakePipe *w) noexcept:
    if w.rfd >= 0:
        close(w.rfd)
        w.rfd = -1
    if w.wfd >= 0:
        close(w.wfd)
        w.wfd = -1
