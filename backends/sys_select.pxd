# Extern declarations for select(2) (POSIX).
cdef extern from "<sys/select.h>" nogil:
    ctypedef long time_t
    ctypedef long suseconds_t

    struct timeval:
        time_t tv_sec
        suseconds_t tv_usec

    ctypedef struct fd_set:
        pass

    enum:
        FD_SETSIZE

    void FD_SET(int fd, fd_set *fdset)
    void FD_CLR(int fd, fd_set *fdset)
    bint FD_ISSET(int fd, fd_set *fdset)
    void FD_ZERO(fd_set *fdset)

    int select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
               timeval *timeout)
