# cython: language_level=3, boundscheck=False, wraparound=False
"""The FD layer: Go's internal/poll.FD and fdMutex, in Cython.

Every I/O method tries the system call first; on EAGAIN it waits on the poll
descriptor and tries again. Reads serialise with reads and writes with writes
(fdMutex), so at most one goroutine waits per direction, which is what the
poll descriptor's rg/wg semaphores assume. Close evicts the descriptor
(waking every waiter with ClosedError) but the real close(2) happens only
when the last in-flight operation has left: no operation ever runs on an fd
number that was closed and reused under it.

fdMutex state, as Go lays it out in one word (here: separate fields):
  closed        set once by close
  rlock, wlock  the read / write lock is held
  refs          references: one per operation in flight (locked or not)
  rwait, wwait  goroutines parked waiting for the read / write lock (None
                until the first: rwunlock, on every operation, then tests a
                field of the FD instead of touching a list elsewhere in memory)
Pairs: read/accept/recvfrom take rwlock(True)/rwunlock(True); write/writev/
sendto take rwlock(False)/rwunlock(False); deadlines, shutdown and socket
options take incref/decref; close takes increfAndClose then decref.
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

from netpoll._netpoll cimport (PollDesc, Park, _Wait, nanotime, pollerror,
                               pollreadhint, pollreset, MODE_R, MODE_W)
from netpoll._sched cimport Sched, getsched

from netpoll import hooks as _hooks
from netpoll._netpoll import pollclose as _pollclose
from netpoll.errors import ClosedError, NetpollError

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


cdef object _closing():
    return ClosedError()


def deadline_ns(t):
    """A deadline given as absolute ``netpoll.now()`` seconds, as PollDesc wants
    it: None -> 0 (none); past or -inf -> -1 (expired); +inf or beyond the
    clock's range -> the far future. NaN is a ValueError."""
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


cdef class _RW


