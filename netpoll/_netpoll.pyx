# cython: language_level=3, boundscheck=False, wraparound=False
"""The platform-neutral poller core: Go's runtime/netpoll.go, in Cython.

The backend protocol
====================

A backend is a subclass of ``Backend`` in ``netpoll.backends.<name>`` (one
module per kernel mechanism, sources in the top-level ``backends/`` folder).
Each instance owns one kernel poller. Go's names, Go's contracts:

netpollinit()
    Create the kernel poller and the wakeup channel; both close-on-exec.
netpollopen(fd, pd)
    Register ``fd`` for read *and* write for its whole life, with
    ``pd.token()`` (pollcache slot << 32 | fdseq) as the kernel cookie.
    Edge-triggered where the kernel allows it. Raises OSError on failure.
    On success ``registered[fd] = pd``: that dict is the one fd -> PollDesc
    map, which the backends use for their own lookups too.
netpollclose(fd)
    Deregister ``fd`` and drop it from ``registered`` (even when the kernel
    call fails); always called before ``close(2)`` of the fd.
netpollarm(pd, mode)
    Level-triggered backends only (``needs_arm``): a goroutine is about to
    park on ``mode``; add that interest. The interest is dropped again when it
    fires (one-shot), as Go's AIX poller does.
netpoll(delay)
    Wait for events: ``delay < 0`` blocks, ``0`` polls, ``> 0`` waits at most
    that many nanoseconds. EINTR: an empty result if ``delay > 0`` (the caller
    recomputes its sleep), otherwise retry; a signal handler that raises
    (KeyboardInterrupt) propagates. Every event is translated into a mode
    and whether it is an error and nothing else, and handed to
    ``netpollevent``; the list it builds (the
    goroutines made runnable) is the result. Events whose token's fdseq is
    stale are dropped. A backend touches no field of a PollDesc but ``user``.
netpollbreak()
    Wake a blocked ``netpoll`` from any thread. Breaks coalesce: at most one
    wakeup is in flight, and only a blocking ``netpoll`` consumes it, so a
    break is never lost.

Event to mode: readable, read hang-up, hang-up and error give 'r'; writable,
hang-up and error give 'w'. netpollevent holds the rest: an event that is an
error and nothing else sets the descriptor's event error (reported to readers
as NotPollableError); any other event clears it.

Capabilities, as class attributes: ``name``, ``edge_triggered``,
``needs_arm``, ``max_fd`` (None when unlimited), ``error_events`` (the kernel
can report an error alone, so ``everr`` can be set), ``urgent_events`` (the
backend calls ``netpollreadstop`` before ``netpollevent`` for an event that
reports urgent data, a hang-up or an error, so an edge-triggered backend lets the FD layer skip the
read after a short TCP read; see pollskipok).

Renames from Go: netpollBreak -> netpollbreak; pollDesc -> PollDesc; Go's
per-direction fields (rg/rd/rseq/rt, wg/wd/wseq/wt) are one _Wait object per
direction (g, d, seq, t), reached as Go reaches ``gpp``; the parked
goroutine pointer that Go stores in rg/wg lives in ``gp`` with the state pdG.
"""

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t

from wakepipe cimport wakepipe_break, wakepipe_init, wakepipe_owns

import errno as _errno
import os as _os
import stat as _stat
import weakref as _weakref

from netpoll.errors import (ClosedError, DeadlineExceededError,
                            NetpollError, NotPollableError)


cdef extern from *:
    """
    /* CPython's own monotonic clock, the one behind time.monotonic(): on
       Linux and the BSDs CLOCK_MONOTONIC, on macOS mach_absolute_time()
       (CLOCK_UPTIME_RAW, which stops during sleep, while Darwin's
       CLOCK_MONOTONIC does not), CLOCK_HIGHRES on Solaris. Asking CPython
       instead of naming a clock keeps the two the same clock everywhere. */
    #if PY_VERSION_HEX >= 0x030D0000
    static inline int64_t netpoll_nanotime(void) {
        PyTime_t t;
        (void)PyTime_MonotonicRaw(&t);   /* no GIL needed */
        return (int64_t)t;
    }
    #else
    #define netpoll_nanotime() ((int64_t)_PyTime_GetMonotonicClock())
    #endif
    """
    int64_t netpoll_nanotime() noexcept nogil


