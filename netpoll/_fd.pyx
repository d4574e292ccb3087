# cython: language_level=3, boundscheck=False, wraparound=False
"""The FD layer: Go's internal/poll.FD and fdMutex, in Cython.

Every I/O method tries the system call first; on EAGAIN it waits on the poll
descriptor and tries again. Reads serialise with reads and writes with writes
(fdMutex), so at most one goroutine waits per direction, which is what the
poll descriptor's rg/wg semaphores assume.

Close evicts the descriptor (waking every waiter with ClosedError) and
closes the OS descriptor at once, as Go's Close returns only once it is
closed (a listener's port is free again). That is safe because close runs
on the runtime's own thread: every other operation holding a reference is
parked (on the poll descriptor or the fdMutex), none is inside a system
call, and every woken operation checks the closed flag before it touches
the poll descriptor or makes a system call. So no operation ever runs on an
fd number that was closed and reused under it.

fdMutex state, as Go lays it out in one word (here: separate fields):
  closed        set once by close; checked by every operation on entry and
                on every resume, before anything else
  rlock, wlock  the read / write lock is held
  refs          references: one per operation in flight (locked or not);
                it never drops below zero, and a lock is released exactly
                once per take
  rwait, wwait  goroutines parked waiting for the read / write lock (None
                until the first: rwunlock, on every operation, then tests a
                field of the FD instead of touching a list elsewhere in memory)
Pairs: read/accept/recvfrom take rwlock(True)/rwunlock(True); write/writev/
sendto take rwlock(False)/rwunlock(False); deadlines, shutdown and socket
options take incref/decref; close takes increfAndClose, destroys, then decref.

Fairness: an I/O operation that never waits would never let another
goroutine run (Go preempts; this runtime cannot). As tokio does, every
ready operation spends one unit of a budget (IO_BUDGET); when it is spent,
the next operation yields to the run queue before its system call, and the
budget refills. Parking refills it too.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.exc cimport PyErr_SetFromErrno
from cpython.long cimport PyLong_FromSsize_t
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
cimport cython
from libc.stdint cimport INT64_MAX, int64_t
from libc.math cimport isnan

import errno as _errno
import os as _os
import socket as _socket

from netpoll._netpoll cimport (PollDesc, Park, _Wait, nanotime, pollerror,
                               polldeadline, pollpending, pollreset, pollskipok,
                               pollErrTimeout,
                               MODE_R, MODE_W)
from netpoll._sched cimport Sched, _reraise, getsched
from netpoll._syscall cimport POLLIN, poll_now

from netpoll import hooks as _hooks
from netpoll._netpoll import pollclose as _pollclose
from netpoll.errors import ClosedError, NetpollError

cdef extern from "Python.h":
    Py_ssize_t PyNumber_AsSsize_t(object o, PyObject *exc) except? -1

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void *buf, size_t count)
    ssize_t c_write "write"(int fd, const void *buf, size_t count)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt)

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EINTR
        EAGAIN
        ECONNABORTED

cdef enum:
    MAX_RW = 1 << 30      # stream I/O is clamped to 1 GiB per call (Go's maxRW)
    IOV_MAX = 1024
    IO_BUDGET = 128       # ready operations between yields (tokio's budget)


cdef object _closing():
    return ClosedError()


cdef int _begin(PollDesc pd, int mode) except -1:
    # pollReset, and a deadline that has passed by the clock counts even if
    # its timer has not fired yet: a goroutine whose operations never wait
    # would otherwise outlive its deadline until the scheduler runs timers.
    cdef int err = pollreset(pd, mode)
    if err:
        raise pollerror(pd, err)
    cdef int64_t d = polldeadline(pd, mode)
    if d > 0 and d <= nanotime():
        raise pollerror(pd, pollErrTimeout)
    return 0


# The I/O budget. Module state, shared by the runtimes of all threads: they
# run one at a time under the GIL, and a yield is always safe, so sharing
# only makes a yield come a little earlier.
cdef int _budget = IO_BUDGET


cdef inline bint _spend() noexcept:
    # True: the budget is spent and the caller must yield first.
    global _budget
    _budget -= 1
    if _budget > 0:
        return False
    _budget = IO_BUDGET
    return True


cdef inline void _refill() noexcept:
    global _budget
    _budget = IO_BUDGET


cdef class _Yield(Park):
    # Back to the tail of the run queue (the budget is spent): commit refuses
    # the park, so the scheduler requeues the goroutine at once.
    cdef bint done

    def __next__(self):
        if self.done:
            raise StopIteration
        self.done = True
        return self

    cdef bint commit(self, object g) except -1:
        return False


cdef _Yield _yield_park = _Yield.__new__(_Yield)


def deadline_ns(t):
    """A deadline given as absolute ``netpoll.now()`` seconds, as PollDesc wants
    it: None -> 0 (none, the only way to say "no deadline"); a past time
    (0 included: it is long past) or -inf -> -1 (expired); +inf or beyond
    the clock's range -> the far future. NaN is a ValueError."""
    if t is None:
        return 0
    cdef double d
    try:
        d = float(t)
    except (TypeError, ValueError):
        raise TypeError(f"deadline must be a number of seconds or None, not {type(t).__name__}") from None
    if isnan(d):
        raise ValueError("deadline is NaN")
    if d >= 9.2e9:
        return INT64_MAX
    cdef int64_t ns = <int64_t>(d * 1e9) if d > 0 else -1
    if ns <= nanotime():
        return -1
    return ns


