# cython: language_level=3, boundscheck=False, wraparound=False
"""The asyncio loop on netpoll's runtime: the loop goroutine and the fd watchers.

One run of ``run_forever`` is one ``Sched.run(driver, end=False)``: the main
goroutine is a ``_Driver``, which runs asyncio's ready callbacks and due
timers (one asyncio iteration per step), then parks. It parks idle on
netpoll's timer heap (one Timer at the loop's next TimerHandle) and is woken
by that timer, by ``call_soon``/``call_at``/``stop`` from a goroutine, or by a
watcher delivering readiness. While callbacks are queued it yields instead,
so goroutines run and the poller is looked at between asyncio iterations.

Readiness for ``add_reader``/``add_writer`` comes from netpoll poll
descriptors: one ``_Watcher`` goroutine per fd and direction waits in the
descriptor's rg/wg semaphore. When netpollready wakes it, it appends the
asyncio handle to the loop's ready queue (asyncio's order: I/O callbacks
after the ones already queued) and parks in ``pending`` until the driver has
run that handle. asyncio's readers are level-triggered; on edge-triggered
backends (epoll, kqueue) the driver then drops the stale mark (pollreset)
and probes every pending fd with one poll(2) of timeout 0: still ready fds
are delivered again, the others go back to their semaphore. A readiness edge
that comes after the reset marks pdReady, so none is lost. Level-triggered
backends (poll, select) re-arm instead, and their next netpoll reports the
level.
"""

from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from netpoll._netpoll cimport (MODE_R, MODE_W, TIMER_READY, Park, PollDesc,
                               Timer, _Wait, _dir, netpollblock, netpollblockcommit,
                               netpollcheckerr, pdG, pdNil, pdReady,
                               pollErrClosing, pollreset)
from netpoll._sched cimport G, Sched
from netpoll._syscall cimport POLLERR, POLLHUP, POLLIN, POLLOUT, poll, poll_now, pollfd

import heapq as _heapq
from asyncio import base_events as _base_events
from asyncio import events as _events
from asyncio import format_helpers as _format_helpers
from asyncio import tasks as _tasks
from time import monotonic as _monotonic
from types import MemberDescriptorType as _MemberDescriptor

_base_call_later = _base_events.BaseEventLoop.call_later
_base_create_task = _base_events.BaseEventLoop.create_task


cdef enum:
    # _Watcher states
    W_START = 0       # queued by newproc: waits on its first run
    W_PARKED = 1      # in the descriptor's semaphore (or readied from it)
    W_DELIVERED = 2   # its handle is in the ready queue; parked in pending
    W_DONE = 3        # cancelled: exits on its next run, never touches pd

    # _Watcher.block results
    B_PARKED = 0
    B_READY = 1
    B_CLOSED = 2

    # _Driver parks
    D_YIELD = 0
    D_IDLE = 1


