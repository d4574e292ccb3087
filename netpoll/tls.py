"""TLS on netpoll conns: Go's crypto/tls.Conn, on Python's ssl module.

OpenSSL does the cryptography through an ``ssl.SSLObject`` between two
``ssl.MemoryBIO``s; every ciphertext byte goes through the wrapped conn's
``read`` and ``write``, so its deadlines, its fdMutex and everything that
hooks it apply under TLS.

    tc = await tls.dial("tcp", "example.com:443")          # verifies example.com
    tc = tls.client(conn, ctx, server_name="example.com")  # wrap a connected conn
    ln = tls.listen("tcp", "127.0.0.1:0", server_ctx)      # accept() -> TLSConn
    await tc.handshake()                                   # or implicitly at first I/O
    n = await tc.read(buf); await tc.write(data)
    await tc.close_write(); tc.close()

The engine (one SSLObject call, then move bytes, then call again) follows
the shape of trio's SSLStream. Its invariants:

- SSLObject calls never await, so each one is atomic with respect to the
  other goroutines of the runtime.
- The outgoing BIO is FIFO; it is drained only by the holder of the send
  lock, which drains it until empty before releasing. Records therefore
  reach the wire in the order OpenSSL made them, whoever made them (a
  reader's KeyUpdate reply, a writer's data, an alert).
- After the handshake only the holder of the read lock reads the conn; the
  handshake itself runs under the handshake lock, which every read and
  write passes first. So the incoming BIO has one feeder at a time and no
  receive counter is needed.
- A goroutine parked on the conn for ciphertext holds no buffer: it waits
  in ``conn.wait_readable()`` and takes a receive buffer from a pool shared
  by every TLSConn only for the read itself. An idle conn holds OpenSSL's
  state, two empty BIOs and this object.
"""

from __future__ import annotations

import os
import ssl
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from netpoll import net
from netpoll.errors import ClosedError
from netpoll.runtime import now
from netpoll.sync import Event

__all__ = [
    "client", "server", "dial", "listen", "TLSConn", "Listener", "ConnectionState",
    "ClientSessionCache", "TLSError",
]

# One read(2) takes up to this much ciphertext: several full records (16 KiB
# of plaintext each, 16709 bytes on the wire at most) per system call in bulk
# transfers.
RECV_SIZE = 65536
# Receive buffers kept for reuse across every TLSConn (of every runtime: list
# pop/append are atomic).
_POOL_MAX = 64
_pool: list[bytearray] = []
# Plaintext encrypted per SSL_write before the ciphertext is flushed: bounds
# the outgoing BIO, so a large write never holds a second copy of itself.
WRITE_CHUNK = 262144
# Go's bound on sending close_notify when the caller set no write deadline.
CLOSE_NOTIFY_TIMEOUT = 5.0

_RECORD_HEADER = 5
# The longest record TLS allows on the wire: 2^14 + 2048 bytes of
# TLSCiphertext (TLS 1.2), and its header.
_MAX_RECORD = (1 << 14) + 2048 + _RECORD_HEADER


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class TLSError(ssl.SSLError):
    """A TLS failure with its cause named: ``kind`` is one of

    "certificate verify failed", "hostname mismatch", "certificate expired",
    "self-signed certificate", "unknown CA", "protocol version",
    "peer closed during handshake", "not TLS", "bad record",
    "unexpected EOF", "remote alert", "protocol is shutdown", "usage".

    Raised as a class that also derives from the ``ssl`` exception OpenSSL
    raised (``ssl.SSLCertVerificationError``, ``ssl.SSLEOFError``...), which
    is its ``__cause__``, so ``except ssl.SSLError`` code keeps working.
    """

    kind: str = "usage"


_error_classes: dict[type, type] = {}

# X509 verify codes (x509_vfy.h) that name a cause Go names too.
_VERIFY_KINDS = {
    10: "certificate expired",
    18: "self-signed certificate",
    19: "self-signed certificate",
    20: "unknown CA",
    21: "unknown CA",
    62: "hostname mismatch",
}

