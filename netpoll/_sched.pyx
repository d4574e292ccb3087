# cython: language_level=3, boundscheck=False, wraparound=False
"""The goroutine scheduler: Go's runtime/proc.go, for one thread.

A goroutine (G) is a coroutine driven by Sched. It parks by yielding a Park
(the only trap); once it is off its stack the scheduler calls park.commit(g),
which hands g to whoever will ready it (a poll descriptor's rg/wg, a timer, a
channel's wait queue). A commit that returns False means the reason to sleep
is already gone, and g goes straight back on the run queue.

One Sched runs per thread that calls run(). Other threads talk to it only
through `injected` (under `lock`) followed by netpollbreak.
"""

from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from libc.stdint cimport int64_t

import threading as _threading
import weakref as _weakref
from numbers import Real as _Real

from netpoll._netpoll cimport (Backend, Park, Timer, Timers, nanotime,
                               TIMER_READY)
from netpoll._netpoll import pollopen
from netpoll.errors import DeadlockError, NetpollError

cdef extern from "Python.h":
    enum:
        PYGEN_RETURN
        PYGEN_NEXT
    int PyIter_Send(object iter, object arg, PyObject **presult) except -1


cdef object _tls = _threading.local()


cdef Sched getsched():
    cdef object s = getattr(_tls, "sched", None)
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
    # value a waker passes to ready(g, value) is what the await returns.
    cdef object fn
    cdef object cancel
    cdef bint parked

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
    """Make a parked goroutine runnable; it resumes with ``value``."""
    g.sendval = value
    g.sched.runqput(g)


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


cdef class Sched:
    def __cinit__(self, Backend backend):
        self.backend = backend
        self.timers = Timers()
        self.runq = [None] * RUNQ_INIT
        self.allgs = set()
        self.lock = _threading.Lock()
        self.injected = []
        self.unobserved = {}
        self.lost = []

    cdef int runqput(self, G g) except -1:
        cdef Py_ssize_t cap = len(self.runq)
        if self.rlen == cap:
            self.runq = self.runq[self.rhead:] + self.runq[:self.rhead] + [None] * cap
            self.rhead = 0
            cap *= 2
        self.runq[(self.rhead + self.rlen) & (cap - 1)] = g
        self.rlen += 1
        return 0

    cdef G runqget(self):
        cdef G g = <G>self.runq[self.rhead]
        self.runq[self.rhead] = None
        self.rhead = (self.rhead + 1) & (len(self.runq) - 1)
        self.rlen -= 1
        return g

    cdef int readylist(self, list gs) except -1:
        cdef object g
        for g in gs:
            (<G>g).sendval = None
            self.runqput(<G>g)
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
            try:
                r = PyIter_Send(g.coro, v, &res)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                self.goexit(g, None, e)
                return 0
            v = <object>res
            Py_XDECREF(res)
            if r == PYGEN_RETURN:
                self.goexit(g, v, None)
                return 0
        if isinstance(v, Park):
            if not (<Park>v).commit(g):
                self.runqput(g)
        else:
            g.throwval = TypeError(
                f"goroutine awaited {v!r}: only netpoll awaitables can be awaited here")
            self.runqput(g)
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
        # Work handed over by other threads: (g, value, exc) to resume, or a
        # coroutine to start.
        cdef list items
        with self.lock:
            items = self.injected
            self.injected = []
        for item in items:
            if isinstance(item, tuple):
                g, value, exc = item
                self.external -= 1
                (<G>g).sendval = value
                (<G>g).throwval = exc
                self.runqput(<G>g)
            else:
                self.newproc(item)
        return 0

    cdef bint idle_forever(self):
        # Go's checkdead: nothing runnable, no timer, nobody parked in the
        # poller and no other thread that promised to hand work back.
        if self.rlen or self.timers.heap or self.backend.waiters:
            return False
        with self.lock:
            return not self.injected and self.external == 0

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
        _tls.sched = self
        try:
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
                to_run = backend.netpoll(delay)
                if to_run:
                    self.readylist(to_run)
                to_run = None
                if self.injected:
                    self.injectglist()
        finally:
            _tls.sched = None
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
        cdef G g
        while self.allgs:
            g = self.allgs.pop()
            if g is main and main.done:
                continue
            try:
                g.coro.close()
            except Exception:
                pass
            g.done = True
        self.backend.close()

    def pollopen(self, int fd):
        """Register ``fd`` with this runtime's poller and timers."""
        return pollopen(self.backend, fd, self.timers)

    def wake(self, list gs):
        """Make runnable the goroutines a PollDesc call returned (evict, set_deadline)."""
        self.readylist(gs)

    # -- other threads -----------------------------------------------------

    def go_threadsafe(self, coro):
        """Start a goroutine from any thread."""
        with self.lock:
            if self.backend.closed:
                ended = True
            else:
                ended = False
                self.injected.append(coro)
        if ended:
            # As run(backend="nope") does: the coroutine will never run.
            coro.close()
            raise RuntimeError("go_threadsafe: the runtime has ended")
        self.backend.netpollbreak()

    def begin_external(self):
        # A goroutine is about to wait for another thread: it must not count
        # as a deadlock while that thread runs.
        with self.lock:
            self.external += 1
        return True

    def finish_external(self, G g, value, exc):
        with self.lock:
            self.injected.append((g, value, exc))
        self.backend.netpollbreak()


def current():
    """The runtime running in this thread (its Sched)."""
    return getsched()


def running():
    """Whether a netpoll runtime runs in this thread."""
    return getattr(_tls, "sched", None) is not None
