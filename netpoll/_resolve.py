"""Name resolution that never blocks the runtime (Go's net/lookup.go, cgo path).

A numeric host or port is parsed inline. Anything else is a ``getaddrinfo``
(or ``getservbyname``) call in a thread pool of the resolver's own, bounded
as Go bounds its cgo lookups: ``min(500, RLIMIT_NOFILE - 30)`` threads, so
that descriptor exhaustion cannot turn into a false "no such host"
(getaddrinfo reports EAI_NONAME when it cannot open a socket).

Identical lookups in flight share one call (Go's singleflight): the first
caller starts a leader goroutine that parks while the pool thread works, and
every caller, the first included, waits for that leader. A caller whose
deadline passes stops waiting and raises a timeout; the lookup goes on for
the others. The pool thread hands its result back the way ``to_thread``
does: ``Sched.begin_external`` before, ``Sched.finish_external`` after, so a
runtime with a lookup in flight is never taken for deadlocked.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket as _socket
import threading
from collections import deque
from functools import lru_cache
from typing import Any, Callable, Optional, Union

from netpoll import _sched
from netpoll import net as _net
from netpoll.errors import DeadlineExceededError

__all__ = ["Resolver", "DNSError", "lookup_host", "lookup_ip", "lookup_port", "default_resolver"]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_IP_NETS = {"ip": 0, "ip4": _socket.AF_INET, "ip6": _socket.AF_INET6}
_PORT_NETS = {"": ("tcp", "udp"), "ip": ("tcp", "udp"), "tcp": ("tcp",), "tcp4": ("tcp",), "tcp6": ("tcp",),
              "udp": ("udp",), "udp4": ("udp",), "udp6": ("udp",)}
_DIGITS = re.compile(r"[0-9]+")
_FAMILY = {4: _socket.AF_INET, 6: _socket.AF_INET6}

NO_SUCH_HOST = "no such host"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

_DNS_FIELDS = ("name", "server", "is_timeout", "is_temporary", "is_not_found")


class DNSError(_socket.gaierror):
    """A failed lookup (Go's net.DNSError), also the ``socket.gaierror`` a
    plain ``getaddrinfo`` would raise. ``str()`` is Go's: "lookup NAME: why"."""

    name: str
    server: str
    is_timeout: bool
    is_temporary: bool
    is_not_found: bool

    def __init__(self, err: str, name: str, *, code: int = _socket.EAI_NONAME, server: str = "",
                 is_timeout: bool = False, is_temporary: bool = False, is_not_found: bool = False) -> None:
        where = f"lookup {name}" + (f" on {server}" if server else "")
        OSError.__init__(self, code, f"{where}: {err}")
        self.err = err
        self.name, self.server = name, server
        self.is_timeout, self.is_temporary, self.is_not_found = is_timeout, is_temporary, is_not_found

    def __getattr__(self, attr: str) -> Any:
        # The OpError that wraps a DNSError has a class deriving from both
        # (net.operror); its DNS fields are those of the error it wraps.
        if attr in _DNS_FIELDS:
            inner = self.__dict__.get("err")
            if isinstance(inner, DNSError):
                return getattr(inner, attr)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    def __str__(self) -> str:
        return self.strerror or ""

    def timeout(self) -> bool:
        return self.is_timeout

    def temporary(self) -> bool:
        return self.is_timeout or self.is_temporary


class DNSTimeoutError(DNSError, DeadlineExceededError):
    """A lookup whose caller's deadline passed: a DNSError and a TimeoutError."""

    def __init__(self, name: str) -> None:
        DNSError.__init__(self, "i/o timeout", name, code=_socket.EAI_AGAIN, is_timeout=True)


def _gai_error(e: BaseException, name: str) -> DNSError:
    """The DNSError for what getaddrinfo raised in the pool."""
    if isinstance(e, _socket.gaierror):
        code = e.errno if isinstance(e.errno, int) else _socket.EAI_FAIL
        if code in _NOT_FOUND:
            return DNSError(NO_SUCH_HOST, name, code=code, is_not_found=True)
        if code == _socket.EAI_AGAIN:
            return DNSError(e.strerror or "temporary failure", name, code=code, is_temporary=True)
        return DNSError(e.strerror or str(e), name, code=code)
    if isinstance(e, UnicodeError):  # a label over 63 characters, an empty label...
        return DNSError(f"invalid host name ({e})", name, is_not_found=True)
    return DNSError(str(e) or type(e).__name__, name, code=_socket.EAI_SYSTEM)


_NOT_FOUND = {_socket.EAI_NONAME} | ({_socket.EAI_NODATA} if hasattr(_socket, "EAI_NODATA") else set())


# ---------------------------------------------------------------------------
# The thread pool
# ---------------------------------------------------------------------------

def thread_limit() -> int:
    """Go's concurrentThreadsLimit: 500, less when RLIMIT_NOFILE is low."""
    limit = 500
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return limit
    if soft != resource.RLIM_INFINITY and soft - 30 < limit:
        limit = soft - 30
    return max(limit, 1)


class _Pool:
    """Daemon threads started on demand up to ``limit``; work beyond that
    queues. A thread idle for IDLE seconds exits. Unlike an executor, the
    threads are daemons: a lookup that never returns cannot hold up exit."""

    IDLE = 30.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cv = threading.Condition(threading.Lock())
        self._work: deque[Callable[[], None]] = deque()
        self._idle = 0
        self.threads = 0

    def submit(self, fn: Callable[[], None]) -> None:
        with self._cv:
            self._work.append(fn)
            # Every queued item has a waiting thread to take it, or gets a
            # new one while under the limit.
            if len(self._work) > self._idle and self.threads < self.limit:
                self.threads += 1
                start = True
            else:
                start = False
                self._cv.notify()
        if start:
            try:
                threading.Thread(target=self._worker, name="netpoll.resolver", daemon=True).start()
            except BaseException:
                with self._cv:
                    self.threads -= 1
                raise

    def _worker(self) -> None:
        while True:
            with self._cv:
                while not self._work:
                    self._idle += 1
                    woke = self._cv.wait(self.IDLE)
                    self._idle -= 1
                    if not woke and not self._work:
                        self.threads -= 1
                        return
                fn = self._work.popleft()
            fn()

    def _after_fork(self) -> None:
        # A forked child has none of its parent's threads.
        self._cv = threading.Condition(threading.Lock())
        self._work.clear()
        self._idle = 0
        self.threads = 0


_pool = _Pool(thread_limit())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool._after_fork)