cdef object _buffer_error(object buf, str op):
    # Why PyObject_GetBuffer(PyBUF_WRITABLE) refused buf, in words.
    try:
        m = memoryview(buf)
    except TypeError:
        return TypeError(f"{op}() needs a writable buffer, not {type(buf).__name__}")
    with m:
        if m.readonly:
            return TypeError(f"{op}() needs a writable buffer, not a read-only {type(buf).__name__}")
        if not m.contiguous:
            return TypeError(f"{op}() needs a contiguous buffer, and this {type(buf).__name__} is not contiguous")
    return TypeError(f"{op}() cannot use this {type(buf).__name__} as a buffer")


cdef class _RW


cdef inline _RW _rwop(FD fd, bint read):
    # A fresh _RW for a read-side (read) or write-side call: the side's last
    # finished one when the FD's slot holds the only reference to it, else
    # a new one. Reuse is safe because an _RW is reached only through
    # references: a goroutine resumes the coroutine that awaits it (the
    # scheduler holds the yielded Park, pw or lw, never the _RW), and that
    # coroutine's frame holds the _RW until the await returns; a caller
    # that keeps it (to await it again, or not at all) holds one too. With
    # the slot's the only one left, no frame, wakeup or caller can send to,
    # throw into or close the old call, so nothing stale can reach the new
    # one. A finished _RW holds nothing (finish: no buffer, lock, fd or
    # Park), so the FD -> slot -> _RW chain never makes a cycle, and the
    # slot is taken out while the call runs (a dropped call deallocates).
    cdef _RW op = fd.rop if read else fd.wop
    if op is None or (<PyObject *>op).ob_refcnt != 2:  # the slot's and op's
        return _RW.__new__(_RW)
    if read:
        fd.rop = None
    else:
        fd.wop = None
    op.state = S_NEW
    op.awaited = False
    op.n = 0
    return op


cdef Py_ssize_t _nbytes(_RW op, object nbytes) except -1:
    # write's nbytes, checked against the buffer op holds (an error drops op
    # unstarted: its dealloc releases the buffer).
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"write() nbytes must be an int or None, not {type(nbytes).__name__}")
    cdef Py_ssize_t n = PyNumber_AsSsize_t(nbytes, NULL)  # clamped, never OverflowError
    if n < 0:
        raise ValueError(f"write() nbytes must not be negative, got {nbytes}")
    if n > op.view.len:
        raise ValueError(f"write() nbytes {nbytes} is larger than the buffer ({op.view.len} bytes)")
    return n