cdef int64_t nanotime() noexcept nogil:
    # The clock of time.monotonic(), so deadlines given in netpoll.now()
    # seconds compare directly with timers.
    return netpoll_nanotime()


def monotonic_ns():
    """nanotime(): the timer clock, in nanoseconds."""
    return nanotime()


cdef int _mode(object mode) except -1:
    if mode == 'r' or mode == MODE_R:
        return MODE_R
    if mode == 'w' or mode == MODE_W:
        return MODE_W
    if mode == 'rw' or mode == MODE_RW:
        return MODE_RW
    raise ValueError(f"mode must be 'r', 'w' or 'rw', not {mode!r}")


# ---------------------------------------------------------------------------
# Parking
# ---------------------------------------------------------------------------

cdef class Awaiter:
    # The generator protocol around __next__, for the coroutine that awaits
    # one: send is next (the scheduler resumes with None), throw and close
    # undo a suspended await (run() closing leftovers), then throw re-raises.

    def __await__(self):
        return self

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        self.close()
        raise typ if val is None else val

    def close(self):
        pass


cdef class Park(Awaiter):
    cdef bint commit(self, object g) except -1:
        return True


# ---------------------------------------------------------------------------
# Timers: a binary heap of Timer objects, each knowing its index so that a
# deadline can be moved or stopped in O(log n).
# ---------------------------------------------------------------------------

cdef class Timer:
    def __cinit__(self):
        self.index = -1

    @property
    def queued(self):
        return self.index >= 0


cdef inline Timer _hat(list h, Py_ssize_t i):
    return <Timer>PyList_GET_ITEM(h, i)


cdef class Timers:
    def __cinit__(self):
        self.heap = []

    def __len__(self):
        return len(self.heap)

    cdef void _put(self, Py_ssize_t i, Timer t):
        self.heap[i] = t
        t.index = i

    cdef void _up(self, Py_ssize_t i):
        cdef list h = self.heap
        cdef Timer t = _hat(h, i)
        cdef Py_ssize_t p
        while i > 0:
            p = (i - 1) >> 1
            if _hat(h, p).when <= t.when:
                break
            self._put(i, _hat(h, p))
            i = p
        self._put(i, t)

    cdef void _down(self, Py_ssize_t i):
        cdef list h = self.heap
        cdef Py_ssize_t n = PyList_GET_SIZE(h), c
        cdef Timer t = _hat(h, i)
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and _hat(h, c + 1).when < _hat(h, c).when:
                c += 1
            if t.when <= _hat(h, c).when:
                break
            self._put(i, _hat(h, c))
            i = c
        self._put(i, t)

    cdef int add(self, Timer t, int64_t when) except -1:
        # Adds t, or moves it when it is already queued here.
        if t.index >= 0:
            t.when = when
            self._up(t.index)
            self._down(t.index)
            return 0
        t.when = when
        t.timers = self
        t.index = len(self.heap)
        self.heap.append(t)
        self._up(t.index)
        return 0

    cdef int delete(self, Timer t) except -1:
        cdef Py_ssize_t i = t.index
        if i < 0:
            return 0
        cdef Timer last = self.heap.pop()
        t.index = -1
        if last is not t:
            self._put(i, last)
            self._up(i)
            self._down(last.index)
        return 0

    cdef int64_t next_when(self):
        if not self.heap:
            return -1
        return _hat(self.heap, 0).when

    cdef Py_ssize_t run(self, int64_t now, list to_run) except -1:
        # Fires every timer due at `now`; returns how many fired.
        cdef Py_ssize_t fired = 0
        cdef Timer t
        while self.heap and _hat(self.heap, 0).when <= now:
            t = _hat(self.heap, 0)
            self.delete(t)
            fired += 1
            if t.kind == TIMER_READY:
                to_run.append(t.arg)
            else:
                netpolldeadlineimpl(to_run, <PollDesc>t.arg, t.seq,
                                    t.kind & TIMER_DEADLINE_R,
                                    t.kind & TIMER_DEADLINE_W)
        return fired

    # Python-level access, for tests.
    def next_deadline(self):
        """nanotime() of the earliest timer, or -1 when there is none."""
        return self.next_when()

    def run_due(self, int64_t now):
        """Fire the timers due at ``now``; return the goroutines they readied."""
        cdef list to_run = []
        self.run(now, to_run)
        return to_run


