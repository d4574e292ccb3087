# cython: language_level=3, boundscheck=False, wraparound=False
# netpoll backend: kqueue (macOS and the BSDs that have EVFILT_USER; on Linux
# it is built over the kqueue-over-epoll shim in tests/kqueue_shim).
#
# Trigger: edge (EV_CLEAR). netpollopen adds EVFILT_READ and EVFILT_WRITE in
#   one kevent call for the fd's whole life; as with epoll, a fresh connected
#   socket reports writable at once and pollreset drops it. netpollclose
#   deletes both filters: Go relies on close(2) dropping them, but the core
#   deregisters before the close and a caller may keep the fd open.
# Wakeup: an EVFILT_USER event with Go's ident, EV_CLEAR. netpollbreak
#   triggers it only when `wakesig` was clear; only a blocking netpoll clears
#   `wakesig`. EV_CLEAR resets the event when it is delivered, so a
#   non-blocking netpoll that receives it triggers it again (the relay) for the
#   next blocking one: breaks coalesce and none is lost.
# Modes: EVFILT_READ -> 'r', and 'w' too with EV_EOF (some kernels tell the
#   writer of a pipe whose reader closed only through a read EOF; the writer
#   retries its write, which tells it the outcome); EVFILT_WRITE -> 'w'.
#   flags == EV_ERROR exactly is an error-only event (netpollevent). A socket error arrives as EV_EOF on the BSDs, so
#   it wakes both directions and the operations learn the errno from their
#   syscall.
# Stale events: udata is the PollDesc token (pollcache slot << 32 | fdseq);
#   netpolltoken drops a token whose fdseq moved on. udata is a pointer, so
#   the token fits only where pointers have 64 bits. The wakeup is recognised
#   by its filter and ident, never by udata.
# Timeout: a timespec, so nanoseconds pass through unrounded (delay_ns of
#   delay.pxd, capped at 1e6 s because Darwin rejects longer ones with EINVAL).
# Fork: a kqueue is not inherited by the child, whose descriptor of that
#   number is gone or already reused; close() in another process than the
#   creator forgets the number instead of closing it, and the core's fork
#   handler then builds a fresh kqueue and registers every fd again.

from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.string cimport memset
from posix.types cimport pid_t
from posix.unistd cimport getpid

from netpoll._netpoll cimport (Backend, PollDesc, netpollevent, netpolltoken,
                               MODE_R, MODE_W, MODE_RW)
from delay cimport delay_ns
from sys_event cimport *
from sys_unix cimport EINTR, ENOENT, ETIMEDOUT, F_SETFD, FD_CLOEXEC, errno, fcntl

import os as _os

cdef extern from *:
    """
    #ifdef NETPOLL_KQUEUE_SHIM
    #define netpoll_kqclose(kq) kqueue_shim_close(kq)
    #define netpoll_kqowns(kq, fd) kqueue_shim_owns(kq, fd)
    #define NETPOLL_KQ_ERROR_EVENTS 1
    #else
    #define netpoll_kqclose(kq) close(kq)
    #define netpoll_kqowns(kq, fd) ((fd) == (kq))
    #define NETPOLL_KQ_ERROR_EVENTS 0
    #endif
    """
    # The shim keeps per-kqueue tables that close(2) alone would leak, and
    # its EVFILT_USER events are eventfds: descriptors of the poller too.
    int kqclose "netpoll_kqclose" (int kq) nogil
    bint kqowns "netpoll_kqowns" (int kq, int fd) nogil
    # The BSDs report a socket error as EV_EOF on the filter that fired, never
    # alone; the shim maps Linux's error-only EPOLLERR to EV_ERROR.
    bint KQ_ERROR_EVENTS "NETPOLL_KQ_ERROR_EVENTS"

cdef enum:
    NEVENTS = 64

cdef uintptr_t WAKE_IDENT = 0xee1eb9f4


cdef inline void _setev(kevent_t *ev, uintptr_t ident, int filter,
                        unsigned int flags, unsigned int fflags,
                        void *udata) noexcept nogil:
    # Zeroed first: FreeBSD and NetBSD have extension fields after udata.
    memset(ev, 0, sizeof(kevent_t))
    ev.ident = ident
    ev.filter = filter
    ev.flags = flags
    ev.fflags = fflags
    ev.udata = udata


cdef inline int _kevent_mode(int filter, unsigned int flags) noexcept nogil:
    if filter == EVFILT_READ:
        return MODE_RW if flags & EV_EOF else MODE_R
    if filter == EVFILT_WRITE:
        return MODE_W
    return 0


cdef inline timespec *_timespec(int64_t delay, timespec *ts) noexcept nogil:
    if delay < 0:
        return NULL
    delay = delay_ns(delay)
    ts.tv_sec = delay // 1000000000
    ts.tv_nsec = delay % 1000000000
    return ts


def kevent_mode(int filter, unsigned int flags):
    """The mode netpoll gives an event of ``filter`` with ``flags``: MODE_R,
    MODE_W, MODE_RW, or 0 for a filter it does not use."""
    return _kevent_mode(filter, flags)


def delay_to_timespec(int64_t delay):
    """The kevent timeout for a netpoll delay: (tv_sec, tv_nsec), or None for
    NULL (block)."""
    cdef timespec ts
    if _timespec(delay, &ts) == NULL:
        return None
    return (ts.tv_sec, ts.tv_nsec)