cdef class FD:
    """A non-blocking descriptor registered with the running runtime's poller.

    The public names are those of a connection (read, write, wait_readable,
    writev, close, closed, fileno); the rest are the net layer's.
    """
    cdef readonly object _sock
    cdef readonly int _sysfd
    cdef readonly bint _stream      # clamp I/O at MAX_RW; a zero read is EOF
    cdef readonly bint _tcp         # a TCP stream socket (pollskipok)
    # The last read(2) was short on a TCP stream: the next read or
    # wait_readable, if the poller allows it (pollskipok) and no readiness
    # came since, parks without a syscall. Consumed by the first read-side
    # operation after it, whatever that finds: a skip is taken at most once
    # per short read, so an edge taken by an operation that did not empty
    # the queue (another read-side call, a wait woken and then failed by a
    # deadline) is never followed by a skip.
    cdef bint rdrained
    cdef readonly Py_ssize_t _rskips  # skips decided (tests prove the optimisation)
    cdef PollDesc pd
    cdef Sched sched
    # fdMutex
    cdef bint fdclosed, rlock, wlock
    cdef Py_ssize_t refs
    cdef list rwait, wwait
    # The last finished _RW of each side (read and wait_readable share rop),
    # kept for the next call to reuse (_rwop).
    cdef _RW rop, wop

    def __init__(self, sock, bint stream=True):
        self._sock = sock
        self._sysfd = sock.fileno()
        self._stream = stream
        # TCP itself (proto 0 or IPPROTO_TCP): not MPTCP or SCTP, whose
        # reads may stop short for reasons of their own.
        self._tcp = (stream and isinstance(sock, _socket.socket)
                     and sock.type == _socket.SOCK_STREAM
                     and sock.family in (_socket.AF_INET, _socket.AF_INET6)
                     and sock.proto in (0, _socket.IPPROTO_TCP))
        self.sched = getsched()
        self.pd = self.sched.pollopen(self._sysfd)

    def fileno(self):
        """The OS descriptor; -1 once closed."""
        return self._sysfd

    def _wrap_error(self, op, err):
        # The exception an I/O method raises for ``err``; the net layer
        # overrides this to add its OpError context. Error paths only.
        return err

    # -- fdMutex -----------------------------------------------------------

    cdef inline bint lock_free(self, bint read) noexcept:
        return not (self.rlock if read else self.wlock)

    cdef inline void take(self, bint read) noexcept:
        if read:
            self.rlock = True
        else:
            self.wlock = True
        self.refs += 1

    cdef int incref(self) except -1:
        if self.fdclosed:
            raise _closing()
        self.refs += 1
        return 0

    cdef int decref(self) except -1:
        if self.refs <= 0:
            raise NetpollError("inconsistent poll.fdMutex")
        self.refs -= 1
        return 0

    cdef int rwunlock(self, bint read) except -1:
        # Hand the lock on by waking one waiter; it retries (no FIFO
        # hand-off, a newcomer may win, as in Go). After close the wait
        # lists are gone (close woke them all).
        if read:
            if not self.rlock:
                raise NetpollError("inconsistent poll.fdMutex")
            self.rlock = False
            if self.rwait:
                self.sched.readylist([self.rwait.pop(0)])
        else:
            if not self.wlock:
                raise NetpollError("inconsistent poll.fdMutex")
            self.wlock = False
            if self.wwait:
                self.sched.readylist([self.wwait.pop(0)])
        if self.refs <= 0:
            raise NetpollError("inconsistent poll.fdMutex")
        self.refs -= 1
        return 0

    cdef object rwlock(self, bint read):
        # None when the lock was taken at once; otherwise an awaitable that
        # parks until it is.
        if self.fdclosed:
            raise _closing()
        if self.lock_free(read):
            self.take(read)
            return None
        cdef _LockWait w = _LockWait.__new__(_LockWait)
        w.fd = self
        w.read = read
        return w

    cdef object pwait(self, int mode):
        # pollWait for the coroutine-shaped operations, through the closed
        # check (see _FDWait).
        cdef _FDWait w = _FDWait.__new__(_FDWait)
        w.fd = self
        w.w = self.pd.rwait if mode == MODE_R else self.pd.wwait
        return w

    cdef int destroy(self) except -1:
        # Deregister before close(2), so a reused fd number is never
        # registered twice; the close goes through the hook table. The
        # poll descriptor's two waits are reset first: evict has woken their
        # goroutines, which will not touch them again (they see fdclosed),
        # and the descriptor may be handed to a new fd before they run.
        cdef PollDesc pd = self.pd
        self.pd = None
        sock = self._sock
        self._sysfd = -1
        try:
            if pd is not None:
                pd.rwait._abandon()
                pd.wwait._abandon()
                _pollclose(pd)
        finally:
            _hooks.close(sock)
        return 0

    def close(self):
        """Evict and close the OS descriptor at once; blocked operations
        wake with ClosedError."""
        if self.sched.foreign():
            # From another thread: the owning runtime performs it.
            return self.sched.call_threadsafe(FD.close, self)
        if self.fdclosed:
            raise _closing()
        self.fdclosed = True
        self.refs += 1
        # fdMutex waiters wake, see closed and fail; poll waiters wake and
        # fail on the closed flag before they look at the poll descriptor.
        cdef list waiters = (self.rwait or []) + (self.wwait or [])
        self.rwait = None
        self.wwait = None
        if waiters:
            self.sched.readylist(waiters)
        try:
            if self.pd is not None:
                self.sched.readylist(self.pd.evict())
            self.destroy()
        finally:
            self.decref()

    @property
    def closed(self):
        return self.fdclosed

    # -- deadlines -----------------------------------------------------------

    def _set_deadline(self, t, mode="rw"):
        # Deadline for pending and future operations; see deadline_ns.
        if self.sched.foreign():
            return self.sched.call_threadsafe(FD._set_deadline, self, t, mode)
        cdef int64_t d = deadline_ns(t)
        self.incref()
        try:
            if self.pd is None:
                raise OSError(_errno.EINVAL, "file type does not support deadline")
            self.sched.readylist(self.pd.set_deadline(d, mode))
        finally:
            self.decref()

    # -- I/O -------------------------------------------------------------------
    # Each method: take the lock, _begin (fail fast on close/deadline, drop
    # stale readiness), then syscall -> EAGAIN -> wait -> syscall. Errors
    # leave through _wrap_error. read, write and wait_readable, the calls of
    # every message, are hand-written awaitables (_RW below); the rest are
    # coroutines.

    def read(self, buf):
        """Read into a writable buffer; 0 means EOF on a stream."""
        cdef _RW op = _rwop(self, True)
        try:
            PyObject_GetBuffer(buf, &op.view, PyBUF_WRITABLE)
        except BufferError:
            raise _buffer_error(buf, "read") from None
        op.hasview = True
        op.nbytes = op.view.len
        op.fd = self
        op.kind = OP_READ
        return op

    def wait_readable(self):
        """Park until a read is likely to find data, EOF or an error, without
        holding a buffer: a goroutine per connection can take a buffer from a
        pool only once its peer has sent something. It returns at once after
        a readiness it has not consumed yet, else when a look (poll(2) with
        no timeout) finds something queued, else it parks. A read after it may still park (the
        readiness can be spurious); nothing is consumed."""
        cdef _RW op = _rwop(self, True)
        op.fd = self
        op.kind = OP_WAITREAD
        return op

    def write(self, data, nbytes=None):
        """Write all of ``data``, or its first ``nbytes`` bytes, looping over
        partial writes; returns the count written. ``write(buf, n)`` sends
        what ``read(buf)`` returned without the slice ``buf[:n]`` (a new
        memoryview per call)."""
        if isinstance(data, str):
            raise TypeError("write() needs bytes-like data, not str (encode it first)")
        cdef _RW op = _rwop(self, False)
        PyObject_GetBuffer(data, &op.view, PyBUF_SIMPLE)
        op.hasview = True
        op.nbytes = op.view.len if nbytes is None else _nbytes(op, nbytes)
        op.fd = self
        op.kind = OP_WRITE
        return op

    cdef bint skip_read(self, bint ready) except -1:
        # At the start of a read or wait_readable, with `ready` the
        # readiness pending before _begin: True when it may park without a
        # syscall (rdrained). Consumes rdrained; counts the skips decided.
        cdef bint skip = self.rdrained and not ready and pollskipok(self.pd)
        self.rdrained = False
        if skip:
            self._rskips += 1
        return skip

    cdef bint nothing_readable(self) except -1:
        # wait_readable without a known readiness: True when nothing is
        # readable now, so it must wait. Knowing that from an earlier short
        # read is enough only where skip_read says so: a TCP read stops at
        # an urgent mark, a unix stream read after a message carrying
        # descriptors, with more data queued and no new edge to come.
        # A poll(2) that fails leaves it to the read.
        return poll_now(self._sysfd, POLLIN) == 0

    cdef bint read_once(self, _RW op) except -1:
        # True: done (op.n set); False: EAGAIN.
        cdef ssize_t n
        cdef size_t want = op.nbytes
        cdef int err
        if self._stream and want > MAX_RW:
            want = MAX_RW
        while True:
            n = c_read(self._sysfd, op.view.buf, want)
            if n >= 0:
                op.n = n
                self.rdrained = self._tcp and 0 < n < <ssize_t>want
                return True
            err = errno
            if err == EAGAIN:
                return False
            if err != EINTR:
                PyErr_SetFromErrno(OSError)

    cdef bint write_once(self, _RW op) except -1:
        # True: all written (op.n); False: EAGAIN with op.n written so far.
        cdef ssize_t n
        cdef size_t want
        cdef int err
        while True:
            want = op.nbytes - op.n
            if self._stream and want > MAX_RW:
                want = MAX_RW
            n = c_write(self._sysfd, <char *>op.view.buf + op.n, want)
            if n > 0:
                op.n += n
            if op.n == op.nbytes:
                return True
            if n < 0:
                err = errno
                if err == EAGAIN:
                    return False
                if err != EINTR:
                    PyErr_SetFromErrno(OSError)
            elif n == 0:
                raise OSError(_errno.EIO, "write returned 0 bytes (unexpected EOF)")

    async def writev(self, buffers):
        """Write a sequence of buffers with writev(2), at most IOV_MAX per call.

        Every buffer stays exported until the call ends, as for write: a
        bytearray resized meanwhile raises BufferError."""
        cdef Py_buffer views[IOV_MAX]
        cdef iovec iov[IOV_MAX]
        cdef int cnt, i, err
        cdef ssize_t n
        cdef Py_ssize_t total = 0, skip = 0, idx = 0
        cdef list bufs = list(buffers)
        for b in bufs:
            if isinstance(b, str):
                raise TypeError("writev() needs bytes-like buffers, not str")
        cdef list held = []
        try:
            for b in bufs:
                held.append(memoryview(b))
            if _spend():
                await _Yield.__new__(_Yield)
            w = self.rwlock(False)
            if w is not None:
                await w
            try:
                _begin(self.pd, MODE_W)
                while idx < len(held):
                    cnt = 0
                    try:
                        while cnt < IOV_MAX and idx + cnt < len(held):
                            PyObject_GetBuffer(held[idx + cnt], &views[cnt], PyBUF_SIMPLE)
                            iov[cnt].iov_base = <char *>views[cnt].buf + (skip if cnt == 0 else 0)
                            iov[cnt].iov_len = views[cnt].len - (skip if cnt == 0 else 0)
                            cnt += 1
                        n = writev(self._sysfd, iov, cnt)
                        err = errno
                    finally:
                        for i in range(cnt):
                            PyBuffer_Release(&views[i])
                    if n < 0:
                        if err == EAGAIN:
                            _refill()
                            await self.pwait(MODE_W)
                            continue
                        if err == EINTR:
                            continue
                        raise OSError(err, _os.strerror(err))
                    total += n
                    # Go's consume: drop whole buffers, trim the first partial one.
                    n += skip
                    skip = 0
                    while idx < len(held):
                        if n >= <ssize_t>(<memoryview>held[idx]).nbytes:
                            n -= <ssize_t>(<memoryview>held[idx]).nbytes
                            idx += 1
                        else:
                            skip = n
                            break
                return total
            finally:
                self.rwunlock(False)
        except OSError as e:
            raise self._wrap_error("writev", e)
        finally:
            for m in held:
                (<memoryview>m).release()

    async def _retry(self, bint read, str op, tuple again, fn, *args):
        # The calls made through the hook table or the socket object: lock,
        # _begin, call; EAGAIN (BlockingIOError) waits for readiness, the
        # errors in `again` try again at once.
        try:
            if _spend():
                await _Yield.__new__(_Yield)
            w = self.rwlock(read)
            if w is not None:
                await w
            try:
                if read:
                    self.rdrained = False
                _begin(self.pd, MODE_R if read else MODE_W)
                while True:
                    try:
                        return fn(*args)
                    except BlockingIOError:
                        _refill()
                        await self.pwait(MODE_R if read else MODE_W)
                    except again:
                        pass
            finally:
                self.rwunlock(read)
        except OSError as e:
            raise self._wrap_error(op, e)

    def _accept(self):
        # Accept through the hook table: (socket, addr). ECONNABORTED: a
        # queued connection was reset before we took it; take the next.
        return self._retry(True, "accept", (InterruptedError, ConnectionAbortedError),
                           _hooks.accept, self._sock)

    def _recvfrom(self, buf):
        # recvfrom into a writable buffer: (n, address). No EOF for datagrams.
        try:
            memoryview(buf).cast("B")
        except TypeError:
            raise _buffer_error(buf, "read_from") from None
        return self._retry(True, "read", (InterruptedError,), self._sock.recvfrom_into, buf)

    def _sendto(self, data, addr):
        # sendto: a datagram is sent whole; returns len(data).
        if isinstance(data, str):
            raise TypeError("write_to() needs bytes-like data, not str (encode it first)")
        return self._retry(False, "write", (InterruptedError,), self._sock.sendto, data, addr)

    async def _wait_write(self):
        # Park until writable (a non-blocking connect in progress).
        self.incref()
        try:
            await self.pwait(MODE_W)
        finally:
            self.decref()

    def _shutdown(self, how):
        self.incref()
        try:
            self._sock.shutdown(how)
        finally:
            self.decref()

    def _control(self, fn, *args):
        # Call ``fn(sock, *args)`` holding a reference (socket options).
        self.incref()
        try:
            return fn(self._sock, *args)
        finally:
            self.decref()


