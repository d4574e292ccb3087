# cython: language_level=3, boundscheck=False, wraparound=False
# netpoll backend: select(2) (every POSIX system), after Go's AIX poller.
#
# Trigger: level, emulated one-shot (needs_arm). netpollopen records the fd
#   with no interest; netpollarm adds it to the read or write interest set
#   just before a goroutine parks, and the scan removes the interest that
#   fired, so a ready descriptor nobody waits on does not make every select
#   return at once. Only fds below FD_SETSIZE fit in an fd_set (max_fd); any
#   other is refused with ValueError before fd_set memory is touched.
# Wakeup: the pipe of wakepipe.pxd, its read end always in the read interest
#   set; breaks coalesce and only a blocking netpoll consumes one.
# Modes: readable -> 'r', writable -> 'w' (the kernel reports hang-up and
#   error through both), each dropping its interest. select cannot report an
#   error alone, so everr is never set. select fails with EBADF when an fd was
#   closed while registered (poll's POLLNVAL): the armed fds that fcntl calls
#   bad wake both directions, and their retried syscalls fail EBADF.
# Stale events: no token needed. select reports into copies of the interest
#   sets made for that call, and open, close and arm run on the scheduler
#   thread that also runs netpoll, never during the scan; so a ready bit
#   always belongs to the PollDesc registered for that fd now.
#   (Go's AIX poller gets the same guarantee from mtxset.)
# Timeout: select counts microseconds (delay_us of delay.pxd).

from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdint cimport int64_t

from netpoll._netpoll cimport (Backend, PollDesc, netpollevent,
                               MODE_R, MODE_W, MODE_RW)
from delay cimport delay_us
from sys_select cimport *
from sys_unix cimport EBADF, EEXIST, EINTR, ENOENT, F_GETFD, errno, fcntl
from wakepipe cimport *

import errno as _errno
import os as _os


cdef class SelectBackend(Backend):
    name = "select"
    edge_triggered = False
    needs_arm = True
    max_fd = FD_SETSIZE
    error_events = False

    # rset/wset: the interest sets, the wake pipe's read end always in rset.
    # `registered` maps fd -> PollDesc (whose `user` is fd).
    # maxfd: the highest fd registered or the wake pipe's, -1 when closed.
    cdef fd_set rset
    cdef fd_set wset
    cdef int maxfd

    def __cinit__(self):
        self.maxfd = -1

    cpdef netpollinit(self):
        wakepipe_open(&self.wake, False)
        if self.wake.rfd >= FD_SETSIZE:
            fd = self.wake.rfd
            wakepipe_close(&self.wake)
            raise OSError(_errno.EMFILE, f"select backend: wakeup pipe fd {fd} "
                          f"is not below FD_SETSIZE ({FD_SETSIZE})")
        FD_ZERO(&self.rset)
        FD_ZERO(&self.wset)
        FD_SET(self.wake.rfd, &self.rset)
        self.maxfd = self.wake.rfd

    cdef int _checkfd(self, int fd) except -1:
        if fd < 0:
            raise ValueError(f"select backend: fd {fd} is negative; select takes "
                             f"0 <= fd < FD_SETSIZE ({FD_SETSIZE})")
        if fd >= FD_SETSIZE:
            raise ValueError(f"select backend: fd {fd} is not below FD_SETSIZE ({FD_SETSIZE})")
        return 0

    cpdef netpollopen(self, int fd, PollDesc pd):
        if self.closed:
            raise ValueError("netpollopen on a closed select backend")
        self._checkfd(fd)
        if fd in self.registered:
            raise OSError(EEXIST, f"select backend: fd {fd} is already registered")
        self.registered[fd] = pd
        pd.user = fd
        if fd > self.maxfd:
            self.maxfd = fd

    cpdef netpollclose(self, int fd):
        self._checkfd(fd)
        if self.registered.pop(fd, None) is None:
            raise OSError(ENOENT, f"select backend: fd {fd} is not registered")
        FD_CLR(fd, &self.rset)
        FD_CLR(fd, &self.wset)
        while self.maxfd > self.wake.rfd and self.maxfd not in self.registered:
            self.maxfd -= 1

    cpdef netpollarm(self, PollDesc pd, int mode):
        cdef int fd = pd.fd
        self._checkfd(fd)
        if self.registered.get(fd) is not pd:
            raise OSError(ENOENT, f"select backend: netpollarm of unregistered fd {fd}")
        if mode == MODE_R or mode == MODE_RW:
            FD_SET(fd, &self.rset)
        if mode == MODE_W or mode == MODE_RW:
            FD_SET(fd, &self.wset)

    cpdef list netpoll(self, int64_t delay):
        cdef int n, nfds, fd, mode, err
        cdef bint r, w
        cdef fd_set rs, ws
        cdef timeval tv
        cdef timeval *tvp = NULL
        cdef int64_t us = delay_us(delay) if delay > 0 else 0
        cdef list to_run = []
        while True:
            # Checked on every round: a signal handler may have closed the
            # backend or changed the registrations.
            if self.closed:
                raise ValueError("netpoll on a closed select backend")
            rs = self.rset
            ws = self.wset
            nfds = self.maxfd + 1
            if delay >= 0:
                tv.tv_sec = <time_t>(us // 1000000)
                tv.tv_usec = <suseconds_t>(us % 1000000)
                tvp = &tv
            with nogil:
                n = select(nfds, &rs, &ws, NULL, tvp)
            if n >= 0:
                break
            err = errno
            if err == EBADF:
                n = self._badfds(&rs, &ws)
                if n > 0:
                    break
            if err != EINTR:
                raise OSError(err, _os.strerror(err))
            # A signal: let its Python handler run (KeyboardInterrupt leaves
            # here); with a timeout the caller recomputes its sleep.
            PyErr_CheckSignals()
            if delay > 0:
                return to_run
        for fd in range(nfds):
            if n == 0:
                break
            r = FD_ISSET(fd, &rs)
            w = FD_ISSET(fd, &ws)
            if not (r or w):
                continue
            n -= r + w
            if fd == self.wake.rfd:
                if delay != 0:
                    wakepipe_drain(&self.wake)
                continue
            mode = 0
            if r:
                mode = MODE_R
                FD_CLR(fd, &self.rset)
            if w:
                mode = MODE_RW if mode else MODE_W
                FD_CLR(fd, &self.wset)
            netpollevent(to_run, <PollDesc>self.registered[fd], mode, False)
        return to_run

    cdef int _badfds(self, fd_set *rs, fd_set *ws) noexcept:
        # select says only that some fd in the sets is bad; report every armed
        # fd that is no longer open as ready both ways, counted as select
        # counts (one per set).
        cdef int fd, n = 0
        FD_ZERO(rs)
        FD_ZERO(ws)
        for fd in range(self.maxfd + 1):
            if fd == self.wake.rfd or not (FD_ISSET(fd, &self.rset) or FD_ISSET(fd, &self.wset)):
                continue
            if fcntl(fd, F_GETFD) < 0 and errno == EBADF:
                FD_SET(fd, rs)
                FD_SET(fd, ws)
                n += 2
        return n

    cpdef close(self):
        FD_ZERO(&self.rset)
        FD_ZERO(&self.wset)
        self.maxfd = -1
        wakepipe_close(&self.wake)
        self.closed = True

    def __dealloc__(self):
        wakepipe_close(&self.wake)