# OpenSSL reason codes -> (kind, what it means for the user).
_REASONS = {
    "TLSV1_ALERT_UNKNOWN_CA": ("unknown CA", "the peer does not trust the CA that signed our certificate"),
    "SSLV3_ALERT_BAD_CERTIFICATE": ("certificate verify failed", "the peer rejected our certificate"),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": ("certificate expired", "the peer says our certificate has expired"),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": ("certificate verify failed", "the peer requires a client certificate"),
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": ("certificate verify failed", "the client sent no certificate"),
    "UNSUPPORTED_PROTOCOL": ("protocol version", "no TLS version both sides allow"),
    "TLSV1_ALERT_PROTOCOL_VERSION": ("protocol version", "the peer allows none of our TLS versions"),
    "NO_PROTOCOLS_AVAILABLE": ("protocol version", "this context allows no TLS version"),
    "WRONG_VERSION_NUMBER": ("not TLS", "the peer does not speak TLS (plaintext?)"),
    "HTTP_REQUEST": ("not TLS", "the client sent a plaintext HTTP request"),
    "HTTPS_PROXY_REQUEST": ("not TLS", "the client sent a plaintext HTTP CONNECT"),
    "PACKET_LENGTH_TOO_LONG": ("bad record", "a record longer than TLS allows (garbage?)"),
    "RECORD_LAYER_FAILURE": ("bad record", "a malformed record"),
    "DECRYPTION_FAILED_OR_BAD_RECORD_MAC": ("bad record", "a record failed authentication"),
    "BAD_RECORD_MAC": ("bad record", "a record failed authentication"),
    "UNEXPECTED_RECORD": ("bad record", "a record of an unexpected type"),
    "UNEXPECTED_MESSAGE": ("bad record", "an unexpected handshake message"),
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": ("remote alert", "no ALPN protocol in common"),
    "NO_APPLICATION_PROTOCOL": ("remote alert", "no ALPN protocol in common"),
}


def _error_class(base: Optional[type]) -> type:
    if base is None or base is ssl.SSLError or issubclass(base, TLSError):
        return TLSError
    cls = _error_classes.get(base)
    if cls is None:
        cls = _error_classes[base] = type(f"TLSError[{base.__name__}]", (TLSError, base), {})
    return cls


def _new_error(cause: Optional[BaseException], kind: str, msg: str) -> TLSError:
    cls = _error_class(type(cause) if isinstance(cause, ssl.SSLError) else None)
    e = cls(getattr(cause, "errno", None) or 0, msg)
    e.kind = kind
    for attr in ("library", "reason", "verify_code", "verify_message"):
        v = getattr(cause, attr, None)
        if v is not None:
            setattr(e, attr, v)
    e.__cause__ = cause
    return e


def _ssl_error(e: ssl.SSLError, handshake: bool, eof: bool, peer: Any) -> TLSError:
    at = f" with {peer}" if peer is not None else ""
    if isinstance(e, ssl.SSLCertVerificationError):
        kind = _VERIFY_KINDS.get(e.verify_code, "certificate verify failed")
        return _new_error(e, kind, f"tls: certificate verify failed{at}: {e.verify_message}")
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or (eof and handshake and not e.reason):
        if handshake:
            return _new_error(e, "peer closed during handshake",
                              f"tls: the peer{at} closed the connection during the handshake")
    reason = e.reason or ""
    kind, what = _REASONS.get(reason, ("remote alert" if "ALERT" in reason else "bad record", ""))
    stage = "handshake" if handshake else "record"
    detail = f"{what} ({reason.lower().replace('_', ' ')})" if what else (reason.lower().replace("_", " ") or str(e))
    return _new_error(e, kind, f"tls: {stage}{at} failed: {detail}")


def _usage(msg: str, kind: str = "usage") -> TLSError:
    e = TLSError(0, msg)
    e.kind = kind
    return e


