# Extern declarations shared by the backends: descriptors and wakeup channels.
cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)

cdef extern from "<fcntl.h>" nogil:
    enum:
        O_CLOEXEC
        O_NONBLOCK
        F_GETFD
        F_SETFD
        F_GETFL
        F_SETFL
        FD_CLOEXEC
    int fcntl(int fd, int cmd, ...)

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EINTR
        EAGAIN
        EBADF
        EEXIST
        ENOENT
        EINVAL
        ETIMEDOUT
