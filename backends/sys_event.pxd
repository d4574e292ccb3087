# Extern declarations for kqueue(2) and kevent(2) (macOS, the BSDs; on Linux
# the kqueue-over-epoll shim in tests/kqueue_shim provides the same header).
from libc.stdint cimport intptr_t, uintptr_t

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec

cdef extern from "sys/event.h" nogil:
    # `struct kevent` and the function kevent() share a name in C; Cython
    # needs two.
    struct kevent_t "kevent":
        uintptr_t ident
        short filter
        unsigned short flags
        unsigned int fflags
        intptr_t data
        void *udata

    enum:
        EVFILT_READ
        EVFILT_WRITE
        EVFILT_USER
        EV_ADD
        EV_DELETE
        EV_ENABLE
        EV_CLEAR
        EV_EOF
        EV_ERROR
        NOTE_TRIGGER

    int kqueue()
    int kevent(int kq, const kevent_t *changelist, int nchanges,
               kevent_t *eventlist, int nevents, const timespec *timeout)