# ---------------------------------------------------------------------------
# A FIFO lock for goroutines
# ---------------------------------------------------------------------------

class _Lock:
    """Strict FIFO: release hands the lock to the first waiter, so the
    holder's successor is the goroutine that asked first."""

    __slots__ = ("held", "_waiters")

    def __init__(self) -> None:
        self.held = False
        self._waiters: Optional[deque[Event]] = None

    async def acquire(self) -> None:
        if not self.held:
            self.held = True
            return
        ev = Event()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(ev)
        try:
            await ev.wait()
        except BaseException:
            # Closed while waiting: a lock already handed over goes on to
            # the next waiter instead of staying held by nobody.
            if ev.is_set():
                self.release()
            else:
                self._waiters.remove(ev)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self.held = False


# ---------------------------------------------------------------------------
# Session resumption
# ---------------------------------------------------------------------------

class ClientSessionCache:
    """An LRU of client sessions by server name (Go's LRUClientSessionCache).

    Attach one to a client context to resume sessions::

        ctx.netpoll_session_cache = tls.ClientSessionCache(64)

    Python ties an ``ssl.SSLSession`` to the context that made it, so the
    cache lives on the context. The key is the server name, else the remote
    address. A TLS 1.3 session is stored when its ticket arrives (the first
    read after the handshake); a TLS 1.2 one at the end of the handshake.
    """

    def __init__(self, capacity: int = 64) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, not {capacity!r}")
        self.capacity = capacity
        self._sessions: OrderedDict[str, ssl.SSLSession] = OrderedDict()

    def get(self, key: str) -> Optional[ssl.SSLSession]:
        s = self._sessions.get(key)
        if s is not None:
            self._sessions.move_to_end(key)
        return s

    def put(self, key: str, session: Optional[ssl.SSLSession]) -> None:
        if session is None:
            self._sessions.pop(key, None)
            return
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)


def _session_cache(ctx: ssl.SSLContext) -> Optional[ClientSessionCache]:
    return getattr(ctx, "netpoll_session_cache", None)


# ---------------------------------------------------------------------------
# Connection state
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectionState:
    """Go's tls.ConnectionState, in ssl's vocabulary."""

    version: Optional[str]               # "TLSv1.3", "TLSv1.2"
    cipher: Optional[str]                # OpenSSL's cipher suite name
    negotiated_protocol: Optional[str]   # ALPN: "h2", "http/1.1", None
    server_name: Optional[str]           # client: the name verified; server: the SNI received
    peer_certificate: Optional[dict]     # ssl's getpeercert() form (a verified peer)
    peer_certificate_der: Optional[bytes]
    did_resume: bool
    handshake_complete: bool


# ---------------------------------------------------------------------------
# TLSConn
# ---------------------------------------------------------------------------

def _install_sni_recorder(ctx: ssl.SSLContext) -> None:
    # The server-side SSLObject does not expose the client's SNI; a callback
    # on the context records it (chaining one set earlier).
    cb = ctx.sni_callback
    if getattr(cb, "_netpoll_records_sni", False):
        return

    def record(obj: Any, name: Optional[str], c: ssl.SSLContext, _user: Any = cb) -> Any:
        obj.netpoll_server_name = name
        return _user(obj, name, c) if _user is not None else None

    record._netpoll_records_sni = True  # type: ignore[attr-defined]
    ctx.sni_callback = record


