# cython: language_level=3, boundscheck=False, wraparound=False
"""The goroutine scheduler: Go's runtime/proc.go, for one thread.

A goroutine (G) is a coroutine driven by Sched. It parks by yielding a Park
(the only trap); once it is off its stack the scheduler calls park.commit(g),
which hands g to whoever will ready it (a poll descriptor's rg/wg, a timer, a
channel's wait queue). A commit that returns False means the reason to sleep
is already gone, and g goes straight back on the run queue.

One Sched runs per thread that calls run() (its owner). Other threads,
and Python signal handlers, talk to it only through `injected` (under
`lock`) followed by netpollbreak. A signal handler runs on the main thread
between bytecodes, possibly while the owner is inside backend.netpoll (the
backend runs handlers on EINTR, then waits again): whatever a handler makes
runnable there must cut that wait short, so runqput breaks the poller while
`inpoll` is set. No Python code runs while `lock` is held, so a handler can
never interrupt its holder on the same thread.

A signal delivered to another thread never interrupts the owner's wait: in
the main thread the runtime points signal.set_wakeup_fd at a pipe registered
with its poller, so every signal makes netpoll return and the handlers run.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int64_t

import os as _os
import signal as _signal
import threading as _threading
import weakref as _weakref
from numbers import Real as _Real

from netpoll._netpoll cimport (Backend, Park, PollDesc, Timer, Timers, _Wait,
                               nanotime, TIMER_READY)
from netpoll._netpoll import pollclose, pollopen
from netpoll import _syscall
from netpoll.errors import DeadlockError, NetpollError

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident()

cdef extern from "Python.h":
    enum:
        PYGEN_RETURN
        PYGEN_NEXT
        PYGEN_ERROR
    # Declared without an exception check: execute tests for PYGEN_ERROR
    # itself, so resuming a goroutine sets up no handler (a try block saves
    # and restores the thread's exception state on every entry); gofail,
    # off that path, takes the pending exception over.
    int PyIter_Send(object iter, object arg, PyObject **presult)


cdef object _tls = _threading.local()


cdef int _sigforward(int r, int fd) except -1:
    # Signal numbers written to our pipe r, on to the wakeup fd `fd`.
    while True:
        try:
            data = _os.read(r, 512)
        except BlockingIOError:
            return 0
        if not data:
            return 0
        try:
            _os.write(fd, data)
        except OSError:
            return 0  # theirs is full: it is readable, its reader will look


# The runtime that started last and its thread: a lookup that skips the
# thread-local when the caller is that thread (the common, single-runtime
# case); any other thread reads the thread-local.
cdef Sched _last = None
cdef unsigned long _last_owner = 0


cdef inline object cursched():
    if _last is not None and PyThread_get_thread_ident() == _last_owner:
        return _last
    return getattr(_tls, "sched", None)


cdef Sched getsched():
    cdef object s = cursched()
    if s is None:
        raise RuntimeError("no netpoll runtime is running in this thread (use netpoll.run)")
    return <Sched>s


# ---------------------------------------------------------------------------
# Goroutines
# ---------------------------------------------------------------------------

cdef class G:
    """A goroutine's handle: ``await g`` returns its result or raises its exception."""

    def __repr__(self):
        state = "done" if self.done else "running"
        return f"<goroutine {self.goid} {state} {self.coro!r}>"

    def __await__(self):
        return _Join(self)

    def result(self):
        """The goroutine's result; raises its exception. Only once done."""
        if not self.done:
            raise RuntimeError(f"goroutine {self.goid} has not finished")
        return _deliver(self)


cdef object _deliver(G g):
    if g.exc is not None:
        if g.sched is not None:
            g.sched.unobserved.pop(_weakref.ref(g), None)
        raise g.exc
    return g.retval


cdef class _Join(Park):
    cdef G g
    cdef G waiter
    cdef bint parked

    def __cinit__(self, G g):
        self.g = g

    def __next__(self):
        if self.g.done:
            self.parked = False
            _deliver(self.g)
            raise StopIteration(self.g.retval)
        if self.parked:
            raise NetpollError("netpoll: join resumed before the goroutine finished")
        self.parked = True
        return self

    def close(self):
        if self.parked and self.g.joiners is not None and self.waiter in self.g.joiners:
            self.g.joiners.remove(self.waiter)
        self.parked = False
        self.waiter = None

    cdef bint commit(self, object g) except -1:
        if self.g.done:
            return False
        if self.g.joiners is None:
            self.g.joiners = []
        self.g.joiners.append(g)
        self.waiter = <G>g
        return True