# ---------------------------------------------------------------------------
# The pollcache: poll descriptors are never freed, only recycled, and each
# recycling bumps fdseq, so a kernel cookie (slot << 32 | fdseq) that outlives
# its registration always names a live PollDesc whose fdseq no longer
# matches: the event is dropped (Go issue 59545).
# ---------------------------------------------------------------------------

cdef list _pollcache = []
cdef list _pdfree = []


cdef PollDesc netpolltoken(uint64_t token):
    cdef uint64_t slot = token >> 32
    cdef PollDesc pd
    if slot >= <uint64_t>PyList_GET_SIZE(_pollcache):
        return None
    pd = <PollDesc>PyList_GET_ITEM(_pollcache, slot)
    if pd.fdseq != <uint32_t>token:
        return None
    return pd


def lookup_token(uint64_t token):
    """The PollDesc a kernel cookie names, or None when it is stale."""
    return netpolltoken(token)


# ---------------------------------------------------------------------------
# The poll descriptor
#
# Each direction (a _Wait, reached through _dir) holds a binary semaphore g:
#
#   from     to       who                        when
#   pdNil    pdReady  netpollunblock (ioready)   readiness, nobody waits: kept
#   pdReady  pdReady  netpollunblock (ioready)   repeated readiness coalesces
#   pdReady  pdNil    netpollblock               a waiter consumes it, no park
#   pdReady  pdNil    pollreset                  discard before the syscall
#   pdNil    pdWait   netpollblock               about to park
#   pdWait   pdG      netpollblockcommit         the scheduler commits the park
#   pdWait   pdReady  netpollunblock (ioready)   readiness raced the park: the
#                                                commit fails, no sleep
#   pdWait   pdNil    netpollunblock (timeout,   the commit fails; the waiter
#                     close)                     re-checks errors
#   pdG      pdReady  netpollunblock (ioready)   wake the goroutine
#   pdG      pdNil    netpollunblock (timeout,   wake the goroutine
#                     close)
#   pdReady  pdNil    the resumed waiter         it takes the readiness it was
#   pdNil    pdNil                               woken for (or finds none and
#                                                re-checks errors)
#
# Anything else is a double wait. At most one waiter per direction: the FD
# layer's fdMutex guarantees it.
# ---------------------------------------------------------------------------

#: netpollcheckerr's codes, for PollDesc.check.
POLL_NO_ERROR = pollNoError
POLL_ERR_CLOSING = pollErrClosing
POLL_ERR_TIMEOUT = pollErrTimeout
POLL_ERR_NOT_POLLABLE = pollErrNotPollable


cdef object pollerror(PollDesc pd, int code):
    # The one mapping from a poll error code to what the caller raises (Go's
    # internal/poll convertErr).
    if code == pollErrClosing:
        return ClosedError()
    if code == pollErrTimeout:
        return DeadlineExceededError()
    if code == pollErrNotPollable:
        return NotPollableError(pd.fd, "an error event and no readiness")
    raise NetpollError(f"netpoll: unknown poll error code {code}")


