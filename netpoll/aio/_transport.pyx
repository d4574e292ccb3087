# cython: language_level=3, boundscheck=False, wraparound=False
"""The loop's socket stream transport (TCP and unix, without TLS), compiled.

asyncio's semantics (``selector_events._SelectorSocketTransport``) on a
netpoll poll descriptor, without asyncio Handles on the hot path:

- Reading is one goroutine per transport (``_Reader``), parked in the
  descriptor's read semaphore. When the poller readies it, it calls
  ``recv``/``recv_into`` and the protocol's ``data_received`` or
  ``get_buffer``/``buffer_updated`` itself, in the context asyncio would use
  (a copy of the one ``_add_reader`` ran in). One read per step, as asyncio
  reads once per iteration: after a read it yields to the run queue, so the
  loop's callbacks (what the protocol queued) run before the next read, and
  the next read either delivers or meets EAGAIN and parks. After a short
  TCP read it parks at once where ``pollskipok`` allows it (see
  _netpoll.pxd); unix streams never skip (a read stops short after a
  message that carried descriptors).
- ``write`` sends at once while the buffer is empty; only the rest of a
  partial send is buffered, and then a ``_Writer`` goroutine waits in the
  write semaphore and drains the buffer as asyncio's ``_write_ready`` does.
- A goroutine never touches the descriptor once the transport released it
  (``dead``): release leaves both semaphores, then evicts and frees the
  descriptor, which the pollcache hands to the next fd.
- Pausing leaves a parked reader parked (``on`` cleared): if it is woken, it
  exits without reading; a reader started again always reads first, so no
  readiness consumed by an exiting reader is lost.

The Python class ``SocketTransport`` (an ``asyncio.Transport`` and
``_FlowControlMixin``, so that ``isinstance`` checks pass) forwards to the
``_Conn`` that holds the state.
"""

