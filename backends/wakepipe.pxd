# The wakeup channel of every backend but kqueue: a non-blocking,
# close-on-exec pipe (netpoll._syscall picks pipe2 or pipe + fcntl), or for epoll
# an eventfd where the build has one (rfd == wfd then), always polled for
# input. netpollbreak writes only when `wakesig` was clear; only a blocking
# netpoll drains the channel and then clears `wakesig`, so a non-blocking poll
# that sees it leaves the break pending for the next blocking one: breaks
# coalesce (one write for a storm) and none is lost.
from cpython.exc cimport PyErr_SetFromErrno
from libc.stdint cimport uint64_t

from netpoll._syscall cimport netpoll_eventfd, netpoll_pipe
from sys_unix cimport EAGAIN, EINTR, close, errno, read, write


cdef struct WakePipe:
    int rfd
    int wfd
    bint wakesig


cdef inline void wakepipe_init(WakePipe *w) noexcept:
    w.rfd = -1
    w.wfd = -1
    w.wakesig = False


cdef inline int wakepipe_open(WakePipe *w, bint eventfd) except -1:
    cdef int p[2]
    if eventfd:
        p[0] = netpoll_eventfd()
        p[1] = p[0]
        if p[0] < 0:
            PyErr_SetFromErrno(OSError)
    elif netpoll_pipe(p) < 0:
        PyErr_SetFromErrno(OSError)
    w.rfd = p[0]
    w.wfd = p[1]
    w.wakesig = False
    return 0


cdef inline void wakepipe_drain(WakePipe *w) noexcept:
    # Empty the channel before clearing wakesig: a break that lands after the
    # clear writes afresh, which the next poll sees. An eventfd empties in one
    # read (its counter resets), a pipe in as many as it holds.
    cdef char buf[64]
    cdef ssize_t r
    while True:
        r = read(w.rfd, buf, sizeof(buf))
        if r > 0 or (r < 0 and errno == EINTR):
            continue
        break
    w.wakesig = False


cdef inline int wakepipe_break(WakePipe *w) except -1:
    # Eight bytes, the counter increment an eventfd takes; a pipe takes them
    # atomically too (below PIPE_BUF).
    cdef uint64_t one = 1
    cdef ssize_t r
    if w.wakesig or w.wfd < 0:
        return 0
    w.wakesig = True
    while True:
        r = write(w.wfd, &one, 8)
        if r == 8 or errno == EAGAIN:  # EAGAIN: full, so it is signalled
            return 0
        if errno != EINTR:
            w.wakesig = False
            PyErr_SetFromErrno(OSError)


cdef inline bint wakepipe_owns(WakePipe *w, int fd) noexcept:
    return fd >= 0 and (fd == w.rfd or fd == w.wfd)


cdef inline void wakepipe_close(WakePipe *w) noexcept:
    if w.rfd >= 0:
        close(w.rfd)
    if w.wfd >= 0 and w.wfd != w.rfd:
        close(w.wfd)
    w.rfd = -1
    w.wfd = -1