cdef class _Sleep(Park):
    cdef int64_t ns
    cdef Timer t

    def __next__(self):
        if self.t is None:
            self.t = Timer()
            return self
        self.t = None
        raise StopIteration

    def close(self):
        if self.t is not None and self.t.index >= 0:
            self.t.timers.delete(self.t)
        self.t = None

    cdef bint commit(self, object g) except -1:
        # sleep(0) (or less) is a yield: back to the tail of the run queue.
        if self.ns <= 0:
            return False
        self.t.kind = TIMER_READY
        self.t.arg = g
        (<G>g).sched.timers.add(self.t, nanotime() + self.ns)
        return True


cdef class _Call(Park):
    # Park with a Python commit function: the sync primitives use it. The
    # value a waker passes to ready(g, value) is what the await returns;
    # the am_send slot (_call_send) hands it back without a StopIteration.
    cdef object fn
    cdef object cancel
    cdef bint parked

    def __await__(self):
        return self

    def __next__(self):
        return self.send(None)

    def send(self, value):
        if self.parked:
            self.parked = False
            raise StopIteration(value)
        self.parked = True
        return self

    def close(self):
        if self.parked and self.cancel is not None:
            self.cancel()
        self.parked = False

    cdef bint commit(self, object g) except -1:
        return bool(self.fn(g))


@cython.freelist(64)
cdef class Sudog:
    """A goroutine parked on a channel (Go's sudog): netpoll.sync's queues
    hold these. In a select, ``sel`` is the list of the select's sudogs and
    ``idx`` this case's index; ``live`` drops once it is taken or cancelled."""
    cdef public object g
    cdef public object value
    cdef public object ch
    cdef public object sel
    cdef public Py_ssize_t idx
    cdef public bint live

    def __cinit__(self, ch, value, sel, Py_ssize_t idx):
        self.ch = ch
        self.value = value
        self.sel = sel
        self.idx = idx
        self.live = True


cdef class _Enqueue(_Call):
    # The channels' park: the goroutine becomes sd.g and sd joins queue q;
    # a closed goroutine calls cancel(sd). No closure per park.
    cdef object q
    cdef Sudog sd

    def __await__(self):
        return self

    def close(self):
        if self.parked and self.cancel is not None:
            self.cancel(self.sd)
        self.parked = False

    cdef bint commit(self, object g) except -1:
        (<Sudog>self.sd).g = g
        self.q.append(self.sd)
        return True


cdef class _EnqueueAll(_Call):
    # A select's park: sudog sel[i] joins queue qs[i]; a closed goroutine
    # calls cancel(sel).
    cdef list qs
    cdef list sel

    def __await__(self):
        return self

    def close(self):
        if self.parked and self.cancel is not None:
            self.cancel(self.sel)
        self.parked = False

    cdef bint commit(self, object g) except -1:
        cdef Py_ssize_t i
        for i in range(len(self.sel)):
            (<Sudog>self.sel[i]).g = g
            self.qs[i].append(self.sel[i])
        return True


def park_enqueue_all(list qs, list sel, cancel):
    """Park the calling goroutine on every ``sel[i]`` (sudogs sharing one
    select), each in queue ``qs[i]``; ``cancel(sel)`` runs if it is closed."""
    if len(qs) != len(sel):
        raise ValueError("park_enqueue_all: one queue per sudog")
    for sd in sel:
        if type(sd) is not Sudog:
            raise TypeError(f"park_enqueue_all: {sd!r} is not a Sudog")
    cdef _EnqueueAll c = _EnqueueAll.__new__(_EnqueueAll)
    c.qs = qs
    c.sel = sel
    c.cancel = cancel
    return c


cdef int _call_send(PyObject *o, PyObject *arg, PyObject **res) except -1:
    # am_send (PySendResult: 1 next, 0 return): the first send parks (yields
    # the Park itself), the second returns the waker's value.
    cdef _Call c = <_Call>o
    cdef object v
    if c.parked:
        c.parked = False
        v = <object>arg if arg != NULL else None
        Py_INCREF(v)
        res[0] = <PyObject *>v
        return 0
    c.parked = True
    Py_INCREF(c)
    res[0] = <PyObject *>c
    return 1