from cpython.buffer cimport (PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy

from netpoll._netpoll cimport (MODE_R, MODE_W, Park, PollDesc, _Wait, _dir,
                               netpollblock, netpollblockcommit, netpollcheckerr,
                               pdG, pdNil, pollErrClosing, pollreset, pollskipok)
from netpoll._sched cimport G, Sched

import inspect as _inspect
import os as _os
import socket as _socket
import warnings as _warnings
from asyncio import base_events as _base_events
from asyncio import constants as _constants
from asyncio import futures as _futures
from asyncio import protocols as _protocols
from asyncio import transports as _transports
from asyncio import trsock as _trsock
from asyncio.log import logger as _logger

from netpoll import _netpoll

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from *:
    """
    #ifdef MSG_NOSIGNAL
    #define NETPOLL_SEND_FLAGS MSG_NOSIGNAL
    #else
    #define NETPOLL_SEND_FLAGS 0
    #endif
    """
    int NETPOLL_SEND_FLAGS


cdef enum:
    MAX_SIZE = 262144     # asyncio's max_size: the most one recv() asks for

    # _Reader / _Writer states
    S_OFF = 0             # no goroutine
    S_RUN = 1             # its goroutine is queued or running
    S_PARKED = 2          # parked in the semaphore (or readied from it)
    S_FIRST = 3           # a new writer: its first step waits without a send

    # one read
    RD_AGAIN = 0          # EAGAIN: wait for readiness
    RD_FULL = 1           # the buffer was filled: read again
    RD_SHORT = 2          # a short read
    RD_STOP = 3           # EOF, an error, or the transport stopped reading

    # one write
    WR_AGAIN = 0
    WR_DONE = 1

# One buffer for every reader of every loop: a read and its copy into bytes
# run without releasing the GIL, so no two readers use it at once.
cdef char _rbuf[MAX_SIZE]

# Server._attach/_detach take the transport from Python 3.13 on.
_SERVER_TAKES_TRANSPORT = len(_inspect.signature(_base_events.Server._attach).parameters) > 1


cdef object _oserror(int e):
    return OSError(e, _os.strerror(e))


cdef class _Conn:
    cdef object transport            # the SocketTransport handed to protocols
    cdef object loop
    cdef Sched sched
    cdef object sock
    cdef int fd
    cdef PollDesc pd                 # None once released
    cdef dict shared                 # the loop's fd -> pd of transports
    cdef object protocol
    cdef bint buffered               # protocol is a BufferedProtocol
    cdef bint protocol_connected
    cdef object server
    cdef bytearray buffer
    cdef Py_ssize_t conn_lost
    cdef bint closing
    cdef bint paused
    cdef bint eof
    cdef object empty_waiter
    cdef bint protocol_paused
    cdef Py_ssize_t high_water, low_water
    cdef bint skip                   # TCP: a short read may park (pollskipok)
    cdef _Reader reader
    cdef _Writer writer

    def __cinit__(self, transport, loop, sock, protocol, waiter, server):
        self.transport = transport
        self.loop = loop
        self.sched = <Sched>loop._core.sched
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = bytearray()
        self.set_limits(None, None)
        extra = transport._extra
        extra['socket'] = _trsock.TransportSocket(sock)
        try:
            extra['sockname'] = sock.getsockname()
        except OSError:
            extra['sockname'] = None
        if 'peername' not in extra:
            try:
                extra['peername'] = sock.getpeername()
            except OSError:
                extra['peername'] = None
        self.pd = self.sched.pollopen(self.fd)
        self.shared = loop._stream_pds
        self.shared[self.fd] = self.pd
        self.skip = (sock.family in (_socket.AF_INET, _socket.AF_INET6)
                     and sock.proto in (0, _socket.IPPROTO_TCP))
        self.reader = _Reader.__new__(_Reader)
        self.reader.conn = self
        self.writer = _Writer.__new__(_Writer)
        self.writer.conn = self
        self.set_protocol(protocol)
        self.server = server
        if server is not None:
            if _SERVER_TAKES_TRANSPORT:
                server._attach(transport)
            else:
                server._attach()
        loop._transports[self.fd] = transport
        _base_events._set_nodelay(sock)
        loop.call_soon(protocol.connection_made, transport)
        # Reading starts once connection_made() has run.
        loop.call_soon(self._add_reader)
        if waiter is not None:
            loop.call_soon(_futures._set_result_unless_cancelled, waiter, None)

    # -- protocol and flow control ---------------------------------------------

    cdef set_protocol(self, protocol):
        self.buffered = isinstance(protocol, _protocols.BufferedProtocol)
        self.protocol = protocol
        self.protocol_connected = True

    cdef set_limits(self, high, low):
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f'high ({high!r}) must be >= low ({low!r}) must be >= 0')
        self.high_water = high
        self.low_water = low

    cdef int maybe_pause_protocol(self) except -1:
        if PyByteArray_GET_SIZE(self.buffer) <= self.high_water or self.protocol_paused:
            return 0
        self.protocol_paused = True
        try:
            self.protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.loop.call_exception_handler({
                'message': 'protocol.pause_writing() failed',
                'exception': exc,
                'transport': self.transport,
                'protocol': self.protocol,
            })
        return 0

    cdef int maybe_resume_protocol(self) except -1:
        if not self.protocol_paused or PyByteArray_GET_SIZE(self.buffer) > self.low_water:
            return 0
        self.protocol_paused = False
        try:
            self.protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.loop.call_exception_handler({
                'message': 'protocol.resume_writing() failed',
                'exception': exc,
                'transport': self.transport,
                'protocol': self.protocol,
            })
        return 0

    # -- reading ---------------------------------------------------------------

    cdef inline bint is_reading(self):
        return not self.closing and not self.paused

    def _add_reader(self):
        if self.is_reading() and self.pd is not None:
            self.reader.start()

    cdef int read_once(self) except -1:
        # One read and its protocol call; asyncio's _read_ready__*.
        cdef ssize_t n
        cdef Py_buffer view
        cdef Py_ssize_t size
        if self.conn_lost:
            return RD_STOP
        if not self.buffered:
            while True:
                n = c_recv(self.fd, _rbuf, MAX_SIZE, 0)
                if n >= 0:
                    break
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    return RD_AGAIN
                self.fatal_error(_oserror(errno), 'Fatal read error on socket transport')
                return RD_STOP
            if n == 0:
                self.on_eof()
                return RD_STOP
            data = PyBytes_FromStringAndSize(_rbuf, n)
            try:
                self.protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
                return RD_STOP
            return RD_FULL if n == MAX_SIZE else RD_SHORT

        try:
            buf = self.protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError('get_buffer() returned an empty buffer')
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
            return RD_STOP
        try:
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal read error on socket transport')
            return RD_STOP
        try:
            size = view.len
            while True:
                n = c_recv(self.fd, view.buf, <size_t>size, 0)
                if n >= 0:
                    break
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    return RD_AGAIN
                self.fatal_error(_oserror(errno), 'Fatal read error on socket transport')
                return RD_STOP
        finally:
            PyBuffer_Release(&view)
        if n == 0:
            self.on_eof()
            return RD_STOP
        try:
            self.protocol.buffer_updated(n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
            return RD_STOP
        return RD_FULL if n == size else RD_SHORT

    cdef on_eof(self):
        if self.loop.get_debug():
            _logger.debug("%r received EOF", self.transport)
        try:
            keep_open = self.protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return
        if keep_open:
            # The protocol may still write; nothing more can be read.
            self.reader.on = False
        else:
            self.close()

    # -- writing ---------------------------------------------------------------

    cdef write(self, data):
        cdef Py_buffer view
        cdef ssize_t n
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if self.eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if self.empty_waiter is not None:
            raise RuntimeError('unable to write; sendfile is in progress')
        if not data:
            return
        if self.conn_lost or self.pd is None:
            if self.conn_lost >= _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _logger.warning('socket.send() raised exception.')
            self.conn_lost += 1
            return
        if isinstance(data, memoryview) and not (<object>data).c_contiguous:
            data = (<object>data).tobytes()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = 0
            if PyByteArray_GET_SIZE(self.buffer) == 0:
                # A stale write readiness would cost the writer a wasted send.
                pollreset(self.pd, MODE_W)
                while True:
                    n = c_send(self.fd, view.buf, <size_t>view.len, NETPOLL_SEND_FLAGS)
                    if n >= 0:
                        break
                    if errno == EINTR:
                        PyErr_CheckSignals()
                        continue
                    if errno == EAGAIN or errno == EWOULDBLOCK:
                        n = 0
                        break
                    self.fatal_error(_oserror(errno), 'Fatal write error on socket transport')
                    return
                if n == view.len:
                    return
                self.writer.start()
            self.append(<const char *>view.buf + n, view.len - n)
        finally:
            PyBuffer_Release(&view)
        self.maybe_pause_protocol()

    cdef int append(self, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t old = PyByteArray_GET_SIZE(self.buffer)
        PyByteArray_Resize(self.buffer, old + n)
        memcpy(PyByteArray_AS_STRING(self.buffer) + old, p, n)
        return 0

    cdef int write_ready(self) except -1:
        # asyncio's _write_ready: one send of the buffer.
        cdef ssize_t n
        if self.conn_lost:
            return WR_DONE
        while True:
            n = c_send(self.fd, PyByteArray_AS_STRING(self.buffer),
                       <size_t>PyByteArray_GET_SIZE(self.buffer), NETPOLL_SEND_FLAGS)
            if n >= 0:
                break
            if errno == EINTR:
                PyErr_CheckSignals()
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return WR_AGAIN
            exc = _oserror(errno)
            self.writer.on = False
            del self.buffer[:]
            self.fatal_error(exc, 'Fatal write error on socket transport')
            if self.empty_waiter is not None:
                self.empty_waiter.set_exception(exc)
            return WR_DONE
        if n:
            del self.buffer[:n]
        self.maybe_resume_protocol()  # may append to the buffer, or close
        if self.conn_lost:
            return WR_DONE
        if PyByteArray_GET_SIZE(self.buffer):
            return WR_AGAIN
        self.writer.on = False
        if self.empty_waiter is not None:
            self.empty_waiter.set_result(None)
        if self.closing:
            self.call_connection_lost(None)
        elif self.eof:
            self.sock.shutdown(_socket.SHUT_WR)
        return WR_DONE

    cdef write_eof(self):
        if self.closing or self.eof:
            return
        self.eof = True
        if not PyByteArray_GET_SIZE(self.buffer):
            self.sock.shutdown(_socket.SHUT_WR)

    # -- closing ---------------------------------------------------------------

    cdef close(self):
        if self.closing:
            return
        self.closing = True
        self.reader.on = False
        if not PyByteArray_GET_SIZE(self.buffer):
            self.conn_lost += 1
            self.writer.on = False
            self.loop.call_soon(self._call_connection_lost, None)

    cdef fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self.loop.get_debug():
                _logger.debug("%r: %s", self.transport, message, exc_info=exc)
        else:
            self.loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self.transport,
                'protocol': self.protocol,
            })
        self.force_close(exc)

    cdef force_close(self, exc):
        if self.conn_lost:
            return
        if PyByteArray_GET_SIZE(self.buffer):
            del self.buffer[:]
            self.writer.on = False
        if not self.closing:
            self.closing = True
            self.reader.on = False
        self.conn_lost += 1
        self.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        self.call_connection_lost(exc)

    cdef call_connection_lost(self, exc):
        try:
            if self.protocol_connected:
                self.protocol.connection_lost(exc)
        finally:
            self.release()
            self.sock.close()
            self.sock = None
            self.protocol = None
            self.loop = None
            server = self.server
            if server is not None:
                if _SERVER_TAKES_TRANSPORT:
                    server._detach(self.transport)
                else:
                    server._detach()
                self.server = None
            if self.empty_waiter is not None:
                self.empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))

    cdef release(self):
        # Before close(2): the goroutines leave the descriptor, then it is
        # deregistered and freed.
        cdef PollDesc pd = self.pd
        if pd is None:
            return
        self.reader.kill()
        self.writer.kill()
        self.pd = None
        if self.shared.get(self.fd) is pd:
            del self.shared[self.fd]
        try:
            self.sched.wake(pd.evict())
            _netpoll.pollclose(pd)
        except OSError:
            pass