cdef class PollDesc:
    def __cinit__(self):
        self.fd = -1
        self.user = -1
        self.rwait = _Wait.__new__(_Wait)
        self.rwait.pd = self
        self.rwait.mode = MODE_R
        self.wwait = _Wait.__new__(_Wait)
        self.wwait.pd = self
        self.wwait.mode = MODE_W

    def __repr__(self):
        return (f"<PollDesc fd={self.fd} seq={self.fdseq} rg={self.sema('r')!r} "
                f"wg={self.sema('w')!r}{' closing' if self.closing else ''}>")

    @property
    def token(self):
        return self.token()

    def wait(self, mode):
        """Go's pollWait, awaited by a goroutine: returns when ``mode`` is ready.

        Raises ClosedError, DeadlineExceededError, or NotPollableError for an
        error-only event on a read.
        """
        return _dir1(self, mode)

    def prepare(self, mode):
        """Go's pollReset: fail fast on close/deadline, else drop stale readiness."""
        cdef int m = _mode(mode)
        cdef int err = pollreset(self, m)
        if err:
            raise pollerror(self, err)

    def set_deadline(self, int64_t d, mode):
        """Go's pollSetDeadline with an absolute deadline: 0 none, < 0 expired,
        > 0 a nanotime(). Returns the goroutines it woke."""
        cdef list to_run = []
        setdeadline(to_run, self, d, _mode(mode))
        return to_run

    def evict(self):
        """Go's pollUnblock: mark closing and wake both directions. Returns the woken."""
        cdef list to_run = []
        pollunblock(to_run, self)
        return to_run

    # -- test support (Go's export_test.go): thin wrappers over the paths
    # above, for the conformance suite, which drives backends with waiters
    # that are not goroutines.

    def sema(self, mode):
        """One direction's state: pdNil (0), pdReady (1), pdWait (2), or the
        parked waiter itself."""
        cdef _Wait w = _dir1(self, mode)
        return w.gp if w.g == pdG else w.g

    def check(self, mode):
        """netpollcheckerr as a code: POLL_NO_ERROR, POLL_ERR_CLOSING,
        POLL_ERR_TIMEOUT or POLL_ERR_NOT_POLLABLE."""
        return netpollcheckerr(self, _mode(mode))

    def park(self, mode, waiter):
        """pollWait for a waiter that is not a goroutine, through the
        goroutine's own steps (begin, step, commit, as the scheduler drives
        them).

        Returns True when a pending readiness was consumed, False when
        ``waiter`` is now parked (netpollready will return it), and raises
        when the descriptor is closing or past its deadline. A previous
        waiter that was woken but never resumed is dropped first, as run()
        drops a woken goroutine, leaving the readiness it was woken for
        pending.
        """
        cdef _Wait w = _dir1(self, mode)
        if w.parked and w.g != pdG:
            w._abandon()
        w.begin()
        while w.step():
            if w.commit(waiter):
                return False
        return True

    def resume(self, mode):
        """What the waiter parked on ``mode`` does when it runs again after
        its wake: True when the readiness was there to take; raises the
        error that woke it; False when it would park again (a timer whose
        deadline moved woke it)."""
        cdef _Wait w = _dir1(self, mode)
        if not w.parked or w.g == pdG:
            raise NetpollError("netpoll: resume of a waiter that was not woken")
        if w.step():
            w._abandon()
            return False
        return True

    def deadlines(self):
        """(rd, wd) as stored: 0 none, > 0 nanotime(), < 0 expired."""
        return (self.rwait.d, self.wwait.d)


cdef _Wait _dir1(PollDesc pd, object mode):
    cdef int m = _mode(mode)
    if m == MODE_RW:
        raise ValueError("a wait is on one direction: 'r' or 'w'")
    return _dir(pd, m)


cdef bint netpollblock(_Wait gpp) except -1:
    # Go's netpollblock up to the park: consume a pending readiness (True),
    # or publish pdWait (False). The caller must then re-check errors (close
    # and deadlines store their state first and read g second, so one side
    # always sees the other), park, and commit with netpollblockcommit.
    if gpp.g == pdReady:
        gpp.g = pdNil
        return True
    if gpp.g != pdNil:
        raise NetpollError("netpoll: double wait")
    gpp.g = pdWait
    return False


cdef bint netpollblockcommit(_Wait gpp, object g) except -1:
    # pdWait -> pdG. Any other state means a readiness, timeout or close came
    # between netpollblock and the park: the goroutine must not sleep.
    if gpp.g != pdWait:
        return False
    gpp.g = pdG
    gpp.gp = g
    gpp.pd.backend.waiters += 1
    return True