cdef class Core:
    """The loop's side of the runtime: its Sched, the idle driver and the watchers."""
    cdef readonly Sched sched
    cdef readonly bint edge          # the backend is edge-triggered: probe levels
    cdef public object ready         # the loop's ready deque (asyncio's _ready)
    cdef object loop
    cdef G idle                      # the driver, parked idle, or None
    cdef Timer timer                 # the loop's next deadline; arg is the idle driver
    cdef bint armed                  # timer was queued for the idle driver
    cdef list pending                # watchers whose handles the next tick runs
    cdef public bint debug           # loop._debug, mirrored by EventLoop.set_debug
    cdef public bint closed          # loop._closed, mirrored by EventLoop.close
    cdef _Driver driver
    cdef unsigned long owner         # the thread running the loop

    def __cinit__(self, Sched sched not None, loop):
        self.sched = sched
        self.loop = loop
        self.edge = bool(type(sched.backend).edge_triggered)
        self.timer = Timer()
        self.timer.kind = TIMER_READY
        self.pending = []

    def watch(self, PollDesc pd not None, str mode, handle, bint probe=False):
        """Start a watcher goroutine delivering ``handle`` when ``pd`` is ready
        for ``mode``. ``probe``: ``pd`` was registered before (a stream
        transport's), so no registration reports the fd's level; the first
        wait asks poll(2) for it."""
        cdef _Watcher w = _Watcher.__new__(_Watcher)
        w.core = self
        w.pd = pd
        w.mode = MODE_R if mode == "r" else MODE_W
        w.handle = handle
        w.probe = probe and self.edge
        w.g = self.sched.newproc(w)
        return w

    def call_soon(self, callback, *args, context=None):
        """The loop's call_soon (bound on the loop instance by EventLoop)."""
        return _call_soon(self, callback, args, context)

    def call_at(self, when, callback, *args, context=None):
        """The loop's call_at (bound on the loop instance by EventLoop)."""
        return _call_at(self, when, callback, args, context)

    def call_later(self, delay, callback, *args, context=None):
        """The loop's call_later (bound on the loop instance by EventLoop)."""
        return _call_later(self, delay, callback, args, context)

    def run(self):
        """One run_forever: run the runtime until the driver sees loop._stopping."""
        if self.driver is not None:
            # A previous run ended by an exception (KeyboardInterrupt, a lost
            # goroutine failure): its driver may still be queued or idle.
            self.driver.retired = True
            self.wake()
        self.owner = PyThread_get_thread_ident()
        cdef _Driver d = _Driver.__new__(_Driver)
        d.core = self
        d.starts = 2
        self.driver = d
        try:
            self.sched.run(d, end=False)
        finally:
            if self.driver is d and d.finished:
                self.driver = None

    def close(self):
        """End the runtime: leftover goroutines are closed and the poller released."""
        self.idle = None
        self.pending = []
        self.sched.shutdown(None)

    cdef bint fired(self):
        # The idle driver's timer fired: Timers.run has queued the driver,
        # which clears idle when it runs.
        return self.armed and self.timer.index < 0

    cpdef wake(self):
        """Make the idle driver runnable (no-op when it is not idle, and from
        another thread, which wakes the loop through its self-pipe)."""
        cdef G g = self.idle
        if g is None or PyThread_get_thread_ident() != self.owner:
            return
        self.idle = None
        if self.armed:
            self.armed = False
            if self.timer.index < 0:
                return
            self.sched.timers.delete(self.timer)
        self.sched.runqput(g)

    cpdef rearm(self, double when):
        """A TimerHandle at ``when`` (loop.time()) was added while the driver is idle."""
        if self.idle is None or self.fired() or PyThread_get_thread_ident() != self.owner:
            return
        cdef int64_t ns = _when_ns(when)
        if self.armed and ns >= self.timer.when:
            return
        self.timer.arg = self.idle
        self.sched.timers.add(self.timer, ns)
        self.armed = True

    cdef int tick(self) except -1:
        # One asyncio iteration without the poll: due timers to ready, then
        # every callback queued now (not those they queue: next tick).
        loop = self.loop
        cdef list scheduled = loop._scheduled
        ready = self.ready
        cdef double end
        if scheduled:
            end = loop.time() + loop._clock_resolution
            while scheduled:
                h = scheduled[0]
                if (_get(h, O_WHEN, '_when') if _bare_handles and type(h) is _TimerHandle
                        else h._when) >= end:
                    break
                h = _heapq.heappop(scheduled)
                _unschedule(h)
                ready.append(h)
        cdef Py_ssize_t ntodo = len(ready)
        if self.debug:
            for _ in range(ntodo):
                loop._run_handle_debug(ready.popleft())
        else:
            popleft = ready.popleft
            for _ in range(ntodo):
                h = popleft()
                if not _cancelled(h):
                    _run_handle(h)
        return 0

    cdef object next_deadline(self):
        # The earliest live TimerHandle's when, or None. Cancelled ones are
        # dropped first: from the head, or all of them once they are most of
        # a big heap (asyncio's _run_once rule).
        loop = self.loop
        cdef list scheduled = loop._scheduled
        cdef list live
        if not scheduled:
            return None
        if len(scheduled) > 100 and loop._timer_cancelled_count * 2 > len(scheduled):
            live = []
            for h in scheduled:
                if _cancelled(h):
                    _unschedule(h)
                else:
                    live.append(h)
            _heapq.heapify(live)
            loop._scheduled = scheduled = live
            loop._timer_cancelled_count = 0
        while scheduled and _cancelled(scheduled[0]):
            loop._timer_cancelled_count -= 1
            _unschedule(_heapq.heappop(scheduled))
        if not scheduled:
            return None
        h = scheduled[0]
        return _get(h, O_WHEN, '_when') if _bare_handles and type(h) is _TimerHandle else h._when

    cdef int settle(self) except -1:
        # Every pending watcher's handle has run: put each back to waiting,
        # or deliver it again when its fd is still ready (level semantics).
        cdef list pend = self.pending
        if not pend:
            return 0
        self.pending = []
        cdef _Watcher w
        cdef Py_ssize_t i, n = len(pend)
        cdef pollfd *fds
        cdef bint live
        if self.edge:
            fds = <pollfd *>malloc(n * sizeof(pollfd))
            if fds == NULL:
                raise MemoryError()
            try:
                for i in range(n):
                    w = <_Watcher>pend[i]
                    fds[i].fd = -1
                    fds[i].revents = 0
                    if w.state == W_DELIVERED and pollreset(w.pd, w.mode) == 0:
                        fds[i].fd = w.pd.fd
                        fds[i].events = POLLIN if w.mode == MODE_R else POLLOUT
                poll(fds, n, 0)
                for i in range(n):
                    w = <_Watcher>pend[i]
                    live = fds[i].revents & (fds[i].events | POLLERR | POLLHUP)
                    w.rest(live)
            finally:
                free(fds)
        else:
            for i in range(n):
                (<_Watcher>pend[i]).rest(False)
        return 0