class TLSConn:
    """A TLS connection over a netpoll stream conn (Go's tls.Conn).

    One reader and one writer may run at once; readers serialise with
    readers, writers with writers. ``read`` returns 0 at EOF: the peer's
    close_notify, or a TCP EOF at a record boundary (as Go, since popular
    servers skip close_notify); a TCP EOF inside a record is a TLSError.
    """

    __slots__ = (
        "_conn", "_ctx", "_obj", "_in", "_out", "server_side", "_server_name",
        "_hs_lock", "_rlock", "_wlock", "_hs_done", "_hs_err", "_rerr", "_werr",
        "_closed", "_sent_close", "_eof", "_bio_eof", "_rec_left", "_rec_len", "_hdr", "_full", "_plain",
        "_want_session", "_wdl",
    )

    def __init__(self, conn: Any, ssl_ctx: ssl.SSLContext, server_side: bool,
                 server_name: Optional[str] = None) -> None:
        if not isinstance(ssl_ctx, ssl.SSLContext):
            raise TypeError(f"ssl_ctx must be an ssl.SSLContext, not {type(ssl_ctx).__name__}")
        # Go refuses renegotiation by default; OpenSSL answers a request
        # with a no_renegotiation alert when this option is on.
        if not ssl_ctx.options & ssl.OP_NO_RENEGOTIATION:
            ssl_ctx.options |= ssl.OP_NO_RENEGOTIATION
        if server_side:
            _install_sni_recorder(ssl_ctx)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        session = None
        self._want_session = False
        if not server_side:
            cache = _session_cache(ssl_ctx)
            if cache is not None:
                session = cache.get(server_name or str(conn.remote_addr))
                self._want_session = True
        # SSLObject, unlike SSLSocket, accepts a verifying context without
        # a host name and then checks only the chain: refuse it, as Go does.
        if not server_side and not server_name and ssl_ctx.check_hostname:
            raise ValueError(
                "tls.client: the context verifies host names (check_hostname), so give "
                "server_name (tls.dial takes it from the address)")
        self._obj = ssl_ctx.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_name or None, session=session)
        self._conn = conn
        self._ctx = ssl_ctx
        self.server_side = server_side
        self._server_name = server_name
        self._hs_lock = _Lock()
        self._rlock = _Lock()
        self._wlock = _Lock()
        self._hs_done = False
        self._hs_err: Optional[BaseException] = None
        self._rerr: Optional[BaseException] = None
        self._werr: Optional[BaseException] = None
        self._closed = False
        self._sent_close = False
        self._eof = False        # the conn read EOF
        self._bio_eof = False    # ... and OpenSSL was told (see _fill)
        self._rec_left = 0       # ciphertext bytes left in the current record
        self._rec_len = 0        # the current record's length, header included
        self._hdr = b""          # a record header split across reads
        self._full = False       # read without waiting first: more is likely queued
        self._plain: Optional[memoryview] = None  # plaintext taken out of OpenSSL by close_write
        self._wdl: Optional[float] = None

    # -- the conn underneath ------------------------------------------------

    @property
    def net_conn(self) -> Any:
        return self._conn

    @property
    def local_addr(self) -> Any:
        return self._conn.local_addr

    @property
    def remote_addr(self) -> Any:
        return self._conn.remote_addr

    def fileno(self) -> int:
        return self._conn.fileno()

    def set_deadline(self, t: Optional[float]) -> None:
        self._conn.set_deadline(t)
        self._wdl = t

    def set_read_deadline(self, t: Optional[float]) -> None:
        self._conn.set_read_deadline(t)

    def set_write_deadline(self, t: Optional[float]) -> None:
        self._conn.set_write_deadline(t)
        self._wdl = t

    # -- moving ciphertext ----------------------------------------------------

    def _track(self, data: bytearray, n: int) -> None:
        # Follow the record framing of the ciphertext fed to OpenSSL, which
        # swallows partial records: at a TCP EOF it is the only way to tell
        # a record boundary (EOF) from a cut record (an error).
        i, left, hdr, rlen = 0, self._rec_left, self._hdr, self._rec_len
        while i < n:
            if left:
                step = left if left < n - i else n - i
                i += step
                left -= step
            elif not hdr and n - i >= _RECORD_HEADER:
                left = (data[i + 3] << 8) | data[i + 4]
                rlen = left + _RECORD_HEADER
                i += _RECORD_HEADER
            else:
                take = min(_RECORD_HEADER - len(hdr), n - i)
                hdr += bytes(data[i:i + take])
                i += take
                if len(hdr) == _RECORD_HEADER:
                    left, hdr = (hdr[3] << 8) | hdr[4], b""
                    rlen = left + _RECORD_HEADER
        self._rec_left, self._hdr, self._rec_len = left, hdr, rlen

    def _partial(self) -> int:
        # Bytes fed of a record not complete yet: an incoming BIO holding no
        # more than these holds no whole record, and a read would raise.
        # A length over TLS's limit is OpenSSL's to reject, at once.
        if self._hdr:
            return len(self._hdr)
        if not self._rec_left or self._rec_len > _MAX_RECORD:
            return 0
        return self._rec_len - self._rec_left

    async def _fill(self) -> None:
        # Read some ciphertext into the incoming BIO (EOF: write_eof).
        conn = self._conn
        if not self._full:
            await conn.wait_readable()
        buf = _pool.pop() if _pool else bytearray(RECV_SIZE)
        try:
            n = await conn.read(buf)
            if n:
                self._in.write(memoryview(buf)[:n])
                self._track(buf, n)
                self._full = n == RECV_SIZE
            else:
                self._eof = True
                self._full = False
                # At a record boundary after the handshake, OpenSSL never
                # sees this EOF: told, it would go into its fatal state
                # (and queue a decode_error alert) where Go reads a clean
                # EOF and can still send close_notify. _read returns 0.
                if not self._hs_done or self._rec_left or self._hdr:
                    self._in.write_eof()
                    self._bio_eof = True
        finally:
            if len(_pool) < _POOL_MAX:
                _pool.append(buf)

    async def _drain(self) -> None:
        # Under the send lock: write the outgoing BIO until it is empty.
        out = self._out
        while out.pending:
            data = out.read()
            try:
                await self._conn.write(data)
            except BaseException as e:
                # Some of the records may be on the wire: the stream is
                # corrupt, and every later write fails the same way (Go's
                # permanentError), a timeout included.
                self._werr = e if isinstance(e, Exception) else ClosedError()
                raise

    async def _flush(self) -> None:
        # For readers and the handshake: send what OpenSSL produced. If a
        # writer holds the send lock, it drains these bytes before releasing.
        if not self._out.pending or self._werr is not None:
            return
        if self._wlock.held:
            return
        self._wlock.held = True
        try:
            await self._drain()
        finally:
            self._wlock.release()

    def _send_now(self) -> None:
        # Put the outgoing BIO on the wire without waiting, or drop it: for
        # close() (synchronous) and a fatal alert. One non-blocking write(2)
        # on the conn's descriptor, since the conn's write may park. Only
        # while no TLS write is in flight, so nothing interleaves.
        data = self._out.read()
        if not data or self._wlock.held or self._werr is not None:
            return
        try:
            os.write(self._conn.fileno(), data)
        except (OSError, ValueError):
            pass

    # -- handshake ------------------------------------------------------------

    async def handshake(self) -> None:
        """Run the handshake (once; concurrent callers wait for the first).

        Bounded by the conn's deadlines. A failure closes the conn and is
        returned by every later call and by every read and write.
        """
        if self._hs_done:
            return
        await self._hs_lock.acquire()
        try:
            if self._hs_done:
                return
            if self._hs_err is not None:
                raise self._hs_err
            if self._closed:
                raise ClosedError()
            try:
                await self._run_handshake()
            except BaseException as e:
                err: BaseException = e
                if isinstance(e, ssl.SSLError):
                    err = _ssl_error(e, True, self._eof, self._conn.remote_addr)
                    self._send_now()  # our alert, if OpenSSL made one
                self._hs_err = err if isinstance(err, Exception) else ClosedError()
                self._closed = True
                self._conn.close()
                if err is e:
                    raise
                raise err from e
            self._hs_done = True
            if self._want_session and self._obj.version() != "TLSv1.3":
                self._store_session()
        finally:
            self._hs_lock.release()

    async def _run_handshake(self) -> None:
        obj = self._obj
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            await self._flush()
            if done:
                return
            await self._fill()

    def _store_session(self) -> None:
        s = self._obj.session
        if s is not None and (s.has_ticket or s.id):
            cache = _session_cache(self._ctx)
            if cache is not None:
                cache.put(self._server_name or str(self._conn.remote_addr), s)
                self._want_session = False

    # -- read -------------------------------------------------------------------

    async def read(self, buf: Any) -> int:
        """Read plaintext into a writable buffer; 0 at EOF (see the class)."""
        if not self._hs_done:
            await self.handshake()
        lock = self._rlock
        if lock.held:
            await lock.acquire()
        else:
            lock.held = True  # uncontended: no coroutine for the lock
        try:
            return await self._read(buf)
        finally:
            lock.release()

    async def wait_readable(self) -> None:
        """Park until a read is likely to find plaintext, EOF or an error,
        without holding a buffer (the conn's wait_readable, unless OpenSSL
        already holds something to read). A read after it may still park:
        the bytes that woke it can be part of a record."""
        if not self._hs_done:
            await self.handshake()
        if (self._plain is not None or self._obj.pending() or self._in.pending > self._partial() or self._eof
                or self._rerr is not None or self._closed):
            return
        await self._conn.wait_readable()
        self._full = True  # the next _fill reads at once: this wait was its wait

    async def _read(self, buf: Any) -> int:
        if self._closed:
            raise ClosedError()
        if self._rerr is not None:
            raise self._rerr
        size = memoryview(buf).nbytes
        if self._plain is not None:
            p = self._plain
            n = min(size, len(p))
            memoryview(buf).cast("B")[:n] = p[:n]
            self._plain = p[n:] if n < len(p) else None
            return n
        if not size:
            return 0
        obj = self._obj
        while True:
            # A read that finds nothing raises, which costs as much as the
            # read: skip it when OpenSSL has no plaintext and the BIO no
            # whole record.
            if obj.pending() or self._in.pending > self._partial() or self._bio_eof:
                try:
                    n = obj.read(size, buf)
                except ssl.SSLWantReadError:
                    n = -1
                except ssl.SSLZeroReturnError:
                    n = 0
                except ssl.SSLEOFError as e:
                    self._rerr = _new_error(
                        e, "unexpected EOF",
                        f"tls: the connection with {self._conn.remote_addr} ended in the middle of a record")
                    raise self._rerr from e
                except ssl.SSLError as e:
                    self._rerr = _ssl_error(e, False, self._eof, self._conn.remote_addr)
                    self._send_now()
                    raise self._rerr from e
                if self._out.pending:  # a KeyUpdate reply, an alert
                    await self._flush()
                if n >= 0:
                    if self._want_session and n:
                        self._store_session()
                        self._want_session = False
                    return n
            elif self._eof:
                return 0   # a TCP EOF at a record boundary (see _fill)
            elif self._closed:
                raise ClosedError()
            await self._fill()

    # -- write ------------------------------------------------------------------

    def _check_write(self) -> None:
        if self._werr is not None:
            raise self._werr
        if self._sent_close:
            raise _usage("tls: protocol is shutdown (close_write was called)", "protocol is shutdown")
        if self._closed:
            raise ClosedError()

    async def write(self, data: Any, nbytes: Optional[int] = None) -> int:
        """Write all of ``data``, or its first ``nbytes`` bytes (as a plain
        conn's write); returns how many. A failed write (a timeout too)
        breaks the conn for writing: later writes raise it."""
        if isinstance(data, str):
            raise TypeError("write() needs bytes-like data, not str (encode it first)")
        mv = memoryview(data).cast("B")
        if nbytes is not None:
            if isinstance(nbytes, bool) or not isinstance(nbytes, int):
                raise TypeError(f"write() nbytes must be an int or None, not {type(nbytes).__name__}")
            if nbytes < 0:
                raise ValueError(f"write() nbytes must not be negative, got {nbytes}")
            if nbytes > len(mv):
                raise ValueError(f"write() nbytes {nbytes} is larger than the buffer ({len(mv)} bytes)")
            mv = mv[:nbytes]
        if not self._hs_done:
            await self.handshake()
        n = len(mv)
        if not n:
            self._check_write()
            return 0
        lock = self._wlock
        if lock.held:
            await lock.acquire()
        else:
            lock.held = True
        try:
            self._check_write()
            await self._encrypt(mv)
        finally:
            lock.release()
        return n

    async def _encrypt(self, mv: memoryview) -> None:
        obj = self._obj
        n = len(mv)
        for off in range(0, n, WRITE_CHUNK):
            try:
                obj.write(mv[off:off + WRITE_CHUNK] if n > WRITE_CHUNK else mv)
            except ssl.SSLError as e:
                self._werr = _ssl_error(e, False, self._eof, self._conn.remote_addr)
                raise self._werr from e
            await self._drain()

    async def writev(self, buffers: Iterable[Any]) -> int:
        """Write the buffers in order; returns the total. Small buffers are
        joined into one record."""
        if not self._hs_done:
            await self.handshake()
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(len(v) for v in views)
        await self._wlock.acquire()
        try:
            self._check_write()
            if total <= 16384 and len(views) > 1:
                views = [memoryview(b"".join(views))]
            for v in views:
                if len(v):
                    await self._encrypt(v)
        finally:
            self._wlock.release()
        return total

    # -- close ------------------------------------------------------------------

    def _put_close_notify(self) -> None:
        # SSL_shutdown (unwrap) writes close_notify, then tries to read the
        # peer's and fails on any plaintext or record it finds. Move those
        # out of its way (the plaintext to _plain, the BIO's ciphertext back
        # afterwards), so reads go on after close_write.
        obj = self._obj
        if obj.pending():
            self._plain = memoryview(obj.read(obj.pending()))
        saved = self._in.read() if self._in.pending and not self._eof else b""
        try:
            obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass  # the close_notify went into the BIO before the read failed
        if saved:
            self._in.write(saved)
        self._sent_close = True

    async def close_write(self) -> None:
        """Send close_notify; no TCP half-close (Go's CloseWrite).

        Waits for writability under the write deadline set through this
        conn, or at most CLOSE_NOTIFY_TIMEOUT seconds when none is set.
        Reads go on; writes fail with "protocol is shutdown".
        """
        if not self._hs_done:
            raise _usage("tls: close_write called before the handshake completed")
        await self._wlock.acquire()
        try:
            if self._sent_close:
                return
            self._check_write()
            bounded = self._wdl is None
            if bounded:
                self._conn.set_write_deadline(now() + CLOSE_NOTIFY_TIMEOUT)
            try:
                self._put_close_notify()
                await self._drain()
            finally:
                if bounded and not self._closed:
                    self._conn.set_write_deadline(None)
        finally:
            self._wlock.release()

    def close(self) -> None:
        """Close at once (synchronous). Sends close_notify first when the
        handshake is done, no write is in flight and the alert goes out
        without waiting; otherwise the conn just closes (as Go does with a
        write in flight). Every parked read and write wakes with ClosedError."""
        if self._closed:
            return
        self._closed = True
        if self._hs_done and not self._sent_close and not self._wlock.held and self._werr is None:
            try:
                self._put_close_notify()
                self._send_now()
            except (OSError, ValueError):
                pass
        self._conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "TLSConn":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- state ------------------------------------------------------------------

    def connection_state(self) -> ConnectionState:
        obj = self._obj
        done = self._hs_done
        if self.server_side:
            name = getattr(obj, "netpoll_server_name", None)
        else:
            name = self._server_name
        return ConnectionState(
            version=obj.version() if done else None,
            cipher=(obj.cipher() or (None,))[0] if done else None,
            negotiated_protocol=obj.selected_alpn_protocol() if done else None,
            server_name=name,
            peer_certificate=(obj.getpeercert() or None) if done else None,
            peer_certificate_der=obj.getpeercert(binary_form=True) if done else None,
            did_resume=bool(done and obj.session_reused),
            handshake_complete=done,
        )

    def __repr__(self) -> str:
        side = "server" if self.server_side else "client"
        state = "closed" if self._closed else ("ready" if self._hs_done else "new")
        return f"<TLSConn {side} {self._conn!r} {state}>"