cdef class _FDWait(Park):
    # pollWait for a coroutine: the poll descriptor's _Wait, entered and
    # resumed only while the FD is open. Once close has run, the poll
    # descriptor may already serve another fd, so a resumed wait fails on
    # the closed flag and leaves the _Wait alone (destroy reset it).
    cdef FD fd
    cdef _Wait w

    def __await__(self):
        if self.fd.fdclosed:
            raise _closing()
        self.w.begin()
        return self

    def __next__(self):
        if self.fd.fdclosed:
            self.w = None
            raise _closing()
        if self.fd.sched.foreign():
            # A goroutine of another runtime (thread) must not park here.
            self.w = None
            raise NetpollError(
                "netpoll: a descriptor of another runtime was awaited; it can be used only "
                "by goroutines of the runtime that opened it")
        if self.w.step():
            return self
        self.w = None
        raise StopIteration

    def close(self):
        if self.w is not None and not self.fd.fdclosed:
            self.w._abandon()
        self.w = None

    cdef bint commit(self, object g) except -1:
        return self.w.commit(g)


cdef class _LockWait(Park):
    # A goroutine waiting for a held read or write lock (Go's rsema/wsema).
    cdef FD fd
    cdef bint read
    cdef object g

    def __next__(self):
        if self.step():
            return self
        raise StopIteration

    cdef bint step(self) except -1:
        # True: still held, park; False: taken.
        self.g = None
        if self.fd.fdclosed:
            raise _closing()
        if self.fd.lock_free(self.read):
            self.fd.take(self.read)
            return False
        return True

    def close(self):
        if self.g is not None:
            q = self.fd.rwait if self.read else self.fd.wwait
            if q is not None and self.g in q:
                q.remove(self.g)
            self.g = None

    cdef bint commit(self, object g) except -1:
        self.g = g
        if self.read:
            if self.fd.rwait is None:
                self.fd.rwait = []
            self.fd.rwait.append(g)
        else:
            if self.fd.wwait is None:
                self.fd.wwait = []
            self.fd.wwait.append(g)
        return True


