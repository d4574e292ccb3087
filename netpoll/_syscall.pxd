from libc.errno cimport EINTR, errno

# The platform-gated system calls, chosen when the module that cimports this
# file is compiled (Go's internal/poll sock_cloexec.go / sys_cloexec.go and
# runtime nbpipe_pipe2.go / nbpipe_pipe.go):
#
#   accept   accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) where the kernel has it;
#            elsewhere (macOS) accept, then FD_CLOEXEC, then O_NONBLOCK
#   pipe     pipe2(O_NONBLOCK | O_CLOEXEC) where present; else pipe + fcntl
#   eventfd  the epoll backend's wakeup, Linux only; without it epoll wakes
#            through the pipe above, as poll and select always do
#
# Building with NETPOLL_PORTABLE=1 (setup.py) forces the fallbacks on Linux
# too, so that the paths macOS takes are built and tested here. The fallbacks
# leave a window between the call and FD_CLOEXEC in which a fork+exec in
# another thread inherits the descriptor; Go closes it with syscall.ForkLock,
# which Python has no equivalent of, and CPython's own socket.accept has the
# same window on those systems.
cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <unistd.h>
    #include <sys/socket.h>

    #ifdef NETPOLL_PORTABLE
    #define NETPOLL_FORCED_PORTABLE 1
    #else
    #define NETPOLL_FORCED_PORTABLE 0
    #endif
    #if !defined(NETPOLL_PORTABLE) && (defined(__linux__) || defined(__FreeBSD__) || \\
        defined(__NetBSD__) || defined(__OpenBSD__) || defined(__DragonFly__) || defined(__sun))
    #define NETPOLL_HAVE_ACCEPT4 1
    #define NETPOLL_HAVE_PIPE2 1
    #else
    #define NETPOLL_HAVE_ACCEPT4 0
    #define NETPOLL_HAVE_PIPE2 0
    #endif
    #if !defined(NETPOLL_PORTABLE) && defined(__linux__)
    #define NETPOLL_HAVE_EVENTFD 1
    #include <sys/eventfd.h>
    #else
    #define NETPOLL_HAVE_EVENTFD 0
    #endif

    /* FD_CLOEXEC and O_NONBLOCK on a descriptor just made; -1 with errno set. */
    static inline int netpoll_cloexec_nonblock(int fd) {
        int fl;
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
            return -1;
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -1;
        return 0;
    }

    /* One accept, non-blocking and close-on-exec; -1 with errno set (EINTR
       included: the caller decides whether to retry). */
    static inline int netpoll_accept(int fd) {
    #if NETPOLL_HAVE_ACCEPT4
        return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    #else
        int nfd = accept(fd, NULL, NULL), err;
        if (nfd < 0)
            return -1;
        if (netpoll_cloexec_nonblock(nfd) < 0) {
            err = errno;
            close(nfd);
            errno = err;
            return -1;
        }
        return nfd;
    #endif
    }

    /* A non-blocking, close-on-exec pipe; -1 with errno set. */
    static inline int netpoll_pipe(int p[2]) {
    #if NETPOLL_HAVE_PIPE2
        return pipe2(p, O_NONBLOCK | O_CLOEXEC);
    #else
        int err;
        if (pipe(p) < 0)
            return -1;
        if (netpoll_cloexec_nonblock(p[0]) < 0 || netpoll_cloexec_nonblock(p[1]) < 0) {
            err = errno;
            close(p[0]);
            close(p[1]);
            errno = err;
            return -1;
        }
        return 0;
    #endif
    }

    /* A non-blocking, close-on-exec eventfd, or -1 with ENOSYS where the
       build has none. */
    static inline int netpoll_eventfd(void) {
    #if NETPOLL_HAVE_EVENTFD
        return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    #else
        errno = ENOSYS;
        return -1;
    #endif
    }
    """
    bint FORCED_PORTABLE "NETPOLL_FORCED_PORTABLE"
    bint HAVE_ACCEPT4 "NETPOLL_HAVE_ACCEPT4"
    bint HAVE_PIPE2 "NETPOLL_HAVE_PIPE2"
    bint HAVE_EVENTFD "NETPOLL_HAVE_EVENTFD"
    int netpoll_accept(int fd) nogil
    int netpoll_pipe(int p[2]) nogil
    int netpoll_eventfd() nogil


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN
        POLLOUT
        POLLERR
        POLLHUP


cdef inline int poll_now(int fd, short events) noexcept nogil:
    # What fd is ready for now: the revents of a zero-timeout poll(2), which
    # consumes nothing (a recv with MSG_PEEK would take a pending reset), or
    # -1 when poll fails (errno); EINTR is retried.
    cdef pollfd p
    cdef int n
    p.fd = fd
    p.events = events
    while True:
        p.revents = 0
        n = poll(&p, 1, 0)
        if n >= 0:
            return p.revents
        if errno != EINTR:
            return -1