cdef object _Handle = _events.Handle
cdef object _TimerHandle = _events.TimerHandle


# asyncio's Handle and TimerHandle are built here as their __init__ builds
# them outside debug mode, but without its Python frame: allocated by their
# type and their slots written where the slots' member descriptors say. The
# offsets are read once, and only from descriptors of the kind CPython makes
# for __slots__ (an object member, writable); a Python whose handles differ
# in any of that gets the constructors.
cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    ctypedef struct _AllocType "PyTypeObject":
        PyObject *(*tp_alloc)(_AllocType *, Py_ssize_t)

cdef enum:
    _T_OBJECT_EX = 16    # structmember.h's T_OBJECT_EX (Py_T_OBJECT_EX)
    _READONLY = 1

cdef Py_ssize_t O_CALLBACK, O_ARGS, O_CANCELLED, O_LOOP, O_TB, O_REPR, O_CONTEXT, O_SCHEDULED, O_WHEN


cdef Py_ssize_t _slot(object cls, str name) except -2:
    # The offset of slot `name` defined by cls, or -1.
    d = cls.__dict__.get(name)
    if type(d) is not _MemberDescriptor:
        return -1
    cdef PyMemberDef *m = (<PyMemberDescrObject *><PyObject *>d).d_member
    if m.type != _T_OBJECT_EX or m.flags & _READONLY or m.offset <= 0:
        return -1
    return m.offset


cdef bint _find_slots() except -1:
    global O_CALLBACK, O_ARGS, O_CANCELLED, O_LOOP, O_TB, O_REPR, O_CONTEXT, O_SCHEDULED, O_WHEN
    if (tuple(_Handle.__slots__) != ('_callback', '_args', '_cancelled', '_loop',
                                     '_source_traceback', '_repr', '__weakref__', '_context')
            or tuple(_TimerHandle.__slots__) != ('_scheduled', '_when')
            or _Handle.__init__ is object.__init__):
        return False
    offs = [_slot(_Handle, n) for n in ('_callback', '_args', '_cancelled', '_loop',
                                        '_source_traceback', '_repr', '_context')]
    offs += [_slot(_TimerHandle, n) for n in ('_scheduled', '_when')]
    if -1 in offs:
        return False
    O_CALLBACK, O_ARGS, O_CANCELLED, O_LOOP, O_TB, O_REPR, O_CONTEXT, O_SCHEDULED, O_WHEN = offs
    return True


