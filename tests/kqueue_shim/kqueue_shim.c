/* kqueue over epoll, so that netpoll's kqueue backend builds and runs the
 * test suite on Linux (setup.py with NETPOLL_KQUEUE_SHIM=1). It implements
 * what the backend uses and fails with EINVAL on anything else:
 *   EVFILT_READ, EVFILT_WRITE: EV_ADD|EV_CLEAR (EV_ENABLE accepted), EV_DELETE;
 *   EVFILT_USER: EV_ADD|EV_CLEAR, EV_DELETE, NOTE_TRIGGER.
 *
 * Model. kqueue() returns an epoll fd. For each kqueue the shim records which
 * filters each fd has, with their udata, and its user events. An fd with any
 * filter is in the epoll set once, as EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET,
 * and each epoll event becomes one kevent per registered filter it concerns:
 *   EVFILT_READ  on IN|RDHUP|HUP|ERR, with EV_EOF on RDHUP or HUP;
 *   EVFILT_WRITE on OUT|ERR, with EV_EOF on HUP: a hang-up alone fires the
 *   read filter only, the least a kernel reports (Darwin tells the writer
 *   of a pipe whose reader closed only through a read EOF), so the
 *   backend's own mapping of a read EV_EOF to 'w' is what wakes writers;
 *   an event that is EPOLLERR alone gives flags == EV_ERROR exactly and data
 *   EIO (the pending socket error cannot be read without clearing it).
 * Delivered flags are the registration's without EV_ADD/EV_ENABLE, as on the
 * BSDs; data carries no byte counts. A user event is a level-triggered
 * eventfd in the same epoll set: NOTE_TRIGGER writes to it and delivery
 * drains it (EV_CLEAR). Translated events that do not fit in the eventlist
 * wait in a per-kqueue queue for the next call.
 *
 * Errors are kqueue's: a failed change is returned as an EV_ERROR event when
 * the eventlist has room (and then nothing is waited for), otherwise kevent
 * returns -1 with errno (EBADF, ENOENT, EINVAL, or epoll_ctl's) and the
 * changes after it are not applied.
 *
 * Threads: one mutex serialises every change and every translation, and is
 * never held across epoll_wait, so a NOTE_TRIGGER from another thread goes
 * through while a thread is blocked in kevent. What a blocked call sees when
 * it wakes is checked again under the mutex: a filter deleted meanwhile
 * delivers nothing, and a kqueue closed meanwhile gives EBADF.
 *
 * What this cannot prove about a real kqueue:
 * - Edges are epoll's: EV_CLEAR is EPOLLET, whose edges (e.g. one per
 *   arriving segment) are not a knote's. EV_ADD on a watched fd re-polls it
 *   (EPOLL_CTL_MOD) to imitate kqueue's activation on add.
 * - EOF and errors are Linux's hang-up bits translated. A BSD reports a
 *   socket error as EV_EOF with fflags = so_error, and has no error-only
 *   events like Linux's (a tun device without an address).
 * - EVFILT_USER: triggers and deliveries are linearised by the mutex, so the
 *   kernel's race of a trigger against a delivery, which the backend's relay
 *   covers, does not happen here with a kernel's timing.
 * - Timeouts wait in whole milliseconds, rounded up; Darwin's EINVAL for long
 *   timeouts is not reproduced (the backend's cap is tested as arithmetic).
 * - Fork: a real kqueue is not inherited. The shim imitates that by closing
 *   its epoll fds and eventfds in the child (pthread_atfork), so the child
 *   finds the numbers free; the kernel's own behaviour is not exercised.
 * - close(2) of a watched fd drops its knotes on a BSD at once; the shim
 *   notices only when that number is registered again (epoll forgets the file
 *   by itself). A regular file is refused with EPERM; kqueue accepts it.
 * - A BSD wakes a thread waiting in kevent when its kqueue is closed; here it
 *   sleeps until an event or its timeout, then gets EBADF.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "sys/event.h"

#define WATCHED (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
#define USER_BIT (1ULL << 63) /* epoll data: an eventfd, else a watched fd */
#define BATCH 64
#define MAX_SEC 1000000000    /* keeps the deadline in int64 nanoseconds */

enum { F_READ = 1, F_WRITE = 2 };

struct watch {                /* the filters of one fd; kq->w is indexed by fd */
    unsigned filters;
    unsigned short rflags, wflags;
    void *rudata, *wudata;
};

struct user {                 /* one EVFILT_USER event (always EV_CLEAR) */
    uintptr_t ident;
    int efd;
    void *udata;
    struct user *next;
};

