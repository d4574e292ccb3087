# Declarations of the platform-neutral poller core (netpoll/_netpoll.pyx),
# shared with the backends (netpoll.backends.*) and the scheduler, which
# `cimport` them so that netpollready and the poll descriptor run at C speed.
from libc.stdint cimport int64_t, uint32_t, uint64_t

from wakepipe cimport WakePipe

# Modes, with Go's values: 'r', 'w' and 'r'+'w'.
cdef enum:
    MODE_R = 114
    MODE_W = 119
    MODE_RW = 233

# States of a direction's semaphore (Go's rg/wg; see the transition table in
# _netpoll.pyx). pdG means "a goroutine is parked here" and the goroutine
# itself sits in the direction's gp.
cdef enum:
    pdNil = 0
    pdReady = 1
    pdWait = 2
    pdG = 3

# netpollcheckerr results (Go's names); pollerror turns one into its exception.
cdef enum:
    pollNoError = 0
    pollErrClosing = 1
    pollErrTimeout = 2
    pollErrNotPollable = 3

cdef int64_t nanotime() noexcept nogil


cdef class Awaiter:
    # An awaitable that is its own iterator; subclasses give __next__ and,
    # when a suspended await must undo something, close.
    pass


cdef class Park(Awaiter):
    # A goroutine parks by yielding a Park to the scheduler (the single trap).
    # Once the goroutine has left its stack the scheduler calls commit(g);
    # False abandons the park and the goroutine is resumed at once.
    cdef bint commit(self, object g) except -1


# Timer kinds.
cdef enum:
    TIMER_READY = 1       # arg is a goroutine: make it runnable
    TIMER_DEADLINE_R = 2  # arg is a PollDesc (bits: read, write deadline)
    TIMER_DEADLINE_W = 4


cdef class Timer:
    cdef readonly int64_t when      # absolute nanotime(); meaningful only while queued
    cdef Py_ssize_t index           # position in its Timers heap, -1 when not queued
    cdef int kind
    cdef object arg
    cdef uint32_t seq
    cdef Timers timers


cdef class Timers:
    cdef list heap
    cdef void _put(self, Py_ssize_t i, Timer t)
    cdef void _up(self, Py_ssize_t i)
    cdef void _down(self, Py_ssize_t i)
    cdef int add(self, Timer t, int64_t when) except -1
    cdef int delete(self, Timer t) except -1
    cdef int64_t next_when(self)
    cdef Py_ssize_t run(self, int64_t now, list to_run) except -1


cdef class Backend:
    # netpollWaiters: goroutines parked in poll descriptors of this poller.
    # The scheduler blocks in netpoll only while this, a timer or a thread
    # hand-off can still wake someone.
    cdef public Py_ssize_t waiters
    cdef readonly bint closed
    cdef bint arm                   # level-triggered: netpollarm before each park
    cdef readonly dict registered   # fd -> PollDesc: the one map; each backend's
                                    # netpollopen adds, netpollclose removes
    # The wakeup channel of the backends that wake through a descriptor
    # (wakepipe.pxd: epoll, poll, select), behind the default netpollbreak
    # and is_poll_descriptor; a backend opens and closes it itself.
    cdef WakePipe wake
    cdef bint urgentev              # urgent_events: calls netpollreadstop
    cdef object __weakref__
    cpdef netpollinit(self)
    cpdef netpollopen(self, int fd, PollDesc pd)
    cpdef netpollclose(self, int fd)
    cpdef netpollarm(self, PollDesc pd, int mode)
    cpdef list netpoll(self, int64_t delay)
    cpdef netpollbreak(self)
    cpdef bint is_poll_descriptor(self, int fd)
    cpdef close(self)


cdef class PollDesc:
    # All fields belong to the thread running the poller that owns the
    # descriptor (its scheduler); no other thread touches them.
    cdef readonly int fd
    cdef readonly uint32_t fdseq    # incarnation, bumped on free (stale events)
    cdef readonly uint32_t slot     # index in the pollcache
    cdef readonly bint closing
    cdef readonly bint everr        # last delivered event was an error only
    cdef readonly bint readstop     # urgent data, a hang-up or an error was reported: sticky (pollskipok)
    cdef public Py_ssize_t user     # backend cookie (poll: slot in its pollfd array)
    cdef readonly Backend backend
    cdef Timers timers
    # One object per direction, Go's rg/rd/rseq/rt and wg/wd/wseq/wt; every
    # transition reaches its direction through one pointer (_dir).
    cdef _Wait rwait, wwait

    cdef inline uint64_t token(self):
        return (<uint64_t>self.slot << 32) | self.fdseq