cdef enum:
    OP_READ = 0
    OP_WRITE = 1
    OP_WAITREAD = 2

# _RW states.
cdef enum:
    S_NEW = 0       # not started: holds at most the caller's buffer
    S_YIELD = 1     # yielded to the run queue (budget spent), holds the same
    S_LOCK = 2      # parked on the fdMutex (lw)
    S_IO = 3        # holds the lock; trying the syscall or parked on the poll descriptor (pw)
    S_DONE = 4      # finished: holds nothing


@cython.freelist(16)
@cython.no_gc_clear
cdef class _RW:
    # One read, write or wait_readable call, awaited once. A coroutine would
    # cost three objects per call (the coroutine, its closure, and the
    # wrapper __await__ returns to Python code) and a StopIteration per
    # result; this is one object, the FD's last finished one when nothing
    # else holds that (_rwop), else one from a free list, and its am_send slot
    # (installed at import, Cython does not map it) hands the result back
    # without an exception. The steps are those of the coroutines: budget,
    # lock, _begin, syscall -> EAGAIN -> pollWait -> syscall; pw or lw is the
    # Park yielded while suspended, and finish() releases the lock and the
    # buffer on every way out (result, error, throw, close, dealloc).
    cdef FD fd
    cdef Py_buffer view
    cdef bint hasview, locked, awaited
    cdef int kind, state
    cdef Py_ssize_t n
    cdef Py_ssize_t nbytes  # the bytes of view to read into or write (nbytes)
    cdef _LockWait lw
    cdef _Wait pw

    # Not an Awaiter subclass: a free list works only on a base class.
    def __await__(self):
        # As CPython refuses a second await of a coroutine: a second
        # awaiter would resume the first one's park.
        if self.state == S_DONE:
            raise RuntimeError("cannot reuse an already awaited read/write")
        if self.awaited or self.state != S_NEW:
            raise RuntimeError("this read/write is being awaited already")
        self.awaited = True
        return self

    def __next__(self):
        cdef PyObject *res = NULL
        cdef int r = _rw_send(<PyObject *>self, NULL, &res)
        v = <object>res
        Py_XDECREF(res)
        if r == 1:
            return v
        raise StopIteration(v)

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        self.close()
        raise typ if val is None else val

    def close(self):
        if self.lw is not None:
            self.lw.close()
            self.lw = None
        self.drop_wait()
        self.finish(True)

    def __dealloc__(self):
        # Only a started call dropped without close() (a coroutine's own
        # finalizer closes what it awaits) gets here holding the lock.
        if self.state == S_IO:
            self.drop_wait()
        self.finish(False)

    cdef void drop_wait(self):
        # Leave pollWait. After close the _Wait may serve another fd: leave
        # it alone (destroy reset it).
        if self.pw is not None:
            if not self.fd.fdclosed:
                self.pw._abandon()
            self.pw = None

    cdef int finish(self, bint keep) except -1:
        # Idempotent; an error here is an fdMutex invariant broken, so it
        # propagates. Everything is let go; with keep (not from dealloc) the
        # FD's slot for this side takes the finished _RW for reuse (_rwop).
        # pw and lw are settled by now: every path that parked on them left
        # through step (done or raised) or drop_wait / lw.close.
        cdef bint locked = self.locked
        cdef FD fd = self.fd
        self.state = S_DONE
        self.locked = False
        self.pw = None
        self.lw = None
        self.fd = None
        if self.hasview:
            self.hasview = False
            PyBuffer_Release(&self.view)
        if fd is None:
            return 0
        if locked:
            fd.rwunlock(self.kind != OP_WRITE)
        if keep and not fd.fdclosed:
            if self.kind == OP_WRITE:
                fd.wop = self
            else:
                fd.rop = self
        return 0

    cdef bint wait(self, _Wait w) except -1:
        # pollWait: True when parked (yield pw), False when already ready.
        w.begin()
        if w.step():
            self.pw = w
            _refill()
            return True
        return False