cdef class FD:
    """A non-blocking descriptor registered with the running runtime's poller."""
    cdef readonly object sock
    cdef readonly int sysfd
    cdef readonly bint stream       # clamp I/O at MAX_RW; a zero read is EOF
    cdef PollDesc pd
    cdef Sched sched
    # fdMutex
    cdef bint fdclosed, rlock, wlock
    cdef bint rdrained              # the last read was short (see read)
    cdef Py_ssize_t refs
    cdef list rwait, wwait

    def __init__(self, sock, bint stream=True):
        self.sock = sock
        self.sysfd = sock.fileno()
        self.stream = stream
        self.sched = getsched()
        self.pd = self.sched.pollopen(self.sysfd)

    def fileno(self):
        return self.sysfd

    def wrap_error(self, op, err):
        """The exception an I/O method raises for ``err``; the net layer
        overrides this to add its OpError context. Called on error paths only."""
        return err

    # -- fdMutex -----------------------------------------------------------

    cdef inline bint lock_free(self, bint read):
        return not (self.rlock if read else self.wlock)

    cdef inline void take(self, bint read):
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
        if self.fdclosed and self.refs == 0:
            self.destroy()
        return 0

    cdef int rwunlock(self, bint read) except -1:
        # Hand the lock on by waking one waiter; it retries (no FIFO
        # hand-off, a newcomer may win, as in Go).
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
        if self.fdclosed and self.refs == 0:
            # As Go's readUnlock/writeUnlock: the last reference after close
            # destroys, and destroy's error is not this operation's error (it
            # already failed or succeeded on its own terms), so it is dropped.
            try:
                self.destroy()
            except OSError:
                pass
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

    cdef int destroy(self) except -1:
        # Deregister before close(2), so a reused fd number is never
        # registered twice; the close goes through the hook table.
        cdef PollDesc pd = self.pd
        self.pd = None
        sock = self.sock
        self.sysfd = -1
        try:
            if pd is not None:
                _pollclose(pd)
        finally:
            _hooks.close(sock)
        return 0

    def close(self):
        """Evict and close; the OS descriptor closes when the last operation leaves."""
        if self.fdclosed:
            raise _closing()
        self.fdclosed = True
        self.refs += 1
        # fdMutex waiters wake, see closed and fail; poll waiters wake with
        # ClosedError and leave, dropping their references.
        cdef list waiters = (self.rwait or []) + (self.wwait or [])
        self.rwait = None
        self.wwait = None
        if waiters:
            self.sched.readylist(waiters)
        if self.pd is not None:
            self.sched.readylist(self.pd.evict())
        self.decref()

    @property
    def closed(self):
        return self.fdclosed

    # -- deadlines -----------------------------------------------------------

    def set_deadline(self, t, mode="rw"):
        """Deadline for pending and future operations; see deadline_ns."""
        cdef int64_t d = deadline_ns(t)
        self.incref()
        try:
            if self.pd is None:
                raise OSError(_errno.EINVAL, "file type does not support deadline")
            self.sched.readylist(self.pd.set_deadline(d, mode))
        finally:
            self.decref()

    # -- I/O -------------------------------------------------------------------
    # Each method: take the lock, pollreset (fail fast on close/deadline, drop
    # stale readiness), then syscall -> EAGAIN -> wait -> syscall. Errors
    # leave through wrap_error. read, write and wait_readable, the calls of
    # every message, are hand-written awaitables (_RW below); the rest are
    # coroutines.

    def read(self, buf):
        """Read into a writable buffer; 0 means EOF on a stream."""
        cdef _RW op = _RW.__new__(_RW)
        try:
            PyObject_GetBuffer(buf, &op.view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError(f"read() needs a writable buffer, not a read-only {type(buf).__name__}") from None
        op.hasview = True
        op.fd = self
        op.kind = OP_READ
        return op

    def wait_readable(self):
        """Park until a read is likely to find data, EOF or an error, without
        holding a buffer: a goroutine per connection can take a buffer from a
        pool only once its peer has sent something. A read after it may still
        park (the readiness can be spurious); nothing is consumed."""
        cdef _RW op = _RW.__new__(_RW)
        op.fd = self
        op.kind = OP_WAITREAD
        return op

    def write(self, data):
        """Write all of ``data``, looping over partial writes; returns len(data)."""
        if isinstance(data, str):
            raise TypeError("write() needs bytes-like data, not str (encode it first)")
        cdef _RW op = _RW.__new__(_RW)
        PyObject_GetBuffer(data, &op.view, PyBUF_SIMPLE)
        op.hasview = True
        op.fd = self
        op.kind = OP_WRITE
        return op

    cdef bint read_begin(self, _RW op) except -1:
        # True: wait for readiness before the first read(2).
        # The last read came up short, so the stream was empty then, and no
        # readiness has been seen since: any data that arrived after it
        # raises a new edge (or is seen by a level poll once armed), so skip
        # the read that would fail with EAGAIN and wait first. Not after a
        # hang-up: a FIN that came before that read makes the next one
        # return EOF with no new edge. Checked before pollreset, which drops
        # the readiness that says "read".
        cdef bint probe = not self.rdrained or pollreadhint(self.pd)
        cdef int err = pollreset(self.pd, MODE_R)
        if err:
            raise pollerror(self.pd, err)
        return not probe

    cdef int read_ready(self) except -1:
        # wait_readable is done: the readiness it saw was consumed (or none
        # was known), so the next read must try the syscall.
        self.rdrained = False
        return 0

    cdef bint read_once(self, _RW op) except -1:
        # True: done (op.n set); False: EAGAIN.
        cdef ssize_t n
        cdef size_t want = op.view.len
        cdef int err
        if self.stream and want > MAX_RW:
            want = MAX_RW
        while True:
            n = c_read(self.sysfd, op.view.buf, want)
            if n >= 0:
                # A short read empties a stream socket's receive queue (TCP
                # and unix stream reads copy every queued segment); a
                # datagram read says nothing about the next.
                self.rdrained = self.stream and 0 < n < <ssize_t>want
                op.n = n
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
            want = op.view.len - op.n
            if self.stream and want > MAX_RW:
                want = MAX_RW
            n = c_write(self.sysfd, <char *>op.view.buf + op.n, want)
            if n > 0:
                op.n += n
            if op.n == op.view.len:
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
        """Write a sequence of buffers with writev(2), at most IOV_MAX per call."""
        cdef Py_buffer views[IOV_MAX]
        cdef iovec iov[IOV_MAX]
        cdef int cnt, i, err
        cdef ssize_t n
        cdef Py_ssize_t total = 0, skip = 0, idx = 0
        cdef list bufs = list(buffers)
        for b in bufs:
            if isinstance(b, str):
                raise TypeError("writev() needs bytes-like buffers, not str")
        cdef list lens = [memoryview(b).nbytes for b in bufs]
        try:
            w = self.rwlock(False)
            if w is not None:
                await w
            try:
                err = pollreset(self.pd, MODE_W)
                if err:
                    raise pollerror(self.pd, err)
                while idx < len(bufs):
                    cnt = 0
                    try:
                        while cnt < IOV_MAX and idx + cnt < len(bufs):
                            PyObject_GetBuffer(bufs[idx + cnt], &views[cnt], PyBUF_SIMPLE)
                            iov[cnt].iov_base = <char *>views[cnt].buf + (skip if cnt == 0 else 0)
                            iov[cnt].iov_len = views[cnt].len - (skip if cnt == 0 else 0)
                            cnt += 1
                        n = writev(self.sysfd, iov, cnt)
                        err = errno
                    finally:
                        for i in range(cnt):
                            PyBuffer_Release(&views[i])
                    if n < 0:
                        if err == EAGAIN:
                            await self.pd.wwait
                            continue
                        if err == EINTR:
                            continue
                        raise OSError(err, _os.strerror(err))
                    total += n
                    # Go's consume: drop whole buffers, trim the first partial one.
                    n += skip
                    skip = 0
                    while idx < len(bufs):
                        if n >= <ssize_t>lens[idx]:
                            n -= <ssize_t>lens[idx]
                            idx += 1
                        else:
                            skip = n
                            break
                return total
            finally:
                self.rwunlock(False)
        except OSError as e:
            raise self.wrap_error("writev", e)

    async def _retry(self, bint read, str op, tuple again, fn, *args):
        # The calls made through the hook table or the socket object: lock,
        # pollreset, call; EAGAIN (BlockingIOError) waits for readiness, the
        # errors in `again` try again at once.
        cdef int err
        try:
            w = self.rwlock(read)
            if w is not None:
                await w
            try:
                err = pollreset(self.pd, MODE_R if read else MODE_W)
                if err:
                    raise pollerror(self.pd, err)
                while True:
                    try:
                        return fn(*args)
                    except BlockingIOError:
                        await (self.pd.rwait if read else self.pd.wwait)
                    except again:
                        pass
            finally:
                self.rwunlock(read)
        except OSError as e:
            raise self.wrap_error(op, e)

    def accept(self):
        """Accept a connection through the hook table; returns (socket, addr)."""
        # ECONNABORTED: a queued connection was reset before we took it; take
        # the next.
        return self._retry(True, "accept", (InterruptedError, ConnectionAbortedError),
                           _hooks.accept, self.sock)

    def recvfrom(self, buf):
        """recvfrom into a writable buffer: (n, address). No EOF for datagrams."""
        memoryview(buf).cast("B")  # read-only or non-buffer: a clear error first
        return self._retry(True, "read", (InterruptedError,), self.sock.recvfrom_into, buf)

    def sendto(self, data, addr):
        """sendto: a datagram is sent whole; returns len(data)."""
        if isinstance(data, str):
            raise TypeError("write_to() needs bytes-like data, not str (encode it first)")
        return self._retry(False, "write", (InterruptedError,), self.sock.sendto, data, addr)

    async def wait_write(self):
        """Park until writable (a non-blocking connect in progress)."""
        self.incref()
        try:
            await self.pd.wwait
        finally:
            self.decref()

    def shutdown(self, how):
        self.incref()
        # A local shutdown makes the next read return EOF: probe it.
        self.rdrained = False
        try:
            self.sock.shutdown(how)
        finally:
            self.decref()

    def control(self, fn, *args):
        """Call ``fn(sock, *args)`` holding a reference (socket options)."""
        self.incref()
        try:
            return fn(self.sock, *args)
        finally:
            self.decref()


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
    S_LOCK = 1      # parked on the fdMutex (lw)
    S_IO = 2        # holds the lock; trying the syscall or parked on the poll descriptor (pw)
    S_DONE = 3      # finished: holds nothing


@cython.freelist(16)
@cython.no_gc_clear
cdef class _RW:
    # One read, write or wait_readable call, awaited once. A coroutine would
    # cost three objects per call (the coroutine, its closure, and the
    # wrapper __await__ returns to Python code) and a StopIteration per
    # result; this is one object from a free list, and its am_send slot
    # (installed at import, Cython does not map it) hands the result back
    # without an exception. The steps are those of the coroutines: lock,
    # pollreset, syscall -> EAGAIN -> pollWait -> syscall; pw or lw is the
    # Park yielded while suspended, and finish() releases the lock and the
    # buffer on every way out (result, error, throw, close, dealloc).
    cdef FD fd
    cdef Py_buffer view
    cdef bint hasview, locked
    cdef int kind, state
    cdef Py_ssize_t n
    cdef _LockWait lw
    cdef _Wait pw

    # Not an Awaiter subclass: a free list works only on a base class.
    def __await__(self):
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
        if self.pw is not None:
            self.pw._abandon()
            self.pw = None
        self.finish()

    def __dealloc__(self):
        # Only a started call dropped without close() (a coroutine's own
        # finalizer closes what it awaits) gets here holding the lock.
        if self.state == S_IO and self.pw is not None:
            self.pw._abandon()
        self.finish()

    cdef int finish(self) except -1:
        # Idempotent; an error here is an fdMutex invariant broken (rwunlock
        # already drops destroy's own errors), so it propagates.
        cdef bint locked = self.locked
        self.state = S_DONE
        self.locked = False
        if self.hasview:
            self.hasview = False
            PyBuffer_Release(&self.view)
        if locked:
            self.fd.rwunlock(self.kind != OP_WRITE)
        return 0

    cdef bint wait(self, _Wait w) except -1:
        # pollWait: True when parked (yield pw), False when already ready.
        w.begin()
        if w.step():
            self.pw = w
            return True
        return False

    cdef int step(self) except -1:
        # 1: parked on lw or pw; 0: finished, the result in n.
        cdef FD fd = self.fd
        cdef bint read = self.kind != OP_WRITE
        cdef int err
        if self.state == S_NEW:
            if fd.fdclosed:
                raise _closing()
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
                err = pollreset(fd.pd, MODE_W)
                if err:
                    raise pollerror(fd.pd, err)
            elif self.kind == OP_READ and self.view.len == 0:
                return 0
            elif fd.read_begin(self) and self.wait(fd.pd.rwait):
                return 1
            elif self.kind == OP_WAITREAD:
                return fd.read_ready()
        elif self.pw is not None:
            # Resumed from pollWait.
            if self.pw.step():
                return 1
            self.pw = None
            if self.kind == OP_WAITREAD:
                return fd.read_ready()
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


cdef int _rw_send(PyObject *o, PyObject *arg, PyObject **res) except -1:
    # The am_send slot (PySendResult: 1 next, 0 return, -1 error).
    cdef _RW op = <_RW>o
    cdef int r
    cdef object v
    if op.state == S_DONE:
        raise RuntimeError("cannot reuse an already awaited read/write")
    try:
        r = op.step()
    except BaseException as e:
        op.finish()
        if isinstance(e, OSError):
            raise op.fd.wrap_error("write" if op.kind == OP_WRITE else "read", e)
        raise
    if r == 1:
        v = op.lw if op.lw is not None else op.pw
    else:
        op.finish()
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