cdef inline PyObject **_at(object o, Py_ssize_t off) noexcept:
    return <PyObject **>((<char *><PyObject *>o) + off)


cdef inline void _put(object o, Py_ssize_t off, object v) noexcept:
    # A slot's store: the new value's reference in, the old one's out.
    cdef PyObject **p = _at(o, off)
    cdef PyObject *old = p[0]
    Py_INCREF(v)
    p[0] = <PyObject *>v
    Py_XDECREF(old)


cdef inline object _get(object o, Py_ssize_t off, str name):
    # A slot's load; an unset slot raises as Python's would.
    cdef PyObject *v = _at(o, off)[0]
    if v == NULL:
        raise AttributeError(f"'{type(o).__name__}' object has no attribute '{name}'")
    return <object>v


cdef object _alloc(object cls):
    cdef _AllocType *t = <_AllocType *><PyObject *>cls
    cdef PyObject *o = t.tp_alloc(t, 0)
    if o == NULL:
        raise MemoryError()
    h = <object>o
    Py_DECREF(h)  # tp_alloc's reference is h's own
    return h


cdef inline object _fill(object h, object callback, tuple args, object loop, object context):
    _put(h, O_CONTEXT, PyContext_CopyCurrent() if context is None else context)
    _put(h, O_LOOP, loop)
    _put(h, O_CALLBACK, callback)
    _put(h, O_ARGS, args)
    _put(h, O_CANCELLED, False)
    _put(h, O_REPR, None)
    _put(h, O_TB, None)
    return h


cdef object _new_handle(object callback, tuple args, object loop, object context):
    if not _bare_handles:
        return _Handle(callback, args, loop, context)
    return _fill(_alloc(_Handle), callback, args, loop, context)


cdef object _new_timer(object when, object callback, tuple args, object loop, object context):
    if not _bare_handles:
        return _TimerHandle(when, callback, args, loop, context)
    h = _fill(_alloc(_TimerHandle), callback, args, loop, context)
    _put(h, O_WHEN, when)
    _put(h, O_SCHEDULED, False)
    return h


cdef bint _bare_handles = _find_slots()


cdef inline int _unschedule(object h) except -1:
    if _bare_handles and type(h) is _TimerHandle:
        _put(h, O_SCHEDULED, False)
    else:
        h._scheduled = False
    return 0


cdef inline bint _cancelled(object h) except -1:
    if _bare_handles and (type(h) is _Handle or type(h) is _TimerHandle):
        return bool(_get(h, O_CANCELLED, '_cancelled'))
    return bool(h._cancelled)


cdef int _run_handle(object h) except -1:
    # asyncio's Handle._run without its Python frame, for asyncio's own
    # Handle and TimerHandle (any other class runs its own _run).
    cdef tuple args
    if type(h) is not _Handle and type(h) is not _TimerHandle:
        h._run()
        return 0
    if _bare_handles:
        ctx = _get(h, O_CONTEXT, '_context')
        cb = _get(h, O_CALLBACK, '_callback')
        args = _get(h, O_ARGS, '_args')
    else:
        ctx = h._context
        cb = h._callback
        args = h._args
    try:
        PyContext_Enter(ctx)
        try:
            cb(*args)
        finally:
            PyContext_Exit(ctx)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        source = _format_helpers._format_callback_source(cb, args)
        context = {'message': f'Exception in callback {source}', 'exception': exc, 'handle': h}
        if h._source_traceback:
            context['source_traceback'] = h._source_traceback
        h._loop.call_exception_handler(context)
    return 0


# The loop's methods on asyncio's path for each callback, timer and task:
# outside debug mode each is one compiled frame with asyncio's behaviour
# (debug mode runs asyncio's own, which records source tracebacks). The
# loop's class has these; EventLoop binds Core's twins on each instance,
# which read the flags Core mirrors instead of the loop's attributes.

cdef object _call_soon(Core core, object callback, tuple args, object context):
    if core.debug:
        return core.loop._call_soon_debug(callback, args, context)
    if core.closed:
        raise RuntimeError('Event loop is closed')
    h = _new_handle(callback, args, core.loop, context)
    core.ready.append(h)
    core.wake()
    return h