cdef class _Reader(Park):
    # The transport's read goroutine: its coroutine and the Park it yields.
    cdef _Conn conn
    cdef int state
    cdef bint on                     # asyncio's reader is registered
    cdef bint dead                   # the descriptor was released
    cdef object context
    cdef G g

    cdef start(self):
        self.on = True
        self.context = PyContext_CopyCurrent()
        if self.state == S_OFF:
            self.state = S_RUN
            self.g = self.conn.sched.newproc(self)

    cdef kill(self):
        self.on = False
        self.dead = True
        _unpark(self.conn, self.state, MODE_R, self.g)

    def __next__(self):
        cdef _Conn c = self.conn
        cdef PollDesc pd
        cdef _Wait gpp
        cdef int r
        if self.dead:
            self.state = S_OFF
            raise StopIteration
        pd = c.pd
        gpp = _dir(pd, MODE_R)
        if self.state == S_PARKED:
            gpp.g = pdNil  # the readiness it was woken for (or nothing: unparked)
            self.state = S_RUN
        if not self.on or netpollcheckerr(pd, MODE_R) == pollErrClosing:
            self.state = S_OFF
            raise StopIteration
        ctx = self.context
        PyContext_Enter(ctx)
        try:
            while True:
                try:
                    r = c.read_once()
                except (SystemExit, KeyboardInterrupt):
                    # As from asyncio's loop: raised out of run_forever, and
                    # reading goes on in the next run.
                    c.sched.runqput(self.g)
                    raise
                if self.dead or not self.on or r == RD_STOP:
                    self.state = S_OFF
                    raise StopIteration
                if r == RD_AGAIN or (r == RD_SHORT and c.skip and pollskipok(pd)):
                    if netpollblock(gpp):
                        if r == RD_AGAIN:
                            continue
                        return self
                    r = netpollcheckerr(pd, MODE_R)
                    if r == pollErrClosing:
                        gpp.g = pdNil
                        self.state = S_OFF
                        raise StopIteration
                    if r != 0:
                        # An error event: the next read reports the error.
                        gpp.g = pdNil
                        return self
                    if pd.backend.arm:
                        pd.backend.netpollarm(pd, MODE_R)
                    self.state = S_PARKED
                    return self
                # One read per run of the queue, as asyncio reads once per
                # iteration: what the protocol queued runs before the next.
                return self
        finally:
            PyContext_Exit(ctx)

    cdef bint commit(self, object g) except -1:
        if self.state == S_PARKED:
            return netpollblockcommit(_dir(self.conn.pd, MODE_R), g)
        return False  # yield: back of the run queue

    def close(self):
        # The runtime ending closes leftover goroutines.
        _leave(self.conn, self.state, MODE_R)
        self.state = S_OFF
        self.on = False


