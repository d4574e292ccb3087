# cython: language_level=3, boundscheck=False, wraparound=False
# netpoll backend: poll(2) (every POSIX system), after Go's AIX poller.
#
# Trigger: level, emulated one-shot (needs_arm). netpollopen appends an entry
#   with no interest; netpollarm ORs in POLLIN or POLLOUT just before a
#   goroutine parks, and the scan removes the interest that fired, so a ready
#   descriptor nobody waits on does not make every poll return at once. An
#   entry with no interest holds its fd complemented (~fd, negative), which
#   poll(2) skips: it would otherwise report POLLHUP, POLLERR and POLLNVAL
#   even for events == 0, and a hung-up socket nobody reads would turn every
#   blocking netpoll into a busy loop.
# Wakeup: the pipe of wakepipe.pxd, its read end entry 0, always polled for
#   POLLIN; breaks coalesce and only a blocking netpoll consumes one.
# Modes: IN|HUP|ERR|NVAL -> 'r', dropping POLLIN; OUT|HUP|ERR|NVAL -> 'w',
#   dropping POLLOUT; ERR alone is an error-only event (netpollevent). NVAL means the fd was closed while
#   registered: both directions wake, and their retried syscalls fail EBADF.
# Stale events: no token needed. poll(2) reports into the array it was given
#   and keeps no queue, and open, close and arm run on the scheduler thread
#   that also runs netpoll, never during the scan; so an entry's revents
#   always belongs to the PollDesc in the parallel list at the same index.
#   (Go's AIX poller gets the same guarantee from mtxset.)
# Timeout: poll counts milliseconds (delay_ms of delay.pxd).

from cpython.exc cimport PyErr_SetFromErrno
from libc.stdint cimport int64_t
from libc.stdlib cimport free, realloc

from netpoll._netpoll cimport (Backend, PollDesc, netpollevent,
                               MODE_R, MODE_W, MODE_RW)
from delay cimport delay_ms, wait_interrupted
from sys_poll cimport *
from sys_unix cimport EBADF, EEXIST, ENOENT
from wakepipe cimport *


cdef class PollBackend(Backend):
    name = "poll"
    edge_triggered = False
    needs_arm = True
    max_fd = None

    # pfds[0] is the wake pipe; pfds[i] for i >= 1 belongs to pds[i], whose
    # `user` is i. len(pds) == npfd always; `registered` maps fd -> PollDesc.
    cdef pollfd *pfds
    cdef Py_ssize_t npfd
    cdef Py_ssize_t cap
    cdef list pds

    def __cinit__(self):
        self.pds = []

    cpdef netpollinit(self):
        wakepipe_open(&self.wake, False)
        try:
            self._grow()
        except MemoryError:
            wakepipe_close(&self.wake)
            raise
        self.pfds[0].fd = self.wake.rfd
        self.pfds[0].events = POLLIN
        self.pfds[0].revents = 0
        self.npfd = 1
        self.pds = [None]

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self.cap * 2 if self.cap else 64
        cdef pollfd *p = <pollfd *>realloc(self.pfds, cap * sizeof(pollfd))
        if p == NULL:
            raise MemoryError()
        self.pfds = p
        self.cap = cap
        return 0

    cpdef netpollopen(self, int fd, PollDesc pd):
        if self.closed:
            raise ValueError("netpollopen on a closed poll backend")
        # ~fd marks an entry without interest, so fd itself must not be negative.
        if fd < 0:
            raise OSError(EBADF, f"poll backend: bad file descriptor {fd}")
        if fd in self.registered:
            raise OSError(EEXIST, f"poll backend: fd {fd} is already registered")
        if self.npfd == self.cap:
            self._grow()
        cdef Py_ssize_t i = self.npfd
        self.pfds[i].fd = ~fd
        self.pfds[i].events = 0
        self.pfds[i].revents = 0
        self.pds.append(pd)
        self.registered[fd] = pd
        self.npfd = i + 1
        pd.user = i

    cpdef netpollclose(self, int fd):
        cdef PollDesc pd = self.registered.pop(fd, None)
        if pd is None:
            raise OSError(ENOENT, f"poll backend: fd {fd} is not registered")
        cdef Py_ssize_t i = pd.user
        cdef Py_ssize_t last = self.npfd - 1
        cdef PollDesc moved
        if i != last:
            self.pfds[i] = self.pfds[last]
            moved = self.pds[last]
            self.pds[i] = moved
            moved.user = i
        self.pds.pop()
        self.npfd = last

    cpdef netpollarm(self, PollDesc pd, int mode):
        cdef Py_ssize_t i = pd.user
        if i < 1 or i >= self.npfd or self.pds[i] is not pd:
            raise OSError(ENOENT, f"poll backend: netpollarm of unregistered fd {pd.fd}")
        cdef pollfd *p = &self.pfds[i]
        if p.fd < 0:
            p.fd = ~p.fd
        if mode == MODE_R or mode == MODE_RW:
            p.events |= POLLIN
        if mode == MODE_W or mode == MODE_RW:
            p.events |= POLLOUT

    cpdef list netpoll(self, int64_t delay):
        cdef int timeout = delay_ms(delay), n, mode
        cdef short ev
        cdef Py_ssize_t i
        cdef pollfd *p
        cdef pollfd *pfds
        cdef nfds_t npfd
        cdef list to_run = []
        while True:
            # Checked on every round: a signal handler may have closed the
            # backend or grown the array.
            if self.closed:
                raise ValueError("netpoll on a closed poll backend")
            pfds = self.pfds
            npfd = <nfds_t>self.npfd
            with nogil:
                n = poll(pfds, npfd, timeout)
            if n >= 0:
                break
            if wait_interrupted(timeout > 0):
                return to_run
        if n > 0 and pfds[0].revents:
            n -= 1
            if delay != 0:
                wakepipe_drain(&self.wake)
        for i in range(1, <Py_ssize_t>npfd):
            if n == 0:
                break
            p = &pfds[i]
            ev = p.revents
            if ev == 0:
                continue
            n -= 1
            mode = 0
            if ev & (POLLIN | POLLHUP | POLLERR | POLLNVAL):
                mode = MODE_R
                p.events &= ~POLLIN
            if ev & (POLLOUT | POLLHUP | POLLERR | POLLNVAL):
                mode = MODE_RW if mode else MODE_W
                p.events &= ~POLLOUT
            if p.events == 0:
                p.fd = ~p.fd
            netpollevent(to_run, <PollDesc>self.pds[i], mode, ev == POLLERR)
        return to_run

    cpdef close(self):
        wakepipe_close(&self.wake)
        free(self.pfds)
        self.pfds = NULL
        self.npfd = 0
        self.cap = 0
        self.pds = []
        self.closed = True

    def __dealloc__(self):
        wakepipe_close(&self.wake)
        free(self.pfds)
