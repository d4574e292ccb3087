# cython: language_level=3, boundscheck=False, wraparound=False
# netpoll backend: epoll (Linux).
#
# Trigger: edge (EPOLLET). Each descriptor gets one EPOLL_CTL_ADD with
#   EPOLLIN|EPOLLPRI|EPOLLOUT|EPOLLRDHUP|EPOLLET for its whole life and is never
#   modified: a fresh connected socket reports writable at once, which is
#   harmless because the FD layer's pollreset drops it before the first write.
# Wakeup: the channel of wakepipe.pxd, registered level-triggered for
#   EPOLLIN: an eventfd, or the pipe of poll and select in a NETPOLL_PORTABLE
#   build (which proves that path on Linux). Breaks coalesce and only a
#   blocking netpoll consumes one.
# Modes: IN|PRI|RDHUP|HUP|ERR -> 'r'; PRI|RDHUP|HUP|ERR also go to
#   netpollreadstop first (urgent_events); OUT|HUP|ERR -> 'w'; ERR alone is an
#   error-only event (netpollevent).
# Stale events: the cookie is the PollDesc token (pollcache slot << 32 |
#   fdseq); netpolltoken drops a cookie whose fdseq moved on. The wakeup's
#   cookie is all ones, a slot the pollcache never reaches.
# Timeout: epoll_wait counts milliseconds (delay_ms of delay.pxd).

from cpython.exc cimport PyErr_SetFromErrno
from libc.stdint cimport int64_t, uint32_t, uint64_t

from netpoll._netpoll cimport (Backend, PollDesc, netpollevent, netpollreadstop,
                               netpolltoken,
                               MODE_R, MODE_W, MODE_RW)
from delay cimport delay_ms, wait_interrupted
from netpoll._syscall cimport HAVE_EVENTFD
from sys_epoll cimport *
from sys_unix cimport close
from wakepipe cimport *

cdef enum:
    NEVENTS = 128

cdef uint64_t WAKE_COOKIE = 0xffffffffffffffff


cdef class EpollBackend(Backend):
    name = "epoll"
    edge_triggered = True
    needs_arm = False
    max_fd = None
    urgent_events = True

    cdef int epfd
    cdef epoll_event events[NEVENTS]

    def __cinit__(self):
        self.epfd = -1

    cpdef netpollinit(self):
        cdef epoll_event ev
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)
        try:
            wakepipe_open(&self.wake, HAVE_EVENTFD)
        except OSError:
            self._closefds()
            raise
        ev.events = EPOLLIN
        ev.data.u64 = WAKE_COOKIE
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.wake.rfd, &ev) < 0:
            self._closefds()
            PyErr_SetFromErrno(OSError)

    cpdef netpollopen(self, int fd, PollDesc pd):
        cdef epoll_event ev
        ev.events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET
        ev.data.u64 = pd.token()
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        self.registered[fd] = pd

    cpdef netpollclose(self, int fd):
        cdef epoll_event ev
        self.registered.pop(fd, None)
        if epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)

    cpdef list netpoll(self, int64_t delay):
        cdef int timeout = delay_ms(delay), n, i, mode
        cdef uint32_t m
        cdef PollDesc pd
        cdef list to_run = []
        if self.closed:
            raise ValueError("netpoll on a closed epoll backend")
        while True:
            with nogil:
                n = epoll_wait(self.epfd, self.events, NEVENTS, timeout)
            if n >= 0:
                break
            if wait_interrupted(timeout > 0):
                return to_run
        for i in range(n):
            m = self.events[i].events
            if m == 0:
                continue
            if self.events[i].data.u64 == WAKE_COOKIE:
                if delay != 0:
                    wakepipe_drain(&self.wake)
                continue
            mode = 0
            if m & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                mode = MODE_R
            if m & (EPOLLOUT | EPOLLHUP | EPOLLERR):
                mode = MODE_RW if mode else MODE_W
            if mode == 0:
                continue
            pd = netpolltoken(self.events[i].data.u64)
            if pd is None:
                continue
            if m & (EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                netpollreadstop(pd)
            netpollevent(to_run, pd, mode, m == EPOLLERR)
        return to_run

    cpdef bint is_poll_descriptor(self, int fd):
        return fd >= 0 and (fd == self.epfd or wakepipe_owns(&self.wake, fd))

    cdef void _closefds(self) noexcept:
        wakepipe_close(&self.wake)
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    cpdef close(self):
        self._closefds()
        self.closed = True

    def __dealloc__(self):
        self._closefds()