cdef class _Writer(Park):
    # The transport's write goroutine, alive while the buffer is not empty.
    cdef _Conn conn
    cdef int state
    cdef bint on                     # asyncio's writer is registered
    cdef bint dead
    cdef object context
    cdef G g

    cdef start(self):
        self.on = True
        if self.state == S_OFF:
            self.context = PyContext_CopyCurrent()
            self.state = S_FIRST  # its first step waits: the send just came short
            self.g = self.conn.sched.newproc(self)

    cdef kill(self):
        self.on = False
        self.dead = True
        _unpark(self.conn, self.state, MODE_W, self.g)

    def __next__(self):
        cdef _Conn c = self.conn
        cdef PollDesc pd
        cdef _Wait gpp
        cdef int r
        cdef bint send = True
        if self.dead:
            self.state = S_OFF
            raise StopIteration
        pd = c.pd
        gpp = _dir(pd, MODE_W)
        if self.state == S_PARKED:
            gpp.g = pdNil
        elif self.state == S_FIRST:
            send = False
        self.state = S_RUN
        ctx = self.context
        PyContext_Enter(ctx)
        try:
            while True:
                if not self.on or netpollcheckerr(pd, MODE_W) == pollErrClosing:
                    self.state = S_OFF
                    raise StopIteration
                if send:
                    try:
                        r = c.write_ready()
                    except (SystemExit, KeyboardInterrupt):
                        c.sched.runqput(self.g)
                        raise
                    if r == WR_DONE or self.dead or not self.on:
                        self.state = S_OFF
                        raise StopIteration
                send = True
                if netpollblock(gpp):
                    continue
                if netpollcheckerr(pd, MODE_W) == pollErrClosing:
                    gpp.g = pdNil
                    self.state = S_OFF
                    raise StopIteration
                if pd.backend.arm:
                    pd.backend.netpollarm(pd, MODE_W)
                self.state = S_PARKED
                return self
        finally:
            PyContext_Exit(ctx)

    cdef bint commit(self, object g) except -1:
        return netpollblockcommit(_dir(self.conn.pd, MODE_W), g)

    def close(self):
        _leave(self.conn, self.state, MODE_W)
        self.state = S_OFF
        self.on = False