cdef int netpollunblock(list to_run, _Wait gpp, bint ioready) except -1:
    cdef int old = gpp.g
    if old == pdReady:
        return 0
    # Timeouts and close never leave a pending mark: the next waiter checks
    # errors before it parks.
    if old == pdNil and not ioready:
        return 0
    gpp.g = pdReady if ioready else pdNil
    if old == pdG:
        g = gpp.gp
        gpp.gp = None
        gpp.pd.backend.waiters -= 1
        to_run.append(g)
    return 0


cdef int netpollready(list to_run, PollDesc pd, int mode) except -1:
    if mode == MODE_R or mode == MODE_RW:
        netpollunblock(to_run, pd.rwait, True)
    if mode == MODE_W or mode == MODE_RW:
        netpollunblock(to_run, pd.wwait, True)
    return 0


cdef int netpollevent(list to_run, PollDesc pd, int mode, bint error_only) except -1:
    # The one entry of a backend's event: the event error is set by an event
    # that is an error and nothing else and cleared by any other.
    pd.everr = error_only
    return netpollready(to_run, pd, mode)


cdef void netpollreadstop(PollDesc pd) noexcept:
    # A backend saw urgent (out-of-band) data, a hang-up or an error on pd,
    # before its netpollevent: no more skipped reads on it (pollskipok).
    pd.readstop = True


cdef class _Wait(Park):
    # Go's pollWait as a hand-written awaitable. Its iterator runs
    # netpollblock, yields itself to the scheduler (which calls commit), and
    # when resumed takes g the way netpollblock's tail does.

    def __await__(self):
        self.begin()
        return self

    def __next__(self):
        if self.step():
            return self
        raise StopIteration

    cdef int begin(self) except -1:
        # poll_runtime_pollWait up to its netpollblock loop: the first check,
        # then a level-triggered backend's interest (one-shot, so it stays
        # armed until it fires, across a wake by a timer that moved). Whatever
        # runs from here to step's re-check (a backend's netpollarm, another
        # thread) may close the descriptor or expire its deadline.
        if self.parked:
            raise NetpollError("netpoll: double wait")
        cdef PollDesc pd = self.pd
        cdef int err = netpollcheckerr(pd, self.mode)
        if err:
            raise pollerror(pd, err)
        if pd.backend.arm:
            pd.backend.netpollarm(pd, self.mode)
        return 0

    cdef bint step(self) except -1:
        # True: parked, yield self to the scheduler; False: the I/O is ready.
        cdef PollDesc pd = self.pd
        cdef int old, err
        if self.parked:
            # netpollblock's tail: take what woke us, without losing a
            # readiness that came with it.
            self.parked = False
            old = self.g
            self.g = pdNil
            if old == pdReady:
                return False
            if old != pdNil:
                raise NetpollError("netpoll: corrupted polldesc")
            err = netpollcheckerr(pd, self.mode)
            if err:
                raise pollerror(pd, err)
            # Woken by a timer whose deadline was moved before we ran: wait on.
        if netpollblock(self):
            return False
        # The re-check after publishing pdWait: close and deadlines store
        # their state first and read g second, so a close or deadline that
        # came since begin's check is seen either here or by them (they find
        # pdWait and make the commit fail).
        err = netpollcheckerr(pd, self.mode)
        if err:
            self.g = pdNil
            raise pollerror(pd, err)
        self.parked = True
        return True

    def close(self):
        self._abandon()

    cdef void _abandon(self):
        # The parked goroutine is being cancelled (run() closing leftovers):
        # take it out of the semaphore so nothing wakes a dead coroutine.
        if not self.parked:
            return
        self.parked = False
        if self.g == pdG:
            self.gp = None
            self.pd.backend.waiters -= 1
        if self.g != pdReady:
            self.g = pdNil

    cdef bint commit(self, object g) except -1:
        return netpollblockcommit(self, g)


# ---------------------------------------------------------------------------
# Deadlines (Go's pollSetDeadline and netpolldeadlineimpl)
# ---------------------------------------------------------------------------

cdef int _arm(_Wait gpp, int64_t when, int kind) except -1:
    cdef Timer t = gpp.t
    if t is None:
        t = gpp.t = Timer()
        t.arg = gpp.pd
    t.kind = kind
    t.seq = gpp.seq
    gpp.pd.timers.add(t, when)
    return 0