struct kq {
    unsigned long gen;        /* tells a waking kevent call its kqueue was replaced */
    struct watch *w;
    int nw;
    struct user *users;
    struct kevent *pend;      /* translated, not yet delivered; FIFO */
    int npend, cappend;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct kq **kqs;       /* indexed by the epoll fd */
static int nkqs;
static unsigned long gens;

/* arr with room for `need` zero-initialised elements, or NULL (arr intact). */
static void *grow(void *arr, int *n, int need, size_t size)
{
    int m = *n ? *n : 16;
    char *p;

    if (need <= *n)
        return arr;
    if (need > INT_MAX / 2)
        return NULL;
    while (m < need)
        m *= 2;
    p = realloc(arr, (size_t)m * size);
    if (!p)
        return NULL;
    memset(p + (size_t)*n * size, 0, (size_t)(m - *n) * size);
    *n = m;
    return p;
}

/* Closes the eventfds but takes nothing out of the epoll set: after fork the
 * set is shared with the parent, whose registrations must stay. */
static void free_kq(struct kq *k)
{
    struct user *u;

    while ((u = k->users)) {
        k->users = u->next;
        close(u->efd);
        free(u);
    }
    free(k->w);
    free(k->pend);
    free(k);
}

static struct kq *lookup(int kq)
{
    return kq >= 0 && kq < nkqs ? kqs[kq] : NULL;
}

static void purge(struct kq *k, uintptr_t ident, short filter)
{
    int i, j = 0;

    for (i = 0; i < k->npend; i++)
        if (k->pend[i].ident != ident || k->pend[i].filter != filter)
            k->pend[j++] = k->pend[i];
    k->npend = j;
}

static int apply_fd(int epfd, struct kq *k, const struct kevent *c)
{
    unsigned bit = c->filter == EVFILT_READ ? F_READ : F_WRITE;
    struct epoll_event ev;
    struct watch *w, *p;
    int fd;

    if (c->ident > INT_MAX)
        return EBADF;
    if (c->flags & ~(EV_ADD | EV_DELETE | EV_ENABLE | EV_CLEAR))
        return EINVAL;
    fd = (int)c->ident;
    w = fd < k->nw ? &k->w[fd] : NULL;
    if (c->flags & EV_DELETE || !(c->flags & EV_ADD)) {
        if (!w || !(w->filters & bit))
            return fcntl(fd, F_GETFD) < 0 ? EBADF : ENOENT;
        if (!(c->flags & EV_DELETE))
            return 0;
        w->filters &= ~bit;
        purge(k, c->ident, c->filter);
        /* Fails harmlessly when the fd was closed: that took it out already. */
        if (!w->filters)
            epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev);
        return 0;
    }
    if (!(c->flags & EV_CLEAR))
        return EINVAL; /* level-triggered filters are not emulated */
    /* kqueue refuses an ident that is not an open descriptor; checking it
     * first also keeps the table below as small as the process's fds. */
    if (fcntl(fd, F_GETFD) < 0)
        return EBADF;
    if (!w) {
        p = grow(k->w, &k->nw, fd + 1, sizeof *k->w);
        if (!p)
            return ENOMEM;
        k->w = p;
        w = &k->w[fd];
    }
    ev.events = WATCHED;
    ev.data.u64 = (uint64_t)fd;
    if (w->filters && epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
        if (errno != ENOENT)
            return errno;
        /* The fd was closed and its number reused: a real kqueue dropped the
         * old knotes at the close. */
        purge(k, c->ident, EVFILT_READ);
        purge(k, c->ident, EVFILT_WRITE);
        w->filters = 0;
    }
    if (!w->filters && epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return errno;
    /* A queued event would carry the old udata; the re-poll reports the
     * readiness again. */
    purge(k, c->ident, c->filter);
    w->filters |= bit;
    if (bit == F_READ) {
        w->rflags = EV_CLEAR;
        w->rudata = c->udata;
    } else {
        w->wflags = EV_CLEAR;
        w->wudata = c->udata;
    }
    return 0;
}

static int apply_user(int epfd, struct kq *k, const struct kevent *c)
{
    struct epoll_event ev;
    struct user *u, **pp;
    uint64_t one = 1;
    int err;

    if (c->flags & ~(EV_ADD | EV_DELETE | EV_ENABLE | EV_CLEAR) || c->fflags & ~NOTE_TRIGGER)
        return EINVAL;
    for (pp = &k->users; *pp && (*pp)->ident != c->ident; pp = &(*pp)->next)
        ;
    u = *pp;
    if (c->flags & EV_DELETE) {
        if (!u)
            return ENOENT;
        *pp = u->next;
        purge(k, u->ident, EVFILT_USER);
        epoll_ctl(epfd, EPOLL_CTL_DEL, u->efd, &ev);
        close(u->efd);
        free(u);
        return 0;
    }
    if (c->flags & EV_ADD && !(c->flags & EV_CLEAR))
        return EINVAL; /* a level-triggered user event is not emulated */
    if (!u) {
        if (!(c->flags & EV_ADD))
            return ENOENT;
        u = calloc(1, sizeof *u);
        if (!u)
            return ENOMEM;
        u->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ev.events = EPOLLIN;
        ev.data.u64 = USER_BIT | (uint32_t)u->efd;
        if (u->efd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, u->efd, &ev) < 0) {
            err = errno;
            if (u->efd >= 0)
                close(u->efd);
            free(u);
            return err;
        }
        u->ident = c->ident;
        u->next = k->users;
        k->users = u;
    }
    if (c->flags & EV_ADD)
        u->udata = c->udata;
    /* EAGAIN: the counter is saturated, i.e. triggered already. */
    if (c->fflags & NOTE_TRIGGER && write(u->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        return errno;
    return 0;
}

static int apply(int epfd, struct kq *k, const struct kevent *c)
{
    if (c->filter == EVFILT_READ || c->filter == EVFILT_WRITE)
        return apply_fd(epfd, k, c);
    if (c->filter == EVFILT_USER)
        return apply_user(epfd, k, c);
    return EINVAL;
}

/* Room was reserved in k->pend for whatever does not fit in out. */
static void put(struct kq *k, struct kevent *out, int *n, int nevents, uintptr_t ident,
                short filter, unsigned short flags, intptr_t data, void *udata)
{
    struct kevent *e = *n < nevents ? &out[(*n)++] : &k->pend[k->npend++];

    memset(e, 0, sizeof *e);
    e->ident = ident;
    e->filter = filter;
    e->flags = flags;
    e->data = data;
    e->udata = udata;
}

static void deliver(struct kq *k, const struct epoll_event *e, struct kevent *out, int *n,
                    int nevents)
{
    uint64_t d = e->data.u64, count;
    uint32_t m = e->events;
    struct watch *w;
    struct user *u;

    if (d & USER_BIT) {
        for (u = k->users; u && (uint64_t)(uint32_t)u->efd != (d & ~USER_BIT); u = u->next)
            ;
        /* Deleted since epoll_wait, or already delivered by another call. */
        if (!u || read(u->efd, &count, sizeof count) < 0)
            return;
        put(k, out, n, nevents, u->ident, EVFILT_USER, EV_CLEAR, 0, u->udata);
        return;
    }
    if (d >= (uint64_t)k->nw)
        return;
    w = &k->w[d];
    if (m == EPOLLERR) {
        if (w->filters & F_READ)
            put(k, out, n, nevents, d, EVFILT_READ, EV_ERROR, EIO, w->rudata);
        if (w->filters & F_WRITE)
            put(k, out, n, nevents, d, EVFILT_WRITE, EV_ERROR, EIO, w->wudata);
        return;
    }
    if (w->filters & F_READ && m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        put(k, out, n, nevents, d, EVFILT_READ,
            w->rflags | (m & (EPOLLRDHUP | EPOLLHUP) ? EV_EOF : 0), 0, w->rudata);
    if (w->filters & F_WRITE && m & (EPOLLOUT | EPOLLERR))
        put(k, out, n, nevents, d, EVFILT_WRITE,
            w->wflags | (m & EPOLLHUP ? EV_EOF : 0), 0, w->wudata);
}

static int take(struct kq *k, struct kevent *out, int room)
{
    int n = k->npend < room ? k->npend : room;

    if (n == 0)
        return 0;
    memcpy(out, k->pend, (size_t)n * sizeof *out);
    memmove(k->pend, k->pend + n, (size_t)(k->npend - n) * sizeof *out);
    k->npend -= n;
    return n;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Rounded up, so that kevent never returns before its timeout. */
static int wait_ms(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ns();
    if (left <= 0)
        return 0;
    left = (left + 999999) / 1000000;
    return left > INT_MAX ? INT_MAX : (int)left;
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&mu);
}

/* A kqueue is not inherited across fork on the BSDs: close the child's copies,
 * so the child finds the numbers free and shares no eventfd with the parent. */
static void fork_child(void)
{
    int fd;

    for (fd = 0; fd < nkqs; fd++)
        if (kqs[fd]) {
            free_kq(kqs[fd]);
            kqs[fd] = NULL;
            close(fd);
        }
    pthread_mutex_unlock(&mu);
}

static void install_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int kqueue(void)
{
    struct kq *k, **p;
    int fd, err;

    pthread_once(&once, install_atfork);
    k = calloc(1, sizeof *k);
    if (!k)
        return errno = ENOMEM, -1;
    /* Not close-on-exec, like kqueue(2): the caller sets FD_CLOEXEC. */
    fd = epoll_create1(0);
    if (fd < 0) {
        err = errno;
        free(k);
        return errno = err, -1;
    }
    pthread_mutex_lock(&mu);
    p = grow(kqs, &nkqs, fd + 1, sizeof *kqs);
    if (!p) {
        pthread_mutex_unlock(&mu);
        free(k);
        close(fd);
        return errno = ENOMEM, -1;
    }
    kqs = p;
    /* Closed with close(2) rather than kqueue_shim_close: drop what it left. */
    if (kqs[fd])
        free_kq(kqs[fd]);
    k->gen = ++gens;
    kqs[fd] = k;
    pthread_mutex_unlock(&mu);
    return fd;
}

int kqueue_shim_close(int kq)
{
    struct kq *k;

    pthread_mutex_lock(&mu);
    k = lookup(kq);
    if (k)
        kqs[kq] = NULL;
    pthread_mutex_unlock(&mu);
    if (k)
        free_kq(k);
    return close(kq);
}

int kqueue_shim_owns(int kq, int fd)
{
    struct user *u = NULL;
    struct kq *k;

    pthread_mutex_lock(&mu);
    k = lookup(kq);
    if (k)
        for (u = k->users; u && u->efd != fd; u = u->next)
            ;
    pthread_mutex_unlock(&mu);
    return k && (fd == kq || u);
}

int kevent(int kq, const struct kevent *changelist, int nchanges,
           struct kevent *eventlist, int nevents, const struct timespec *timeout)
{
    struct epoll_event evs[BATCH];
    int64_t deadline = -1;
    unsigned long gen;
    struct kq *k;
    struct kevent *p;
    int i, n = 0, r, ms, err;

    if (nchanges < 0 || nevents < 0 ||
        (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 ||
                     timeout->tv_nsec >= 1000000000)))
        return errno = EINVAL, -1;
    if (timeout)
        deadline = now_ns() +
                   (int64_t)(timeout->tv_sec < MAX_SEC ? timeout->tv_sec : MAX_SEC) * 1000000000 +
                   timeout->tv_nsec;
    pthread_mutex_lock(&mu);
    k = lookup(kq);
    if (!k) {
        pthread_mutex_unlock(&mu);
        return errno = EBADF, -1;
    }
    gen = k->gen;
    for (i = 0; i < nchanges; i++) {
        err = apply(kq, k, &changelist[i]);
        if (!err)
            continue;
        if (n == nevents) {
            pthread_mutex_unlock(&mu);
            return errno = err, -1;
        }
        eventlist[n] = changelist[i];
        eventlist[n].flags = EV_ERROR;
        eventlist[n].data = err;
        n++;
    }
    if (n == 0)
        n = take(k, eventlist, nevents);
    else
        nevents = n; /* errors are returned without waiting */
    pthread_mutex_unlock(&mu);
    while (n < nevents) {
        ms = n > 0 ? 0 : wait_ms(deadline);
        r = epoll_wait(kq, evs, nevents - n < BATCH ? nevents - n : BATCH, ms);
        if (r < 0)
            return n > 0 ? n : -1;
        pthread_mutex_lock(&mu);
        k = lookup(kq);
        if (!k || k->gen != gen) {
            pthread_mutex_unlock(&mu);
            return errno = EBADF, -1;
        }
        /* Each epoll event yields at most two kevents. An allocation failure
         * here loses the edges just taken from epoll. */
        if (r > 0) {
            p = grow(k->pend, &k->cappend, k->npend + 2 * r, sizeof *k->pend);
            if (!p) {
                pthread_mutex_unlock(&mu);
                return errno = ENOMEM, -1;
            }
            k->pend = p;
        }
        for (i = 0; i < r; i++)
            deliver(k, &evs[i], eventlist, &n, nevents);
        pthread_mutex_unlock(&mu);
        /* Only dropped events: wait on for what is left of the timeout. */
        if (n > 0 || ms == 0)
            break;
    }
    return n;
}