cdef class _Wait(Park):
    # One direction of a PollDesc, and the awaitable of pollWait on it (so
    # waiting allocates nothing).
    cdef PollDesc pd
    cdef int mode                   # MODE_R or MODE_W
    cdef int g                      # pdNil / pdReady / pdWait / pdG
    cdef object gp                  # the parked goroutine when g == pdG
    cdef int64_t d                  # deadline: 0 none, > 0 nanotime, < 0 expired
    cdef uint32_t seq               # timer generation
    cdef Timer t
    cdef bint parked                # between step() returning True and the resume
    cdef int begin(self) except -1      # pollWait's entry check (await)
    cdef bint step(self) except -1      # True: parked, yield it; False: ready
    cdef void _abandon(self)


cdef inline _Wait _dir(PollDesc pd, int mode):
    # Go's `gpp := &pd.rg; if mode == 'w' { gpp = &pd.wg }`.
    return pd.rwait if mode == MODE_R else pd.wwait


# The checks of every I/O call, inline in each module that cimports them.
# They read a direction's fields as pd.rwait.x / pd.wwait.x, which Cython
# compiles to plain loads; _dir(pd, mode).x would take and drop a reference
# to the _Wait on each call.

cdef inline bint pollpending(PollDesc pd, int mode) noexcept:
    # A readiness is pending in this direction (pdReady): the next syscall
    # is likely to succeed.
    return (pd.rwait.g if mode == MODE_R else pd.wwait.g) == pdReady


cdef inline bint pollskipok(PollDesc pd) noexcept:
    # After a short read on a TCP stream socket, may the next read or
    # wait_readable park without a syscall? A short TCP read empties the
    # receive queue except where a read stops with something behind it: the
    # urgent mark (data after it), the peer's FIN or a reset (the next read
    # returns 0 or the error). A level-triggered poller reports those again
    # once armed; an edge-triggered one only if it reports them (urgent
    # data, read hang-up, hang-up, error), so the first such report sets
    # pd.readstop and turns the skip off for the descriptor's life. Orders:
    # - reported before the short read: pd.readstop is set before the
    #   reader runs again (events are translated before goroutines run), so
    #   it does not skip.
    # - queued before the short read but reported after it: its arrival
    #   queued an edge the poller has not taken yet, so the parked reader is
    #   woken by that edge (all of them map to 'r') and sets pd.readstop.
    # - arriving after the short read: new data, a new edge.
    # Unix stream sockets (a read stops after SCM_RIGHTS), pipes, files and
    # ttys never skip: the FD layer asks only for TCP.
    return pd.backend.arm or (pd.backend.urgentev and not pd.readstop)


cdef inline int64_t polldeadline(PollDesc pd, int mode) noexcept:
    # The direction's deadline as stored: 0 none, > 0 nanotime, < 0 expired.
    return pd.rwait.d if mode == MODE_R else pd.wwait.d


cdef inline int netpollcheckerr(PollDesc pd, int mode) noexcept:
    # A descriptor whose poller was closed (its runtime ended) is closed too:
    # nothing could ever wake a waiter on it.
    if pd.closing or pd.backend is None or pd.backend.closed:
        return pollErrClosing
    if polldeadline(pd, mode) < 0:
        return pollErrTimeout
    # An error-only event is reported to readers only: a writer learns the
    # specific errno from its write call.
    if mode == MODE_R and pd.everr:
        return pollErrNotPollable
    return pollNoError


cdef inline int pollreset(PollDesc pd, int mode) noexcept:
    cdef int err = netpollcheckerr(pd, mode)
    if err:
        return err
    # Only a pending readiness is dropped: pollreset runs before the first
    # syscall of an operation, and an edge that arrives after it is either
    # seen by that syscall or re-marks pdReady (no lost wakeup).
    if mode == MODE_R:
        if pd.rwait.g == pdReady:
            pd.rwait.g = pdNil
    elif pd.wwait.g == pdReady:
        pd.wwait.g = pdNil
    return pollNoError


cdef object pollerror(PollDesc pd, int code)
cdef bint netpollblock(_Wait gpp) except -1
cdef bint netpollblockcommit(_Wait gpp, object g) except -1
cdef int netpollready(list to_run, PollDesc pd, int mode) except -1
cdef int netpollevent(list to_run, PollDesc pd, int mode, bint error_only) except -1
cdef void netpollreadstop(PollDesc pd) noexcept
cdef PollDesc netpolltoken(uint64_t token)
cdef int setdeadline(list to_run, PollDesc pd, int64_t d, int mode) except -1
cdef int pollunblock(list to_run, PollDesc pd) except -1