# ---------------------------------------------------------------------------
# Constructors
# ---------------------------------------------------------------------------

def client(conn: Any, ssl_ctx: ssl.SSLContext, server_name: Optional[str] = None) -> TLSConn:
    """Wrap a connected conn as the client side. ``server_name`` is sent as
    SNI and verified against the certificate (when ``ssl_ctx`` checks host
    names, it is required)."""
    return TLSConn(conn, ssl_ctx, False, server_name)


def server(conn: Any, ssl_ctx: ssl.SSLContext) -> TLSConn:
    """Wrap an accepted conn as the server side."""
    return TLSConn(conn, ssl_ctx, True)


def _host_of(address: Any) -> Optional[str]:
    if isinstance(address, tuple) and address:
        return str(address[0]) or None
    host = getattr(address, "host", None)
    if host is not None:
        return host or None
    if isinstance(address, str):
        if address.startswith("["):
            end = address.find("]")
            return address[1:end] if end > 0 else None
        if ":" in address:
            return address.rsplit(":", 1)[0] or None
    return None


async def dial(network: str, address: Any, ssl_ctx: Optional[ssl.SSLContext] = None, *,
               server_name: Optional[str] = None, timeout: Optional[float] = None) -> TLSConn:
    """Dial and handshake (Go's tls.DialWithDialer).

    ``server_name`` defaults to the host part of ``address``; ``ssl_ctx``
    None means ``ssl.create_default_context()`` (verified certificates, the
    system trust store). ``timeout`` bounds the dial and the handshake
    together. Any failure closes the conn.
    """
    if ssl_ctx is None:
        ssl_ctx = ssl.create_default_context()
    if server_name is None and network != "unix":
        server_name = _host_of(address)
    deadline = None if timeout is None else now() + timeout
    conn = await net.dial(network, address, timeout=timeout)
    try:
        tc = TLSConn(conn, ssl_ctx, False, server_name)
        if deadline is not None:
            conn.set_deadline(deadline)
        await tc.handshake()
        if deadline is not None:
            conn.set_deadline(None)
    except BaseException:
        conn.close()
        raise
    return tc