cdef int _rw_step(_RW self) except -1:
    # 1: parked on the run queue (S_YIELD), lw or pw; 0: finished, the
    # result in n.
    cdef FD fd = self.fd
    cdef bint read = self.kind != OP_WRITE
    cdef bint ready, skip
    if fd.fdclosed:
        # Entered or resumed after close: fail before the poll
        # descriptor (perhaps another fd's by now) or a syscall.
        self.pw = None
        self.lw = None
        raise _closing()
    if self.state == S_NEW:
        if _spend():
            self.state = S_YIELD
            return 1
    if self.state == S_NEW or self.state == S_YIELD:
        if fd.lock_free(read):
            fd.take(read)
        else:
            self.lw = _LockWait.__new__(_LockWait)
            self.lw.fd = fd
            self.lw.read = read
            self.state = S_LOCK
    if self.state == S_LOCK:
        if self.lw.step():
            return 1
        self.lw = None
    if self.state != S_IO:
        # Just took the lock.
        self.locked = True
        self.state = S_IO
        if self.kind == OP_WRITE:
            _begin(fd.pd, MODE_W)
        else:
            # A readiness since the last read began says "try"; without
            # one, only an empty queue (a short read where the poller
            # allows the skip, else a look with poll(2)) may wait.
            # rdrained is consumed before _begin, which may drop a
            # readiness and then fail.
            ready = pollpending(fd.pd, MODE_R)
            if self.kind == OP_READ and self.nbytes == 0:
                fd.rdrained = False
                _begin(fd.pd, MODE_R)
                return 0
            skip = fd.skip_read(ready)
            _begin(fd.pd, MODE_R)
            if self.kind == OP_WAITREAD:
                if (not ready and (skip or fd.nothing_readable())
                        and self.wait(fd.pd.rwait)):
                    return 1
                return 0
            if skip and self.wait(fd.pd.rwait):
                return 1
    elif self.pw is not None:
        # Resumed from pollWait.
        if self.pw.step():
            return 1
        self.pw = None
        if self.kind == OP_WAITREAD:
            return 0
    while True:
        if self.kind == OP_WRITE:
            if fd.write_once(self):
                return 0
            if self.wait(fd.pd.wwait):
                return 1
        else:
            if fd.read_once(self):
                return 0
            if self.wait(fd.pd.rwait):
                return 1


