# Declarations of the goroutine scheduler (netpoll/_sched.pyx), for the
# compiled FD layer.
from netpoll._netpoll cimport Backend, Park, Timer, Timers


cdef class G:
    cdef object coro
    cdef object sendval             # sent into coro on the next resume
    cdef object throwval            # thrown into coro on the next resume
    cdef readonly bint done
    cdef object retval
    cdef object exc
    cdef list joiners               # goroutines parked in `await g`
    cdef Sched sched
    cdef readonly Py_ssize_t goid
    cdef object __weakref__


cdef class Sched:
    cdef readonly Backend backend
    cdef readonly Timers timers
    cdef list runq                  # ring buffer of runnable G
    cdef Py_ssize_t rhead, rlen
    cdef set allgs
    cdef Py_ssize_t goidgen
    cdef object lock                # guards injected and external (threads)
    cdef list injected              # (g, value, exc) or coroutines from threads
    cdef Py_ssize_t external        # thread hand-offs in flight
    cdef unsigned long owner        # thread ident of the thread in run()
    cdef readonly bint running      # run() is on; cleared under lock
    cdef bint inpoll                # inside a blocking backend.netpoll
    cdef object sigpd               # PollDesc of the signal wakeup pipe, or None
    cdef int sigr, sigw
    cdef bint sigparked             # the signal pipe waits in the poller
    cdef list exitfns               # at_exit callbacks
    cdef dict unobserved            # weakref(G) -> exception nobody received yet
    cdef list lost                  # exceptions whose goroutine handle was dropped
    cdef int runqput(self, G g) except -1
    cdef G runqget(self)
    cdef int readylist(self, list gs) except -1
    cdef G newproc(self, object coro)
    cdef int execute(self, G g) except -1
    cdef int gofail(self, G g) except -1
    cdef goexit(self, G g, object result, object exc)
    cdef int injectglist(self) except -1
    cdef bint idle_forever(self)
    cdef int inject(self, object item) except -1
    cdef int siginit(self) except -1
    cdef int sigpark(self) except -1
    cdef int sigdrain(self) except -1
    cdef int sigwake(self) except -1
    cdef void sigunpark(self)
    cdef int sigclose(self) except -1
    cdef shutdown(self, G main)


cdef Sched getsched()


cdef inline int _reraise() except -1:
    # Hands the pending exception (left by a call declared without an
    # exception check) to the caller's except clause.
    return -1


cdef class RuntimeTimer:
    cdef Timer t
    cdef readonly Sched sched
    cdef object fn