class Listener:
    """A net.Listener whose ``accept()`` returns server-side TLSConns (the
    handshake runs at their first read or write, or ``handshake()``)."""

    __slots__ = ("_ln", "_ctx")

    def __init__(self, ln: Any, ssl_ctx: ssl.SSLContext) -> None:
        self._ln = ln
        self._ctx = ssl_ctx

    async def accept(self) -> TLSConn:
        conn = await self._ln.accept()
        try:
            return TLSConn(conn, self._ctx, True)
        except BaseException:
            conn.close()
            raise

    @property
    def addr(self) -> Any:
        return self._ln.addr

    @property
    def net_listener(self) -> Any:
        return self._ln

    def set_deadline(self, t: Optional[float]) -> None:
        self._ln.set_deadline(t)

    def fileno(self) -> int:
        return self._ln.fileno()

    def close(self) -> None:
        self._ln.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def listen(network: str, address: Any, ssl_ctx: ssl.SSLContext,
           backlog: Optional[int] = None) -> Listener:
    """``net.listen`` whose accepted conns are TLS servers with ``ssl_ctx``."""
    if not isinstance(ssl_ctx, ssl.SSLContext):
        raise TypeError(f"ssl_ctx must be an ssl.SSLContext, not {type(ssl_ctx).__name__}")
    return Listener(net.listen(network, address, backlog), ssl_ctx)