# _rw_step through a pointer without its exception check: the call on the
# hot path then sets up no handler (a try block saves and restores the
# thread's exception state on every entry); -1 says an exception is pending,
# and _rw_fail, off that path, takes it over.
ctypedef int (*_rwstepfn)(_RW) noexcept
cdef _rwstepfn _rw_step_raw = <_rwstepfn>_rw_step


cdef int _rw_fail(_RW op, FD fd) except -1:
    # _rw_step raised: release what the call holds, then raise its error
    # (an OSError in the FD's own terms).
    try:
        _reraise()
    except BaseException as e:
        op.finish(True)
        if isinstance(e, OSError):
            raise fd._wrap_error("write" if op.kind == OP_WRITE else "read", e)
        raise
    return -1


cdef int _rw_send(PyObject *o, PyObject *arg, PyObject **res) except -1:
    # The am_send slot (PySendResult: 1 next, 0 return, -1 error).
    cdef _RW op = <_RW>o
    cdef int r
    cdef object v
    if op.state == S_DONE:
        raise RuntimeError("cannot reuse an already awaited read/write")
    r = _rw_step_raw(op)
    if r < 0:
        return _rw_fail(op, op.fd)
    if r == 1:
        if op.state == S_YIELD:
            v = _yield_park
        elif op.lw is not None:
            v = op.lw
        else:
            v = op.pw
    else:
        op.finish(True)
        v = None if op.kind == OP_WAITREAD else PyLong_FromSsize_t(op.n)
    Py_INCREF(v)
    res[0] = <PyObject *>v
    return r


cdef extern from *:
    """
    typedef int (*__netpoll_sendfunc)(PyObject *, PyObject *, PyObject **);
    static int __netpoll_set_am_send(PyTypeObject *t, __netpoll_sendfunc f) {
        if (t->tp_as_async == NULL || (t->tp_base && t->tp_as_async == t->tp_base->tp_as_async)) {
            PyErr_SetString(PyExc_SystemError, "type has no async slot table of its own");
            return -1;
        }
        t->tp_as_async->am_send = (sendfunc)f;
        PyType_Modified(t);
        return 0;
    }
    """
    ctypedef int (*__netpoll_sendfunc)(PyObject *, PyObject *, PyObject **) except -1
    int __netpoll_set_am_send(PyTypeObject *t, __netpoll_sendfunc f) except -1

__netpoll_set_am_send(<PyTypeObject *>_RW, _rw_send)