cdef extern from *:
    """
    typedef int (*__netpoll_sched_sendfunc)(PyObject *, PyObject *, PyObject **);
    static int __netpoll_sched_set_am_send(PyTypeObject *t, __netpoll_sched_sendfunc f) {
        if (t->tp_as_async == NULL || (t->tp_base && t->tp_as_async == t->tp_base->tp_as_async)) {
            PyErr_SetString(PyExc_SystemError, "type has no async slot table of its own");
            return -1;
        }
        t->tp_as_async->am_send = (sendfunc)f;
        PyType_Modified(t);
        return 0;
    }
    """
    ctypedef int (*__netpoll_sched_sendfunc)(PyObject *, PyObject *, PyObject **) except -1
    int __netpoll_sched_set_am_send(PyTypeObject *t, __netpoll_sched_sendfunc f) except -1


def park_enqueue(q, sd, cancel):
    """Park the calling goroutine as ``sd.g`` on queue ``q`` (a channel's
    sudog); ``cancel(sd)`` runs if the parked goroutine is closed."""
    cdef _Enqueue c = _Enqueue.__new__(_Enqueue)
    c.q = q
    c.sd = sd
    c.cancel = cancel
    return c


__netpoll_sched_set_am_send(<PyTypeObject *>_Call, _call_send)
__netpoll_sched_set_am_send(<PyTypeObject *>_Enqueue, _call_send)
__netpoll_sched_set_am_send(<PyTypeObject *>_EnqueueAll, _call_send)


def park(commit, cancel=None):
    """Park the calling goroutine: the scheduler calls ``commit(g)`` once the
    goroutine is off its stack. ``commit`` keeps ``g`` somewhere and returns
    True, or returns False to resume at once; ``cancel()`` runs if the parked
    goroutine is closed. Whoever kept ``g`` wakes it with ``ready(g, value)``,
    and ``value`` is what the await returns."""
    cdef _Call c = _Call.__new__(_Call)
    c.fn = commit
    c.cancel = cancel
    return c


def ready(G g, value=None):
    """Make a parked goroutine runnable; it resumes with ``value``. From a
    thread other than its runtime's, the wakeup goes through the runtime's
    injection queue."""
    cdef Sched s = g.sched
    if s.running and PyThread_get_thread_ident() != s.owner:
        s.inject(_Resume(g, value))
        return
    g.sendval = value
    s.runqput(g)


cdef class _Resume:
    cdef G g
    cdef object value

    def __cinit__(self, G g, value):
        self.g = g
        self.value = value


cdef class _Posted:
    # A call handed to the runtime by another thread (call_soon_threadsafe,
    # call_threadsafe). With `done` set, the caller waits for its outcome.
    cdef object fn
    cdef tuple args
    cdef object done
    cdef object result
    cdef object exc

    cdef int call(self) except -1:
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:
            if self.done is None:
                raise
            self.exc = e
        finally:
            if self.done is not None:
                self.done.set()
        return 0


cdef class RuntimeTimer:
    """A callback on the running runtime's timer heap (the heap behind sleep
    and deadlines): ``start(seconds)`` arms or moves it, ``stop()`` disarms
    it. The callback runs on the runtime's thread, outside any goroutine, and
    must not block."""

    def __cinit__(self, fn):
        self.sched = getsched()
        self.fn = fn
        self.t = Timer()
        self.t.kind = TIMER_READY
        self.t.arg = self

    def start(self, seconds):
        """Fire ``seconds`` from now (at once when <= 0); moves a pending timer."""
        cdef double d = float(seconds)
        if d != d:
            raise ValueError("timer duration is NaN")
        self.sched.timers.add(self.t, nanotime() + (<int64_t>(min(d, 1e9) * 1e9) if d > 0 else 0))

    def stop(self):
        """Disarm; True when the timer was pending."""
        if self.t.index < 0:
            return False
        self.sched.timers.delete(self.t)
        return True

    @property
    def pending(self):
        return self.t.index >= 0


def sleep(seconds):
    """Pause the calling goroutine for ``seconds``; ``sleep(0)`` yields."""
    cdef double d
    if type(seconds) is not float and type(seconds) is not int and not isinstance(seconds, _Real):
        raise TypeError(f"sleep: seconds must be a number, not {seconds!r}")
    d = float(seconds)
    if d != d:
        raise ValueError("sleep: seconds is NaN")
    cdef _Sleep s = _Sleep.__new__(_Sleep)
    s.ns = <int64_t>(min(d, 1e9) * 1e9) if d > 0 else 0
    return s