cdef int _unpark(_Conn c, int state, int mode, G g) except -1:
    # A goroutine parked in the semaphore is taken out and queued, so that
    # it runs once and exits; one readied from it is queued already.
    if _leave(c, state, mode):
        c.sched.runqput(g)
    return 0


cdef bint _leave(_Conn c, int state, int mode):
    cdef PollDesc pd = c.pd
    cdef _Wait gpp
    if state != S_PARKED or pd is None:
        return False
    gpp = _dir(pd, mode)
    if gpp.g != pdG:
        return False
    gpp.gp = None
    gpp.g = pdNil
    pd.backend.waiters -= 1
    return True


class SocketTransport(_transports._FlowControlMixin, _transports.Transport):
    """A TCP or unix stream socket's transport on the netpoll.aio loop:
    asyncio's ``_SelectorSocketTransport`` semantics, compiled."""

    _start_tls_compatible = True
    _sendfile_compatible = _constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        _transports.BaseTransport.__init__(self, extra)
        self._c = _Conn(self, loop, sock, protocol, waiter, server)

    def __repr__(self):
        cdef _Conn c = self._c
        info = [self.__class__.__name__]
        if c.sock is None:
            info.append('closed')
        elif c.closing:
            info.append('closing')
        info.append(f'fd={c.fd}')
        if c.loop is not None and not c.loop.is_closed():
            info.append('read=polling' if c.reader.on and c.reader.state != S_OFF else 'read=idle')
            state = 'polling' if c.writer.on else 'idle'
            info.append(f'write=<{state}, bufsize={len(c.buffer)}>')
        return '<{}>'.format(' '.join(info))

    def __del__(self, _warn=_warnings.warn):
        c = self.__dict__.get('_c')
        if c is not None and (<_Conn>c).sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            (<_Conn>c).release()
            (<_Conn>c).sock.close()

    # -- asyncio.Transport -------------------------------------------------------

    def write(self, data):
        (<_Conn>self._c).write(data)

    def writelines(self, list_of_data):
        (<_Conn>self._c).write(b''.join(list_of_data))

    def write_eof(self):
        (<_Conn>self._c).write_eof()

    def can_write_eof(self):
        return True

    def is_closing(self):
        return (<_Conn>self._c).closing

    def is_reading(self):
        return (<_Conn>self._c).is_reading()

    def pause_reading(self):
        cdef _Conn c = self._c
        if not c.is_reading():
            return
        c.paused = True
        c.reader.on = False
        if c.loop.get_debug():
            _logger.debug("%r pauses reading", self)

    def resume_reading(self):
        cdef _Conn c = self._c
        if c.closing or not c.paused:
            return
        c.paused = False
        c._add_reader()
        if c.loop.get_debug():
            _logger.debug("%r resumes reading", self)

    def set_protocol(self, protocol):
        (<_Conn>self._c).set_protocol(protocol)

    def get_protocol(self):
        return (<_Conn>self._c).protocol

    def close(self):
        (<_Conn>self._c).close()

    def abort(self):
        (<_Conn>self._c).force_close(None)

    def get_write_buffer_size(self):
        return len((<_Conn>self._c).buffer)

    def get_write_buffer_limits(self):
        cdef _Conn c = self._c
        return (c.low_water, c.high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        cdef _Conn c = self._c
        c.set_limits(high, low)
        c.maybe_pause_protocol()

    # -- what asyncio's loop, sendfile and SSLProtocol use -----------------------

    def _force_close(self, exc):
        (<_Conn>self._c).force_close(exc)

    def _fatal_error(self, exc, message='Fatal error on transport'):
        (<_Conn>self._c).fatal_error(exc, message)

    def _make_empty_waiter(self):
        cdef _Conn c = self._c
        if c.empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        c.empty_waiter = c.loop.create_future()
        if not c.buffer:
            c.empty_waiter.set_result(None)
        return c.empty_waiter

    def _reset_empty_waiter(self):
        (<_Conn>self._c).empty_waiter = None

    @property
    def _sock(self):
        return (<_Conn>self._c).sock

    @property
    def _sock_fd(self):
        return (<_Conn>self._c).fd

    @property
    def _loop(self):
        return (<_Conn>self._c).loop

    @property
    def _protocol(self):
        return (<_Conn>self._c).protocol

    @property
    def _protocol_paused(self):
        return (<_Conn>self._c).protocol_paused

    @property
    def _high_water(self):
        return (<_Conn>self._c).high_water

    @property
    def _low_water(self):
        return (<_Conn>self._c).low_water

    @property
    def _closing(self):
        return (<_Conn>self._c).closing

    @property
    def _conn_lost(self):
        return (<_Conn>self._c).conn_lost

    @property
    def _eof(self):
        return (<_Conn>self._c).eof

    @property
    def _paused(self):
        return (<_Conn>self._c).paused

    @property
    def _server(self):
        return (<_Conn>self._c).server

    @property
    def _empty_waiter(self):
        return (<_Conn>self._c).empty_waiter