cdef object _call_at(Core core, object when, object callback, tuple args, object context):
    if core.debug:
        return core.loop._call_at_debug(when, callback, args, context)
    if when is None:
        raise TypeError("when cannot be None")
    if core.closed:
        raise RuntimeError('Event loop is closed')
    timer = _new_timer(when, callback, args, core.loop, context)
    _heapq.heappush(core.loop._scheduled, timer)
    if _bare_handles:
        _put(timer, O_SCHEDULED, True)
    else:
        timer._scheduled = True
    core.rearm(when)
    return timer


cdef object _call_later(Core core, object delay, object callback, tuple args, object context):
    loop = core.loop
    if core.debug:
        return _base_call_later(loop, delay, callback, *args, context=context)
    if delay is None:
        raise TypeError('delay must not be None')
    return loop.call_at(loop.time() + delay, callback, *args, context=context)


def call_soon(self, callback, *args, context=None):
    """asyncio's call_soon (a Handle on the ready queue), then the idle loop
    goroutine is woken."""
    return _call_soon(<Core>self._core, callback, args, context)


def call_at(self, when, callback, *args, context=None):
    """asyncio's call_at (a TimerHandle on the heap), then the idle loop
    goroutine's timer is moved."""
    return _call_at(<Core>self._core, when, callback, args, context)


def call_later(self, delay, callback, *args, context=None):
    """asyncio's call_later: call_at(self.time() + delay)."""
    return _call_later(<Core>self._core, delay, callback, args, context)


def create_task(self, coro, *, name=None, context=None):
    """asyncio's create_task: a Task, or the task factory's."""
    if self._debug or self._task_factory is not None:
        return _base_create_task(self, coro, name=name, context=context)
    if self._closed:
        raise RuntimeError('Event loop is closed')
    return _tasks.Task(coro, loop=self, name=name, context=context)


def time(self):
    """asyncio's loop.time(): time.monotonic()."""
    return _monotonic()


def get_debug(self):
    return self._debug


cdef bint _level(int fd, int mode):
    # The fd is ready for mode now.
    cdef short events = POLLIN if mode == MODE_R else POLLOUT
    cdef int revents = poll_now(fd, events)
    return revents > 0 and (revents & (events | POLLERR | POLLHUP)) != 0


cdef int64_t _when_ns(double when):
    # loop.time() seconds to nanotime(); one nanosecond late rather than early.
    if when <= 0:
        return 0
    if when > 4e9:
        when = 4e9
    return <int64_t>(when * 1e9) + 1


cdef class _Driver(Park):
    # The main goroutine of one run_forever, and the Park it yields.
    cdef Core core
    cdef int how
    cdef int starts
    cdef int64_t when_ns
    cdef bint retired
    cdef bint finished

    def __next__(self):
        if self.retired:
            raise StopIteration
        cdef Core core = self.core
        core.idle = None
        core.armed = False
        if self.starts:
            # Poll once before the first tick, as asyncio's first iteration
            # does: two yields, so the watchers the poll readied deliver first.
            self.starts -= 1
            self.how = D_YIELD
            return self
        core.tick()
        core.settle()
        loop = core.loop
        if loop._stopping:
            self.finished = True
            raise StopIteration
        if core.ready:
            self.how = D_YIELD
        else:
            self.how = D_IDLE
            when = core.next_deadline()
            self.when_ns = -1 if when is None else _when_ns(when)
        return self

    cdef bint commit(self, object g) except -1:
        if self.how == D_YIELD:
            return False
        cdef Core core = self.core
        core.idle = <G>g
        if self.when_ns >= 0:
            core.timer.arg = g
            core.sched.timers.add(core.timer, self.when_ns)
            core.armed = True
        return True