def go(coro):
    """Start a goroutine running ``coro``; returns its handle."""
    return getsched().newproc(coro)


# ---------------------------------------------------------------------------
# The scheduler
# ---------------------------------------------------------------------------

cdef enum:
    RUNQ_INIT = 64


cdef extern from "Python.h":
    PyObject *_list_get "PyList_GET_ITEM"(list l, Py_ssize_t i)
    void _list_set "PyList_SET_ITEM"(list l, Py_ssize_t i, PyObject *v)


cdef inline object _slotswap(list l, Py_ssize_t i, object v):
    # l[i] = v, returning the old item, for 0 <= i < len(l) (the run
    # queue's ring indices): no bounds check, no index object.
    cdef PyObject *old = _list_get(l, i)
    Py_INCREF(v)
    _list_set(l, i, <PyObject *>v)
    r = <object>old   # a new reference; the list's own is dropped below
    Py_XDECREF(old)
    return r


cdef class Sched:
    def __cinit__(self, Backend backend):
        self.backend = backend
        self.timers = Timers()
        self.runq = [None] * RUNQ_INIT
        self.allgs = set()
        self.lock = _threading.Lock()
        self.injected = []
        self.exitfns = []
        self.unobserved = {}
        self.lost = []

    cdef int runqput(self, G g) except -1:
        cdef Py_ssize_t cap = len(self.runq)
        if self.rlen == cap:
            self.runq = self.runq[self.rhead:] + self.runq[:self.rhead] + [None] * cap
            self.rhead = 0
            cap *= 2
        _slotswap(self.runq, (self.rhead + self.rlen) & (cap - 1), g)
        self.rlen += 1
        if self.inpoll:
            # A signal handler run inside backend.netpoll readied g: the
            # backend must not go back to sleep.
            self.inpoll = False
            self.backend.netpollbreak()
        return 0

    cdef G runqget(self):
        cdef G g = <G>_slotswap(self.runq, self.rhead, None)
        self.rhead = (self.rhead + 1) & (len(self.runq) - 1)
        self.rlen -= 1
        return g

    cdef int readylist(self, list gs) except -1:
        # Besides goroutines, timers.run and netpoll hand back RuntimeTimers
        # (their callback runs now) and self (the signal wakeup pipe).
        cdef object g
        for g in gs:
            if type(g) is G:
                (<G>g).sendval = None
                self.runqput(<G>g)
            elif type(g) is RuntimeTimer:
                (<RuntimeTimer>g).fn()
            elif g is self:
                self.sigwake()
            else:
                raise NetpollError(f"netpoll: {g!r} is not a goroutine and cannot be made runnable")
        return 0

    cdef G newproc(self, object coro):
        if not hasattr(coro, "send"):
            raise TypeError(f"go() needs a coroutine, not {type(coro).__name__}")
        cdef G g = G.__new__(G)
        g.coro = coro
        g.sched = self
        self.goidgen += 1
        g.goid = self.goidgen
        self.allgs.add(g)
        self.runqput(g)
        return g

    cdef int execute(self, G g) except -1:
        # Resume g until it parks or ends.
        cdef PyObject *res = NULL
        cdef int r
        cdef object v, exc
        if g.throwval is not None:
            exc = g.throwval
            g.throwval = None
            try:
                v = g.coro.throw(exc)
                r = PYGEN_NEXT
            except StopIteration as e:
                self.goexit(g, e.value, None)
                return 0
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                self.goexit(g, None, e)
                return 0
        else:
            v = g.sendval
            g.sendval = None
            r = PyIter_Send(g.coro, v, &res)
            if r == PYGEN_ERROR:
                return self.gofail(g)
            v = <object>res
            Py_XDECREF(res)
            if r == PYGEN_RETURN:
                self.goexit(g, v, None)
                return 0
        if isinstance(v, Park):
            if type(v) is _Wait and (<_Wait>v).pd.backend is not self.backend:
                g.throwval = NetpollError(
                    "netpoll: a descriptor of another runtime was awaited; it can be used only "
                    "by goroutines of the runtime that opened it")
                self.runqput(g)
            elif type(v) is _Join and (<_Join>v).g.sched is not self:
                (<_Join>v).parked = False
                g.throwval = NetpollError(
                    "netpoll: a goroutine of another runtime was awaited; hand its result over "
                    "with a channel and rt.call_soon_threadsafe")
                self.runqput(g)
            elif not (<Park>v).commit(g):
                self.runqput(g)
        else:
            g.throwval = TypeError(
                f"goroutine awaited {v!r}: only netpoll awaitables can be awaited here")
            self.runqput(g)
        return 0

    cdef int gofail(self, G g) except -1:
        # The goroutine raised (its exception is pending): it ends with it;
        # KeyboardInterrupt and SystemExit end run() instead.
        try:
            _reraise()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            self.goexit(g, None, e)
        return 0

    cdef goexit(self, G g, object result, object exc):
        g.done = True
        g.retval = result
        g.exc = exc
        self.allgs.discard(g)
        cdef list joiners = g.joiners
        g.joiners = None
        if exc is not None and not joiners:
            # Nobody is waiting: remember the exception until someone awaits
            # the handle. If the handle is dropped first, it is lost for
            # good and run() raises it (the weakref callback).
            self.unobserved[_weakref.ref(g, self._lost)] = exc
        if joiners:
            self.readylist(joiners)

    def _lost(self, ref):
        exc = self.unobserved.pop(ref, None)
        if exc is not None:
            self.lost.append(exc)

    cdef int injectglist(self) except -1:
        # Work handed over by other threads: (g, value, exc) ending a hand-off,
        # a _Resume, a _Posted call, or a coroutine to start.
        cdef list items
        with self.lock:
            items = self.injected
            self.injected = []
        for item in items:
            if type(item) is tuple:
                g, value, exc = item
                self.external -= 1
                (<G>g).sendval = value
                (<G>g).throwval = exc
                self.runqput(<G>g)
            elif type(item) is _Resume:
                if not (<_Resume>item).g.done:
                    (<_Resume>item).g.sendval = (<_Resume>item).value
                    self.runqput((<_Resume>item).g)
            elif type(item) is _Posted:
                (<_Posted>item).call()
            else:
                self.newproc(item)
        return 0

    cdef bint idle_forever(self):
        # Go's checkdead: nothing runnable, no timer, nobody parked in the
        # poller and no other
        # thread that promised to hand work back.
        if self.rlen or self.timers.heap or self.backend.waiters:
            return False
        with self.lock:
            return not self.injected and self.external == 0

    cdef int inject(self, object item) except -1:
        # Callers hold no lock. netpollbreak under the lock: the owner closes
        # the backend only after clearing `running` under it.
        with self.lock:
            if not self.running:
                raise RuntimeError("netpoll: the runtime has ended")
            self.injected.append(item)
            self.backend.netpollbreak()
        return 0

    # -- signals -------------------------------------------------------------

    cdef int siginit(self) except -1:
        # Only the main thread may set the wakeup fd, and one set by someone
        # else (asyncio) is left alone.
        if self.sigpd is not None or _threading.current_thread() is not _threading.main_thread():
            return 0  # kept from a run(end=False) before, or not the main thread
        # set_wakeup_fd can only be read by replacing it, so ours goes in
        # first: a probe with -1 would leave a window in which a signal
        # writes nowhere, and asyncio, which learns of its signals only from
        # its wakeup fd, would never see it (a SIGCHLD lost, a child never
        # reaped). A signal that lands while ours stands in for theirs
        # writes its number to our pipe; it is handed on to theirs.
        r, w = _syscall.pipe()  # pipe2 where the OS has it (macOS does not)
        try:
            old = _signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except BaseException:
            _os.close(r)
            _os.close(w)
            raise
        if old != -1:
            try:
                _signal.set_wakeup_fd(old)
                _sigforward(r, old)
            finally:
                _os.close(r)
                _os.close(w)
            return 0
        try:
            self.sigpd = self.pollopen(r)
        except BaseException:
            _signal.set_wakeup_fd(-1)  # ours, about to be closed
            if self.sigpd is not None:
                self.sigpd.evict()
                pollclose(self.sigpd)
                self.sigpd = None
            _os.close(r)
            _os.close(w)
            raise
        self.sigr = r
        self.sigw = w
        self.sigpark()
        return 0

    cdef int sigpark(self) except -1:
        # The wakeup pipe waits like a goroutine would, with self as waiter,
        # but is not counted in backend.waiters: it must not keep a
        # deadlocked runtime waiting. sigunpark gives the count back before
        # anything (netpollready, evict) takes it off again.
        while self.sigpd.park('r', self):
            self.sigdrain()
        self.backend.waiters -= 1
        self.sigparked = True
        return 0

    cdef void sigunpark(self):
        if self.sigparked:
            self.sigparked = False
            self.backend.waiters += 1

    cdef int sigdrain(self) except -1:
        while True:
            try:
                if not _os.read(self.sigr, 512):
                    return 0
            except BlockingIOError:
                return 0

    cdef int sigwake(self) except -1:
        # netpollready has already taken the park off backend.waiters.
        self.sigparked = False
        self.sigdrain()
        self.sigpark()
        # The handlers of the signals just seen run now (in the main thread
        # they may already have run inside netpoll).
        PyErr_CheckSignals()
        return 0

    cdef int sigclose(self) except -1:
        if self.sigpd is None:
            return 0
        cdef object pd = self.sigpd
        self.sigpd = None
        theirs = _signal.set_wakeup_fd(-1)
        if theirs != self.sigw:
            # Someone replaced ours while the runtime ran: theirs stays.
            _signal.set_wakeup_fd(theirs)
        self.sigunpark()
        pd.evict()
        try:
            pollclose(pd)
        finally:
            _os.close(self.sigr)
            _os.close(self.sigw)
        return 0

    def run(self, coro, *, bint end=True):
        """Run ``coro`` as the main goroutine until it returns (this loop is the event loop).

        ``end=False`` keeps the runtime for another run (netpoll.aio runs one
        per ``run_forever``): goroutines still parked stay parked, the poller
        stays open, and of the goroutine failures only those whose handle was
        dropped are raised, each once.
        """
        if getattr(_tls, "sched", None) is not None:
            raise RuntimeError("netpoll.run() cannot be called from a running netpoll runtime")
        cdef G main = self.newproc(coro)
        cdef Py_ssize_t n
        cdef int64_t delay, now, next_when
        cdef list to_run
        cdef Backend backend = self.backend
        global _last, _last_owner
        _tls.sched = self
        self.owner = PyThread_get_thread_ident()
        self.running = True
        _last = self
        _last_owner = self.owner
        try:
            self.siginit()
            while not main.done:
                # 1. The run queue: every goroutine runnable now, once.
                n = self.rlen
                while n > 0 and not main.done:
                    self.execute(self.runqget())
                    n -= 1
                if main.done:
                    break
                if self.lost:
                    raise self.lost.pop(0)
                # 2. Expired timers (sleep, deadlines).
                to_run = []
                now = nanotime()
                self.timers.run(now, to_run)
                if to_run:
                    self.readylist(to_run)
                # Drop our references: a goroutine that dies unobserved must
                # be freed at once so its lost exception is seen (weakref).
                to_run = None
                if self.injected:
                    self.injectglist()
                # 3. The poller: a non-blocking look when goroutines are
                # waiting to run (so a busy run queue cannot starve I/O),
                # otherwise sleep until the next timer or an event.
                if self.rlen:
                    if backend.waiters == 0:
                        continue
                    delay = 0
                else:
                    if self.idle_forever():
                        raise DeadlockError()
                    next_when = self.timers.next_when()
                    if next_when < 0:
                        delay = -1
                    else:
                        delay = next_when - now
                        if delay < 0:
                            delay = 0
                self.inpoll = delay != 0
                try:
                    to_run = backend.netpoll(delay)
                finally:
                    self.inpoll = False
                if to_run:
                    self.readylist(to_run)
                to_run = None
                if self.injected:
                    self.injectglist()
        finally:
            _tls.sched = None
            if _last is self:
                _last = None
            if end:
                self.shutdown(main)
        if self.lost:
            raise self.lost.pop(0)
        if main.exc is not None:
            raise main.exc
        for ref, exc in list(self.unobserved.items()) if end else ():
            if ref() is not main:
                raise exc
        return main.retval

    cdef shutdown(self, G main):
        # Leftover goroutines are closed so their finally blocks run; a
        # goroutine parked in a poll descriptor leaves its semaphore then.
        # Calls other threads posted still run (a close waits for it);
        # goroutines they start are closed unstarted. `running` drops under
        # the lock only when nothing is left, and from then on posting fails.
        cdef G g
        cdef list items
        while True:
            while self.allgs:
                g = self.allgs.pop()
                if g is main and main.done:
                    continue
                try:
                    g.coro.close()
                except Exception:
                    pass
                g.done = True
            with self.lock:
                items = self.injected
                self.injected = []
                if not items:
                    self.running = False
                    break
            for item in items:
                if type(item) is _Posted:
                    try:
                        (<_Posted>item).call()
                    except Exception:
                        pass
                elif type(item) is not tuple and type(item) is not _Resume:
                    item.close()
        try:
            self.sigclose()
        finally:
            self.backend.close()
        fns, self.exitfns = self.exitfns, []
        for fn in fns:
            fn()

    def pollopen(self, int fd):
        """Register ``fd`` with this runtime's poller and timers."""
        return pollopen(self.backend, fd, self.timers)

    def wake(self, list gs):
        """Make runnable the goroutines a PollDesc call returned (evict, set_deadline)."""
        self.readylist(gs)

    # -- other threads -----------------------------------------------------

    def go_threadsafe(self, coro):
        """Start a goroutine from any thread."""
        if not hasattr(coro, "send"):
            raise TypeError(f"go_threadsafe() needs a coroutine, not {type(coro).__name__}")
        try:
            self.inject(coro)
        except RuntimeError:
            # As run(backend="nope") does: the coroutine will never run.
            coro.close()
            raise RuntimeError("go_threadsafe: the runtime has ended") from None

    def call_soon_threadsafe(self, fn, *args):
        """Run ``fn(*args)`` on the runtime's thread at its next turn, from any
        thread or signal handler; an exception it raises leaves run(). Raises
        RuntimeError once the runtime has ended."""
        cdef _Posted p = _Posted.__new__(_Posted)
        p.fn = fn
        p.args = args
        self.inject(p)

    def call_threadsafe(self, fn, *args):
        """``fn(*args)`` performed by the runtime's thread, its result or
        exception returned here; called from that thread, or once the runtime
        has ended, fn runs directly. The owner must keep scheduling: a
        goroutine that blocks its thread waiting for the caller deadlocks."""
        if not self.running or PyThread_get_thread_ident() == self.owner:
            return fn(*args)
        cdef _Posted p = _Posted.__new__(_Posted)
        p.fn = fn
        p.args = args
        p.done = _threading.Event()
        try:
            self.inject(p)
        except RuntimeError:
            return fn(*args)
        p.done.wait()
        if p.exc is not None:
            raise p.exc
        return p.result

    def foreign(self):
        """Whether the calling thread is not the one running this runtime."""
        return self.running and PyThread_get_thread_ident() != self.owner

    def at_exit(self, fn):
        """Call ``fn()`` once run() has ended (netpoll.signal restores the
        handlers it installed for this runtime)."""
        self.exitfns.append(fn)

    def hold(self):
        """Keep run() from reporting a deadlock while another thread will hand
        work back: ``with rt.hold(): ...`` or ``h = rt.hold(); ...; h.release()``.
        Take it before starting that thread."""
        return Hold(self)

    def begin_external(self):
        # A goroutine is about to wait for another thread: it must not count
        # as a deadlock while that thread runs.
        with self.lock:
            self.external += 1
        return True

    def end_external(self):
        # A hand-off that will never finish (its thread did not start).
        with self.lock:
            self.external -= 1

    def finish_external(self, G g, value, exc):
        # A runtime that ended meanwhile has closed g: the result is dropped.
        with self.lock:
            if not self.running:
                return
            self.injected.append((g, value, exc))
            self.backend.netpollbreak()


cdef class Hold:
    """A promise that another thread will hand work back (``Sched.hold``)."""
    cdef Sched sched
    cdef bint held

    def __cinit__(self, Sched sched):
        self.sched = sched
        with sched.lock:
            sched.external += 1
        self.held = True

    def release(self):
        """End the promise; idempotent. The runtime re-checks for a deadlock."""
        if not self.held:
            return
        self.held = False
        cdef Sched s = self.sched
        with s.lock:
            s.external -= 1
            if s.running:
                s.backend.netpollbreak()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def current():
    """The runtime running in this thread (its Sched)."""
    return getsched()


def current_or_none():
    """The runtime running in this thread, or None."""
    return cursched()


def running():
    """Whether a netpoll runtime runs in this thread."""
    return getattr(_tls, "sched", None) is not None
