/* <sys/event.h> for the kqueue-over-epoll shim (kqueue_shim.c): the part of
 * the kqueue API that netpoll's kqueue backend uses, with FreeBSD's layout
 * and values. Only for building and testing that backend on Linux. */
#ifndef NETPOLL_KQUEUE_SHIM_SYS_EVENT_H
#define NETPOLL_KQUEUE_SHIM_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

struct kevent {
    uintptr_t ident;    /* fd, or the user event's number */
    short filter;
    unsigned short flags;
    unsigned int fflags;
    intptr_t data;
    void *udata;
};

#define EVFILT_READ     (-1)
#define EVFILT_WRITE    (-2)
#define EVFILT_USER     (-11)

#define EV_ADD          0x0001
#define EV_DELETE       0x0002
#define EV_ENABLE       0x0004
#define EV_CLEAR        0x0020
#define EV_ERROR        0x4000
#define EV_EOF          0x8000

#define NOTE_TRIGGER    0x01000000

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges,
           struct kevent *eventlist, int nevents, const struct timespec *timeout);

/* close(2) of a kqueue plus the shim's state for it (a real kernel needs no
 * such call). */
int kqueue_shim_close(int kq);
/* Whether fd is kq itself or one of the eventfds behind its EVFILT_USER
 * events. */
int kqueue_shim_owns(int kq, int fd);

#endif