cdef class _Watcher(Park):
    # One fd and direction; its own goroutine's coroutine, and the Park it yields.
    cdef Core core
    cdef PollDesc pd
    cdef int mode
    cdef int state
    cdef public object handle        # the asyncio Handle to run when ready
    cdef G g
    cdef bint probe                  # the first wait polls the level first

    def __repr__(self):
        return (f"<netpoll.aio watcher fd={self.pd.fd if self.state != W_DONE else -1} "
                f"{'r' if self.mode == MODE_R else 'w'} state={self.state}>")

    cdef int block(self) except -1:
        # netpollblock's first half: consume a pending readiness, or publish
        # pdWait (the commit turns it into pdG).
        cdef PollDesc pd = self.pd
        if netpollblock(_dir(pd, self.mode)):
            return B_READY
        cdef int err = netpollcheckerr(pd, self.mode)
        if err == 0:
            if pd.backend.arm:
                pd.backend.netpollarm(pd, self.mode)
            self.state = W_PARKED
            return B_PARKED
        _dir(pd, self.mode).g = pdNil
        # An error event (not pollable) is delivered: the callback's own
        # syscall reports the error, as after select().
        return B_CLOSED if err == pollErrClosing else B_READY

    def __next__(self):
        cdef int old, b
        cdef PollDesc pd = self.pd
        cdef _Wait gpp
        if self.state == W_DONE:
            raise StopIteration
        if self.state == W_PARKED:
            gpp = _dir(pd, self.mode)
            old = gpp.g
            gpp.g = pdNil
            if old == pdReady:
                b = B_READY
            elif netpollcheckerr(pd, self.mode) == pollErrClosing:
                b = B_CLOSED
            else:
                b = self.block()
        elif self.probe and _level(pd.fd, self.mode):
            self.probe = False
            pollreset(pd, self.mode)
            b = B_READY
        else:
            self.probe = False
            b = self.block()
        while True:
            if b == B_PARKED:
                return self
            if b == B_CLOSED:
                self.state = W_DONE
                raise StopIteration
            h = self.handle
            if h is None or not h._cancelled:
                break
            # asyncio's _process_events: a cancelled handle unregisters itself.
            loop = self.core.loop
            if self.mode == MODE_R:
                loop._remove_reader(pd.fd)
            else:
                loop._remove_writer(pd.fd)
            if self.state == W_DONE:
                raise StopIteration
            b = self.block()
        self.deliver()
        return self

    cdef void deliver(self):
        if self.handle is not None:
            self.core.ready.append(self.handle)
        self.state = W_DELIVERED
        self.core.wake()

    cdef int rest(self, bint live) except -1:
        # Called by settle for a watcher parked in pending.
        cdef int b
        if self.state == W_DONE:
            self.core.sched.runqput(self.g)  # so that it exits
            return 0
        if live:
            b = B_READY
        else:
            b = self.block()
        if b == B_PARKED:
            if not netpollblockcommit(_dir(self.pd, self.mode), self.g):
                self.core.sched.runqput(self.g)
        elif b == B_READY:
            if self.handle is not None:
                self.core.ready.append(self.handle)
            self.core.pending.append(self)
        else:
            self.state = W_DONE
            self.core.sched.runqput(self.g)
        return 0

    cdef bint commit(self, object g) except -1:
        if self.state == W_DELIVERED:
            self.core.pending.append(self)
            return True
        return netpollblockcommit(_dir(self.pd, self.mode), g)

    def cancel(self):
        """Stop watching: the goroutine exits and the descriptor holds no waiter."""
        cdef PollDesc pd = self.pd
        cdef int prev = self.state
        self.state = W_DONE
        self.handle = None
        cdef _Wait gpp = _dir(pd, self.mode)
        if prev == W_PARKED:
            if gpp.g == pdG:
                gpp.gp = None
                gpp.g = pdNil
            else:
                return  # already readied: it is queued and exits when run
            pd.backend.waiters -= 1
            self.core.sched.runqput(self.g)

    def close(self):
        # The runtime ending closes leftover goroutines: leave the semaphore
        # without queueing anything.
        cdef PollDesc pd = self.pd
        cdef _Wait gpp = _dir(pd, self.mode)
        if self.state == W_PARKED and gpp.g == pdG:
            gpp.gp = None
            gpp.g = pdNil
            pd.backend.waiters -= 1
        self.state = W_DONE
        self.handle = None