cdef int setdeadline(list to_run, PollDesc pd, int64_t d, int mode) except -1:
    if pd.closing:
        return 0
    if pd.timers is None:
        raise OSError(_errno.EINVAL, "file type does not support deadline")
    cdef _Wait r = pd.rwait, w = pd.wwait
    cdef int64_t rd0 = r.d, wd0 = w.d
    cdef bint combo0 = rd0 > 0 and rd0 == wd0
    if mode == MODE_R or mode == MODE_RW:
        r.d = d
    if mode == MODE_W or mode == MODE_RW:
        w.d = d
    cdef bint combo = r.d > 0 and r.d == w.d
    cdef bint rrun = r.t is not None and r.t.index >= 0
    cdef bint wrun = w.t is not None and w.t.index >= 0
    # Read timer; when both deadlines are equal it serves both directions
    # and no write timer runs. Bumping seq makes a callback that was
    # already popped for the old deadline a no-op.
    if r.d != rd0 or combo != combo0 or not rrun:
        r.seq += 1
        if r.d > 0:
            _arm(r, r.d, TIMER_DEADLINE_R | TIMER_DEADLINE_W if combo else TIMER_DEADLINE_R)
        elif rrun:
            pd.timers.delete(r.t)
    if w.d != wd0 or combo != combo0 or not wrun:
        w.seq += 1
        if w.d > 0 and not combo:
            _arm(w, w.d, TIMER_DEADLINE_W)
        elif wrun:
            pd.timers.delete(w.t)
    # A deadline in the past wakes the blocked operation now; it returns
    # a timeout.
    if r.d < 0:
        netpollunblock(to_run, r, False)
    if w.d < 0:
        netpollunblock(to_run, w, False)
    return 0


cdef int netpolldeadlineimpl(list to_run, PollDesc pd, uint32_t seq,
                             bint read, bint write) except -1:
    # The deadline changed, or the descriptor was closed or reused, since
    # this timer was armed: ignore it. A combined timer is the read one.
    if seq != (pd.rwait.seq if read else pd.wwait.seq):
        return 0
    if read:
        pd.rwait.d = -1
        netpollunblock(to_run, pd.rwait, False)
    if write:
        pd.wwait.d = -1
        netpollunblock(to_run, pd.wwait, False)
    return 0


cdef int pollunblock(list to_run, PollDesc pd) except -1:
    if pd.closing:
        raise NetpollError("runtime: unblock on closing polldesc")
    pd.closing = True
    cdef _Wait gpp
    for gpp in (pd.rwait, pd.wwait):
        gpp.seq += 1
        netpollunblock(to_run, gpp, False)
        if gpp.t is not None:
            pd.timers.delete(gpp.t)
    return 0


# ---------------------------------------------------------------------------
# pollopen / pollclose (Go's poll_runtime_pollOpen / pollClose)
# ---------------------------------------------------------------------------

def pollopen(Backend backend, int fd, Timers timers=None):
    """Register ``fd`` with ``backend`` and return its PollDesc.

    A negative or closed fd is an OSError(EBADF); a regular file or a
    directory is a NotPollableError on every backend (epoll refuses them with
    EPERM, poll and select would report them always ready).
    """
    if backend.closed:
        raise ValueError("pollopen on a closed backend")
    if fd < 0:
        raise OSError(_errno.EBADF, f"pollopen: bad file descriptor {fd}")
    try:
        st = _os.fstat(fd)
    except OSError as e:
        raise OSError(e.errno, f"pollopen: fd {fd}: {e.strerror}") from None
    if _stat.S_ISREG(st.st_mode) or _stat.S_ISDIR(st.st_mode):
        raise NotPollableError(fd, "regular files and directories are not pollable")
    if fd in backend.registered:
        raise OSError(_errno.EEXIST, f"pollopen: fd {fd} is already registered")
    cdef PollDesc pd
    if _pdfree:
        pd = _pdfree.pop()
    else:
        pd = PollDesc()
        pd.slot = len(_pollcache)
        _pollcache.append(pd)
    if pd.rwait.g == pdG or pd.wwait.g == pdG:
        raise NetpollError("runtime: blocked write on free polldesc")
    if pd.fdseq == 0:
        pd.fdseq = 1
    pd.fd = fd
    pd.closing = False
    pd.everr = False
    pd.readstop = False
    cdef _Wait gpp
    for gpp in (pd.rwait, pd.wwait):
        gpp.seq += 1
        gpp.g = pdNil
        gpp.d = 0
        gpp.parked = False
    pd.user = -1
    pd.backend = backend
    pd.timers = timers
    try:
        backend.netpollopen(fd, pd)
    except OSError as e:
        _pdfree_push(pd)
        if e.errno == _errno.EPERM:
            raise NotPollableError(fd) from None
        raise
    except BaseException:
        _pdfree_push(pd)
        raise
    return pd