async def _in_pool(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` on a pool thread; the goroutine parks until it returns."""
    sched = _sched.current()

    def commit(g: Any) -> bool:
        sched.begin_external()

        def work() -> None:
            try:
                value = fn()
            except BaseException as e:  # handed to the goroutine, not lost
                sched.finish_external(g, None, e)
            else:
                sched.finish_external(g, value, None)

        try:
            _pool.submit(work)
        except BaseException as e:  # no thread could start: resume with the error
            sched.finish_external(g, None, e)
        return True

    return await _sched.park(commit)


# ---------------------------------------------------------------------------
# singleflight
# ---------------------------------------------------------------------------

_TIMEOUT = object()


class _Waiter:
    __slots__ = ("g", "woken")

    def __init__(self) -> None:
        self.g: Any = None
        self.woken = False  # readied (result or timeout) or gone: nobody readies it again


class _Call:
    __slots__ = ("done", "value", "exc", "waiters", "dups")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.exc: Optional[BaseException] = None
        self.waiters: list[_Waiter] = []
        self.dups = 0


class _Group:
    """Go's singleflight.Group, for goroutines of one runtime or several:
    keys carry the runtime, since a leader can only wake its own runtime's
    goroutines."""

    def __init__(self) -> None:
        self.calls: dict[tuple, _Call] = {}

    async def do(self, key: tuple, fn: Callable[[], Any], deadline: Optional[float]) -> Any:
        from netpoll.runtime import now

        if deadline is not None and deadline <= now():
            raise _Timeout()
        sched = _sched.current()
        k = (sched, *key)
        call = self.calls.get(k)
        if call is None:
            # A leader closed before it ever ran (its runtime ended first)
            # never reached its finally: drop what ended runtimes left.
            for stale in [s for s in self.calls if s[0].backend.closed]:
                del self.calls[stale]
            call = self.calls[k] = _Call()
            _sched.go(self._lead(k, call, fn))
        else:
            call.dups += 1
        if not call.done:
            await _wait(call, deadline)
        if call.exc is not None:
            raise call.exc
        return call.value

    async def _lead(self, k: tuple, call: _Call, fn: Callable[[], Any]) -> None:
        try:
            try:
                call.value = await _in_pool(fn)
            except Exception as e:
                call.exc = e
        finally:
            # Also when the runtime ends with the lookup in flight (the
            # goroutine is closed): the key must not outlive it.
            if self.calls.get(k) is call:
                del self.calls[k]
        call.done = True
        for w in call.waiters:
            if not w.woken:
                w.woken = True
                _sched.ready(w.g, None)
        call.waiters = []


async def _wait(call: _Call, deadline: Optional[float]) -> None:
    w = _Waiter()

    def commit(g: Any) -> bool:
        if call.done:
            w.woken = True
            return False
        w.g = g
        call.waiters.append(w)
        return True

    def cancel() -> None:
        w.woken = True

    if deadline is not None:
        _sched.go(_watch(w, deadline))
    if await _sched.park(commit, cancel) is _TIMEOUT:
        raise _Timeout()


async def _watch(w: _Waiter, deadline: float) -> None:
    # The waiter's deadline. There is no timer to stop from Python, so this
    # goroutine sleeps in doubling steps and leaves as soon as the waiter has
    # been woken: it outlives a finished lookup by at most the time that
    # lookup took (or the deadline, whichever is first).
    from netpoll.runtime import now

    step = 0.001
    while not w.woken:
        left = deadline - now()
        if left <= 0:
            w.woken = True
            _sched.ready(w.g, _TIMEOUT)
            return
        await _sched.sleep(min(left, step))
        step *= 2


class _Timeout(Exception):
    """A waiter's deadline passed; the caller turns it into its DNSTimeoutError."""


# ---------------------------------------------------------------------------
# The resolver
# ---------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def _numeric_ip(host: str) -> Optional[IPAddress]:
    # Cached: ipaddress parsing costs more than the rest of a numeric lookup.
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_host(host: Any) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__} {host!r}")
    return host


def _getaddrinfo(host: str, family: int) -> list[str]:
    # On a pool thread. socket.getaddrinfo is looked up at each call, so a
    # test (or a program) may replace it.
    infos = _socket.getaddrinfo(host, None, family, _socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for fam, _, _, _, sa in infos:
        if fam in (_socket.AF_INET, _socket.AF_INET6):
            seen.setdefault(sa[0], None)
    return list(seen)


def _getservbyname(service: str, protos: tuple[str, ...]) -> Optional[int]:
    for proto in protos:
        try:
            return _socket.getservbyname(service, proto)
        except (OSError, ValueError):  # not found; a NUL byte
            continue
    return None


class Resolver:
    """Go's net.Resolver: ``lookup_host``, ``lookup_ip``, ``lookup_port``.

    Every method takes ``deadline`` (absolute ``netpoll.now()`` seconds, or
    None). A numeric host or port never leaves the calling goroutine; a name
    goes to the resolver's thread pool, shared by identical lookups in
    flight. ``prefer_dns=True`` would ask for an asynchronous DNS client on
    the poller; netpoll has none, so it is refused rather than ignored.
    """

    def __init__(self, prefer_dns: bool = False) -> None:
        if prefer_dns:
            raise NotImplementedError(
                "Resolver(prefer_dns=True): netpoll has no DNS client of its own; "
                "names are resolved by getaddrinfo in the resolver's thread pool")
        self.prefer_dns = False
        self._group = _Group()

    async def lookup_host(self, host: str, *, deadline: Optional[float] = None) -> list[str]:
        """The host's addresses, as strings ("127.0.0.1", "::1")."""
        return [str(ip) for ip in await self.lookup_ip("ip", host, deadline=deadline)]

    async def lookup_ip(self, network: str, host: str, *, deadline: Optional[float] = None) -> list[IPAddress]:
        """The host's IP addresses; ``network`` is "ip", "ip4" or "ip6"."""
        if network not in _IP_NETS:
            raise _net.operror("lookup", str(network), None, None, _net.UnknownNetworkError(str(network)))
        if type(host) is str:  # the numeric fast path, before any other call
            ip = _numeric_ip(host)
            if ip is not None and _IP_NETS[network] in (0, _FAMILY[ip.version]):
                return [ip]
        try:
            return await self._lookup_ip(network, _check_host(host), deadline)
        except (DNSError, TypeError) as e:
            raise _net.operror("lookup", network, None, None, e) from None

    async def _lookup_ip(self, network: str, host: str, deadline: Optional[float]) -> list[IPAddress]:
        # DNSError for what went wrong with the name; the caller wraps it.
        family = _IP_NETS[network]
        ip = _numeric_ip(host)  # with a zone too: "fe80::1%eth0"
        if ip is not None:
            if family and family != _FAMILY[ip.version]:
                raise DNSError("no suitable address found", host, is_not_found=True)
            return [ip]
        if not host:
            raise DNSError(NO_SUCH_HOST, host, is_not_found=True)
        if "\0" in host:
            raise DNSError("host contains a NUL byte", host, is_not_found=True)
        try:
            addrs = await self._group.do(("ip", family, host), lambda: _getaddrinfo(host, family), deadline)
        except _Timeout:
            raise DNSTimeoutError(host) from None
        except Exception as e:
            raise _gai_error(e, host) from None
        ips = [a for a in (_numeric_ip(s) for s in addrs) if a is not None]
        if family:
            ips = [a for a in ips if _FAMILY[a.version] == family]
        if not ips:
            raise DNSError(NO_SUCH_HOST, host, is_not_found=True)
        return ips

    async def lookup_port(self, network: str, service: Union[str, int], *,
                          deadline: Optional[float] = None) -> int:
        """The port of ``service`` ("http", "443") for ``network``: "tcp",
        "tcp4", "tcp6", "udp", "udp4", "udp6", or "" / "ip" for either."""
        if network not in _PORT_NETS:
            raise _net.operror("lookup", str(network), None, None, _net.UnknownNetworkError(str(network)))
        try:
            return await self._lookup_port(network, service, deadline)
        except (DNSError, _net.AddrError, TypeError) as e:
            raise _net.operror("lookup", network, None, None, e) from None

    async def _lookup_port(self, network: str, service: Union[str, int], deadline: Optional[float]) -> int:
        if isinstance(service, int) and not isinstance(service, bool):
            port = service
        elif not isinstance(service, str):
            raise TypeError(f"service must be a str or an int, not {type(service).__name__} {service!r}")
        elif service == "":
            port = 0  # Go: an empty service is port 0 (golang.org/issue/13610)
        elif _DIGITS.fullmatch(service):
            port = int(service)
        else:
            name = f"{network or 'ip'}/{service}"
            try:
                found = await self._group.do(("port", network, service),
                                             lambda: _getservbyname(service, _PORT_NETS[network]), deadline)
            except _Timeout:
                raise DNSTimeoutError(name) from None
            if found is None:
                raise DNSError("unknown port", name, code=_socket.EAI_SERVICE, is_not_found=True)
            port = found
        if not 0 <= port <= 65535:
            raise _net.AddrError(f"port {port} out of range 0-65535", service)
        return port

    async def getaddrinfo(self, host: Union[str, bytes, None], port: Union[str, bytes, int, None],
                          family: int = 0, type: int = 0, proto: int = 0, flags: int = 0, *,
                          deadline: Optional[float] = None) -> list[tuple[Any, ...]]:
        """``socket.getaddrinfo``'s answer and errors (``socket.gaierror``),
        without blocking the runtime: inline when it needs no lookup, else in
        the resolver's pool, shared by identical lookups in flight. A passed
        deadline is a DNSTimeoutError."""
        args = (host, port, family, type, proto, flags)
        infos = _gai_at_once(*args)
        if infos is None:
            infos = await self._pooled(("getaddrinfo", *args), lambda: _socket.getaddrinfo(*args),
                                       deadline, host)
        return list(infos)  # each caller's own list: a shared lookup is not shared state

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int = 0, *,
                          deadline: Optional[float] = None) -> tuple[str, str]:
        """``socket.getnameinfo``'s answer and errors, as ``getaddrinfo`` does:
        inline with NI_NUMERICHOST and NI_NUMERICSERV (no lookup), else in
        the pool."""
        numeric = _socket.NI_NUMERICHOST | _socket.NI_NUMERICSERV
        if not isinstance(sockaddr, tuple) or not sockaddr or not isinstance(flags, int) \
                or flags & numeric == numeric or not _hashable(sockaddr):
            return _socket.getnameinfo(sockaddr, flags)  # no lookup, or socket's own error
        return await self._pooled(("getnameinfo", sockaddr, flags),
                                  lambda: _socket.getnameinfo(sockaddr, flags), deadline, sockaddr[0])

    async def _pooled(self, key: tuple, fn: Callable[[], Any], deadline: Optional[float], name: Any) -> Any:
        try:
            return await self._group.do(key, fn, deadline)
        except _Timeout:
            raise DNSTimeoutError(str(name)) from None


def _gai_at_once(host: Any, port: Any, family: Any, socktype: Any, proto: Any, flags: Any) -> Optional[list]:
    # getaddrinfo's answer when it needs no lookup: no host or a numeric one
    # (told to glibc with AI_NUMERICHOST, so it cannot fall through to DNS),
    # and no port or a numeric one; an argument socket refuses fails here,
    # at once, with socket's own error. None: the lookup goes to the pool.
    if not all(isinstance(a, int) for a in (family, socktype, proto, flags)) \
            or not isinstance(host, (str, bytes, type(None))) \
            or not isinstance(port, (str, bytes, int, type(None))):
        return _socket.getaddrinfo(host, port, family, socktype, proto, flags)
    if isinstance(port, (str, bytes)):
        if not _DIGITS.fullmatch(port.decode("latin-1") if isinstance(port, bytes) else port):
            return None
        flags |= _socket.AI_NUMERICSERV
    if host is not None:
        text = host.decode("latin-1") if isinstance(host, bytes) else host
        if _numeric_ip(text) is None:
            return None
        flags |= _socket.AI_NUMERICHOST
    return _socket.getaddrinfo(host, port, family, socktype, proto, flags)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


#: The resolver the package-level functions and a Dialer without one use.
default_resolver = Resolver()


# The package-level functions are the default resolver's methods.
lookup_host = default_resolver.lookup_host
lookup_ip = default_resolver.lookup_ip
lookup_port = default_resolver.lookup_port