#: The <sys/event.h> values this module was compiled with (they differ
#: between systems), for tests of kevent_mode.
CONSTANTS = {
    "EVFILT_READ": EVFILT_READ,
    "EVFILT_WRITE": EVFILT_WRITE,
    "EVFILT_USER": EVFILT_USER,
    "EV_CLEAR": EV_CLEAR,
    "EV_EOF": EV_EOF,
    "EV_ERROR": EV_ERROR,
}


cdef class KqueueBackend(Backend):
    name = "kqueue"
    edge_triggered = True
    needs_arm = False
    max_fd = None
    error_events = KQ_ERROR_EVENTS

    cdef int kq
    cdef pid_t pid          # the process that created kq
    cdef bint wakesig
    cdef kevent_t events[NEVENTS]

    def __cinit__(self):
        self.kq = -1

    cpdef netpollinit(self):
        cdef kevent_t ev
        cdef int err
        self.kq = kqueue()
        if self.kq < 0:
            PyErr_SetFromErrno(OSError)
        self.pid = getpid()
        if fcntl(self.kq, F_SETFD, FD_CLOEXEC) < 0:
            err = errno
            self._closefd()
            raise OSError(err, _os.strerror(err))
        _setev(&ev, WAKE_IDENT, EVFILT_USER, EV_ADD | EV_CLEAR, 0, NULL)
        while kevent(self.kq, &ev, 1, NULL, 0, NULL) < 0:
            err = errno
            if err != EINTR:
                self._closefd()
                raise OSError(err, _os.strerror(err))
        self.wakesig = False
        self.closed = False

    cpdef netpollopen(self, int fd, PollDesc pd):
        cdef kevent_t ch[2]
        cdef void *udata = <void *><uintptr_t>pd.token()
        _setev(&ch[0], <uintptr_t>fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, udata)
        _setev(&ch[1], <uintptr_t>fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, udata)
        if kevent(self.kq, ch, 2, NULL, 0, NULL) < 0:
            PyErr_SetFromErrno(OSError)
        self.registered[fd] = pd

    cpdef netpollclose(self, int fd):
        # One change per call: with no room for receipts kevent stops at the
        # first failing change, and a filter missing (ENOENT) must not keep
        # the other one registered.
        self.registered.pop(fd, None)
        self._delete(fd, EVFILT_READ)
        self._delete(fd, EVFILT_WRITE)

    cdef int _delete(self, int fd, int filt) except -1:
        cdef kevent_t ch
        _setev(&ch, <uintptr_t>fd, filt, EV_DELETE, 0, NULL)
        if kevent(self.kq, &ch, 1, NULL, 0, NULL) < 0 and errno != ENOENT:
            PyErr_SetFromErrno(OSError)
        return 0

    cpdef list netpoll(self, int64_t delay):
        cdef timespec ts
        cdef timespec *tp = _timespec(delay, &ts)
        cdef int n, i, mode
        cdef kevent_t *ev
        cdef PollDesc pd
        cdef list to_run = []
        if self.closed:
            raise ValueError("netpoll on a closed kqueue backend")
        while True:
            with nogil:
                n = kevent(self.kq, NULL, 0, self.events, NEVENTS, tp)
            if n >= 0:
                break
            # ETIMEDOUT is taken as "nothing happened", as Go does.
            if errno != EINTR and errno != ETIMEDOUT:
                PyErr_SetFromErrno(OSError)
            # A signal: let its Python handler run (KeyboardInterrupt leaves
            # here); with a timeout the caller recomputes its sleep.
            PyErr_CheckSignals()
            if delay > 0:
                return to_run
        for i in range(n):
            ev = &self.events[i]
            if ev.filter == EVFILT_USER and ev.ident == WAKE_IDENT:
                if delay == 0:
                    # Delivery reset the event, but the break was meant for
                    # a blocking netpoll (wakesig is still set, so no other
                    # break will come): hand it on.
                    self._trigger()
                else:
                    self.wakesig = False
                continue
            mode = _kevent_mode(ev.filter, ev.flags)
            if mode == 0:
                continue
            pd = netpolltoken(<uint64_t><uintptr_t>ev.udata)
            if pd is None:
                continue
            netpollevent(to_run, pd, mode, ev.flags == EV_ERROR)
        return to_run

    cdef int _trigger(self) except -1:
        cdef kevent_t ev
        _setev(&ev, WAKE_IDENT, EVFILT_USER, 0, NOTE_TRIGGER, NULL)
        while kevent(self.kq, &ev, 1, NULL, 0, NULL) < 0:
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
        return 0

    cpdef netpollbreak(self):
        # Runs with the GIL, like close(): kq cannot be closed under it.
        if self.wakesig or self.closed:
            return
        self.wakesig = True
        try:
            self._trigger()
        except BaseException:
            self.wakesig = False
            raise

    cpdef bint is_poll_descriptor(self, int fd):
        return fd >= 0 and self.kq >= 0 and kqowns(self.kq, fd)

    cdef void _closefd(self) noexcept:
        # In a forked child the number no longer names our kqueue (see the
        # header): forget it. Otherwise a failure (EBADF) has nothing to undo.
        if self.kq >= 0 and self.pid == getpid():
            kqclose(self.kq)
        self.kq = -1

    cpdef close(self):
        self._closefd()
        self.closed = True

    def __dealloc__(self):
        self._closefd()