cdef void _pdfree_push(PollDesc pd):
    # Bumping fdseq (never to 0, which would disable the check) is what
    # makes every cookie of the old incarnation stale.
    pd.fdseq += 1
    if pd.fdseq == 0:
        pd.fdseq = 1
    pd.fd = -1
    pd.backend = None
    pd.timers = None
    pd.rwait.t = None
    pd.wwait.t = None
    _pdfree.append(pd)


def pollclose(PollDesc pd):
    """Deregister and free ``pd``; it must have been evicted first."""
    if not pd.closing:
        raise NetpollError("runtime: close polldesc w/o unblock")
    if pd.rwait.g >= pdWait or pd.wwait.g >= pdWait:
        raise NetpollError("runtime: blocked read/write on closing polldesc")
    cdef Backend backend = pd.backend
    if backend is None:
        raise NetpollError("runtime: pollclose of a free polldesc")
    try:
        if backend.closed:
            backend.registered.pop(pd.fd, None)
        else:
            backend.netpollclose(pd.fd)
    finally:
        _pdfree_push(pd)


# ---------------------------------------------------------------------------
# Backend base class and fork handling
# ---------------------------------------------------------------------------

cdef object _live = _weakref.WeakSet()


cdef class Backend:
    name = "abstract"
    edge_triggered = False
    needs_arm = False
    max_fd = None
    error_events = True
    urgent_events = False

    def __cinit__(self, *args, **kwargs):
        self.registered = {}
        self.arm = type(self).needs_arm
        self.urgentev = type(self).urgent_events
        wakepipe_init(&self.wake)

    def __init__(self):
        self.netpollinit()
        _live.add(self)

    cpdef netpollinit(self):
        raise NotImplementedError

    cpdef netpollopen(self, int fd, PollDesc pd):
        raise NotImplementedError

    cpdef netpollclose(self, int fd):
        raise NotImplementedError

    cpdef netpollarm(self, PollDesc pd, int mode):
        raise NetpollError(f"runtime: unused netpollarm on {self.name}")

    cpdef list netpoll(self, int64_t delay):
        raise NotImplementedError

    cpdef netpollbreak(self):
        if not self.closed:
            wakepipe_break(&self.wake)

    cpdef bint is_poll_descriptor(self, int fd):
        return wakepipe_owns(&self.wake, fd)

    cpdef close(self):
        """Release the kernel poller and the wakeup channel; idempotent."""
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _afterfork(self):
        # The child shares the parent's kernel poller (epoll) or has lost it
        # (kqueue), and shares the wakeup channel: build fresh ones, without
        # deregistering anything from the parent's, then register again every
        # descriptor and re-arm the interests of parked waiters.
        if self.closed:
            return
        cdef list fds = list(self.registered.items())
        self.close()
        self.registered.clear()
        self.closed = False
        self.netpollinit()
        cdef PollDesc pd
        for fd, pd in fds:
            self.netpollopen(fd, pd)
            if self.arm:
                if pd.rwait.g == pdG:
                    self.netpollarm(pd, MODE_R)
                if pd.wwait.g == pdG:
                    self.netpollarm(pd, MODE_W)


def _afterfork_child():
    for b in list(_live):
        b._afterfork()


_os.register_at_fork(after_in_child=_afterfork_child)
