# Extern declarations for poll(2) (POSIX).
cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    enum:
        POLLIN
        POLLPRI
        POLLOUT
        POLLERR
        POLLHUP
        POLLNVAL

    int poll(pollfd *fds, nfds_t nfds, int timeout)
