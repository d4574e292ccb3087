"""Dialing and listening as Go's net package does: Dialer, ListenConfig,
split_host_port and join_host_port.

``Dialer.dial`` resolves the address without blocking the runtime
(netpoll._resolve), then tries every address in order, giving each its
share of the remaining time (Go's dialSerial and partialDeadline). For
"tcp" to a name with both IPv4 and IPv6 addresses it races the families
(Happy Eyeballs, RFC 8305, Go's dialParallel): the family of the first
address starts at once, the other after ``fallback_delay`` or as soon as
the first fails; the first connection wins and every other attempt is
closed.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import math
import os
import socket as _socket
from typing import Any, Callable, Optional, Union

from netpoll import _resolve, _sched, hooks
from netpoll import net
from netpoll.errors import DeadlineExceededError
from netpoll.sync import Chan, Event

__all__ = ["Dialer", "ListenConfig", "split_host_port", "join_host_port"]

Control = Callable[[str, str, _socket.socket], None]

# Go's saneMinimum: no address gets less than this of a longer deadline.
_SANE_MINIMUM = 2.0


# ---------------------------------------------------------------------------
# host:port
# ---------------------------------------------------------------------------

def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort: "host:port", "[host]:port" or "[host%zone]:port"
    into (host, port); the brackets go. An AddrError says what is wrong."""
    if not isinstance(hostport, str):
        raise TypeError(f"split_host_port needs a str, not {type(hostport).__name__}")
    i = hostport.rfind(":")
    if i < 0:
        raise net.AddrError("missing port in address", hostport)
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise net.AddrError("missing ']' in address", hostport)
        if end + 1 == len(hostport):
            raise net.AddrError("missing port in address", hostport)
        if end + 1 != i:
            if hostport[end + 1] == ":":
                raise net.AddrError("too many colons in address", hostport)
            raise net.AddrError("missing port in address", hostport)
        host = hostport[1:end]
        j, k = 1, end + 1  # no '[' before j, no ']' before k
    else:
        host = hostport[:i]
        if ":" in host:
            raise net.AddrError("too many colons in address", hostport)
    if "[" in hostport[j:]:
        raise net.AddrError("unexpected '[' in address", hostport)
    if "]" in hostport[k:]:
        raise net.AddrError("unexpected ']' in address", hostport)
    return host, hostport[i + 1:]


def join_host_port(host: str, port: Union[str, int]) -> str:
    """Go's net.JoinHostPort: "host:port", or "[host]:port" when host has a colon."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


# ---------------------------------------------------------------------------
# Deadlines
# ---------------------------------------------------------------------------

def _partial_deadline(now: float, deadline: Optional[float], remaining: int) -> Optional[float]:
    """Go's partialDeadline: this address's share of the time left."""
    if deadline is None:
        return None
    left = deadline - now
    if left <= 0:
        raise DeadlineExceededError()
    timeout = left / remaining
    if timeout < _SANE_MINIMUM:
        timeout = min(left, _SANE_MINIMUM)
    return now + timeout


def _ctx_deadline(ctx: Any) -> Optional[float]:
    # Go's ctx.Deadline() is (deadline, ok); a Python context may return the
    # deadline alone, None for none.
    d = ctx.deadline()
    if isinstance(d, tuple):
        d, ok = d
        return d if ok else None
    return d


def _ctx_err(ctx: Any) -> Optional[BaseException]:
    # The context's error (Canceled, DeadlineExceeded), if it is done.
    if ctx is None:
        return None
    err = ctx.err()
    if err is None or isinstance(err, BaseException):
        return err
    return RuntimeError(str(err))


# ---------------------------------------------------------------------------
# The race between attempts (dialParallel)
# ---------------------------------------------------------------------------

class _Race:
    """The attempts of one dial: the first to connect claims the win, and
    the connects still in flight are closed (their waits wake ClosedError)."""

    def __init__(self) -> None:
        self.won = False
        self.inflight: set[net._NetFD] = set()
        self.fallback = Event()  # start the fallback family

    def claim(self, fd: net._NetFD) -> bool:
        if self.won:
            return False
        self.won = True
        for other in list(self.inflight):
            if other is not fd:
                other.close()
        self.fallback.set()
        return True


class _Lost(Exception):
    """An attempt stopped because another attempt of the same dial won."""


async def _fire_after(ev: Event, seconds: float) -> None:
    # The fallback timer. A sleep cannot be stopped from Python, so this
    # goroutine outlives a dial that ended sooner by at most ``seconds``;
    # setting an Event twice is harmless.
    await _sched.sleep(seconds)
    ev.set()


# ---------------------------------------------------------------------------
# Dialer
# ---------------------------------------------------------------------------

class Dialer:
    """Go's net.Dialer.

    - ``timeout``: seconds for the whole dial, lookup included (None and 0:
      none, as in Go; negative fails at once);
    - ``deadline``: an absolute ``netpoll.now()`` time; the earlier of the
      two (and of ``ctx``'s deadline) applies;
    - ``local_addr``: the address to bind before connecting; a name's
      addresses are filtered to its family;
    - ``fallback_delay``: seconds before the other address family starts
      (Happy Eyeballs, "tcp" only); 0 starts both at once (in Go, 0 means
      the 300 ms default, which here is the default argument); negative
      disables the race;
    - ``keep_alive``: TCP keep-alive period in seconds (0: 15 s; negative: off);
    - ``control``: ``control(network, address, sock)``, called with the new
      socket before bind and connect (Go's Control); what it raises fails
      the attempt;
    - ``resolver``: a ``net.Resolver`` (default: the shared one).

    ``ctx``: a ``netpoll.context`` context, or any object shaped as Go's
    (``deadline()`` and ``err()``): its deadline bounds the dial and its
    error stops the next attempt; a netpoll context's cancellation also
    ends a connect in flight, and the dial fails with the context's error.
    """

    def __init__(self, timeout: Optional[float] = None, deadline: Optional[float] = None,
                 local_addr: Optional[net.AddrLike] = None, fallback_delay: float = 0.3,
                 keep_alive: float = 15.0, control: Optional[Control] = None,
                 resolver: Optional[_resolve.Resolver] = None) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.local_addr = local_addr
        self.fallback_delay = fallback_delay
        self.keep_alive = keep_alive
        self.control = control
        self.resolver = resolver

    def _deadline(self, ctx: Any) -> Optional[float]:
        from netpoll.runtime import now

        candidates = []
        timeout = net._seconds(self.timeout, "timeout")
        if timeout is not None and timeout != 0:
            candidates.append(now() + float(timeout))
        d = net._seconds(self.deadline, "deadline")
        if d is not None:
            candidates.append(float(d))
        if ctx is not None:
            d = net._seconds(_ctx_deadline(ctx), "deadline")
            if d is not None:
                candidates.append(float(d))
        for c in candidates:
            if math.isnan(c):
                raise ValueError("dial: timeout or deadline is NaN")
        return min(candidates) if candidates else None

    async def dial(self, network: str, address: net.AddrLike, ctx: Any = None) -> Union[net.Conn, net.PacketConn]:
        """Connect to ``address`` on ``network`` (tcp, tcp4, tcp6, unix, udp,
        udp4, udp6, unixgram); raises OpError("dial")."""
        from netpoll.runtime import now

        nw = net._check_net("dial", network, {**net.STREAM_NETS, **net.PACKET_NETS})
        try:
            deadline = self._deadline(ctx)
            fallback = float(net._seconds(self.fallback_delay, "fallback_delay"))
            keep_alive = float(net._seconds(self.keep_alive, "keep_alive"))
            if self.control is not None and not callable(self.control):
                raise TypeError(f"control must be callable, not {type(self.control).__name__}")
            laddr = self._local(nw)
            for name, v in (("fallback_delay", fallback), ("keep_alive", keep_alive)):
                if math.isnan(v) or math.isinf(v):
                    raise ValueError(f"{name} must be a finite number of seconds, not {v!r}")
        except (ValueError, TypeError) as e:
            raise net.operror("dial", nw, None, None, e) from None
        err = _ctx_err(ctx)
        if err is not None:
            raise net.operror("dial", nw, None, None, err)
        resolver = self.resolver or _resolve.default_resolver
        try:
            addrs = await _resolve_list(resolver, nw, address, laddr, deadline)
        except (_resolve.DNSError, ValueError, TypeError) as e:
            raise net.operror("dial", nw, None, None, e) from None
        if deadline is not None and deadline <= now():
            raise net.operror("dial", nw, laddr, addrs[0], DeadlineExceededError())
        attempt = _Attempt(self, nw, laddr, deadline, keep_alive, ctx)
        primaries, fallbacks = addrs, []
        if nw == "tcp" and fallback >= 0:
            fam = addrs[0].family
            primaries = [a for a in addrs if a.family == fam]
            fallbacks = [a for a in addrs if a.family != fam]
        if not fallbacks:
            return await attempt.serial(addrs, None)
        return await attempt.parallel(primaries, fallbacks, fallback)

    def _local(self, nw: str) -> Optional[net.Addr]:
        if self.local_addr is None:
            return None
        return net.resolve_addr(nw, self.local_addr)


async def _resolve_list(resolver: _resolve.Resolver, nw: str, address: Any, laddr: Optional[net.Addr],
                        deadline: Optional[float]) -> list[net.Addr]:
    """Go's resolveAddrList: the addresses to try, in order. A numeric
    address (and every Addr object) is parsed by net.resolve_addr, with its
    errors; a name or a service name goes to the resolver."""
    if nw in ("unix", "unixgram"):
        return [net.resolve_addr(nw, address)]
    hp = _host_port(address)
    if hp is None:
        addrs = [net.resolve_addr(nw, address)]
    else:
        host, port = hp
        if isinstance(port, str) and port and not port.isdigit():
            try:
                port = await resolver._lookup_port(nw, port, deadline)
            except _resolve.DNSError as e:
                if e.is_timeout:
                    raise
                raise net.AddrError(f"unknown port {port!r}", address) from None
        port = net._port(port, address)  # a bad port fails before any lookup
        if "\0" in host:
            raise net.AddrError("host contains a NUL byte", address)
        fam = net.STREAM_NETS.get(nw) or net.PACKET_NETS.get(nw)
        ipnet = "ip4" if fam == _socket.AF_INET else "ip6" if fam == _socket.AF_INET6 else "ip"
        if host:
            ips = [str(ip) for ip in await resolver._lookup_ip(ipnet, host, deadline)]
        else:
            ips = [""]  # the local system, as in Go
        addrs = [net.resolve_addr(nw, (ip, port)) for ip in ips]
    if laddr is not None and isinstance(laddr, net.TCPAddr) and laddr.host and \
            not ipaddress.ip_address(laddr.host).is_unspecified:
        # Go's filterAddrList: only the local address's family can connect.
        addrs = [a for a in addrs if a.family == laddr.family]
        if not addrs:
            raise net.AddrError("no suitable address found (the local and remote addresses are of different families)",
                                str(laddr))
    return addrs


def _host_port(address: Any) -> Optional[tuple[str, Any]]:
    # (host, port) when the address needs the resolver: a host that is not a
    # numeric IP, or a port given by name. None: net.resolve_addr parses it.
    if isinstance(address, str) and address:
        try:
            host, port = split_host_port(address)
        except net.AddrError:
            return None  # net.resolve_addr says what is wrong, in its words
    elif isinstance(address, tuple) and len(address) in (2, 4) and isinstance(address[0], str):
        host, port = address[0], address[1]
    else:
        return None
    numeric_host = host == "" or _resolve._numeric_ip(host) is not None
    named_port = isinstance(port, str) and bool(port) and not port.isdigit()
    if numeric_host and not named_port:
        return None
    return host, port


class _Attempt:
    """One dial's fixed parts: network, local address, deadline, options."""

    def __init__(self, d: Dialer, nw: str, laddr: Optional[net.Addr], deadline: Optional[float],
                 keep_alive: float, ctx: Any) -> None:
        self.d, self.nw, self.laddr, self.deadline = d, nw, laddr, deadline
        self.keep_alive, self.ctx = keep_alive, ctx

    async def serial(self, addrs: list[net.Addr], race: Optional[_Race]) -> Union[net.Conn, net.PacketConn]:
        """Go's dialSerial: each address in turn; the first error if all fail."""
        from netpoll.runtime import now

        first: Optional[BaseException] = None
        for i, ra in enumerate(addrs):
            if race is not None and race.won:
                raise _Lost()
            try:
                err = _ctx_err(self.ctx)
                if err is not None:
                    raise err
                deadline = _partial_deadline(now(), self.deadline, len(addrs) - i)
            except BaseException as e:
                if first is None:
                    first = net.operror("dial", self.nw, self.laddr, ra, e)
                break
            try:
                return await self.single(ra, deadline, race)
            except net.OpError as e:
                if first is None:
                    first = e
        assert first is not None
        raise first

    async def parallel(self, primaries: list[net.Addr], fallbacks: list[net.Addr],
                       delay: float) -> net.Conn:
        """Go's dialParallel: the primary family now, the fallback after
        ``delay`` or when the primary fails; the first conn wins."""
        race = _Race()
        results: Chan[tuple[bool, Any, Optional[BaseException]]] = Chan(2)

        async def run(addrs: list[net.Addr], primary: bool) -> None:
            if not primary:
                await race.fallback.wait()
            try:
                c = None if race.won else await self.serial(addrs, race)
            except (net.OpError, _Lost) as e:
                await results.send((primary, None, e))
                return
            await results.send((primary, c, None))

        if delay == 0:
            race.fallback.set()
        else:
            _sched.go(_fire_after(race.fallback, delay))
        _sched.go(run(primaries, True))
        _sched.go(run(fallbacks, False))
        errs: dict[bool, BaseException] = {}
        for _ in range(2):
            primary, c, e = await results.recv()
            if c is not None:
                return c
            if e is not None and not isinstance(e, _Lost):
                errs[primary] = e
            if primary:
                race.fallback.set()  # the primary failed: no need to wait
        raise errs.get(True) or errs[False]

    async def single(self, ra: net.Addr, deadline: Optional[float],
                     race: Optional[_Race]) -> Union[net.Conn, net.PacketConn]:
        """Go's dialSingle: socket, control, bind, non-blocking connect."""
        from netpoll.runtime import now

        nw = self.nw
        try:
            la = net._local_for(self.laddr, ra)
        except net.AddrError as e:
            raise net.operror("dial", nw, self.laddr, ra, e) from None
        if deadline is not None and deadline <= now():
            raise net.operror("dial", nw, la, ra, DeadlineExceededError())
        stream = nw in net.STREAM_NETS
        sock = net._new_socket("dial", nw, net._family_for(nw, ra),
                               _socket.SOCK_STREAM if stream else _socket.SOCK_DGRAM, la, ra)
        fd: Optional[net._NetFD] = None
        try:
            if not stream and not isinstance(ra, net.UnixAddr):
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_BROADCAST, 1)
            if self.d.control is not None:
                self.d.control(_concrete(nw, ra), str(ra), sock)
            if la is not None:
                sock.bind(la.sockaddr())
            err = hooks.connect(sock, ra.sockaddr())
            if err not in (0, _errno.EISCONN, _errno.EINPROGRESS, _errno.EALREADY, _errno.EINTR):
                raise OSError(err, os.strerror(err))
            fd = net._newfd(net.Conn if stream else net.PacketConn, sock, stream=stream)
            fd._init(nw, None, ra)
            if err in (_errno.EINPROGRESS, _errno.EALREADY, _errno.EINTR):
                if race is not None:
                    race.inflight.add(fd)
                # Go's connect: a context cancelled while the connect is in
                # flight sets a write deadline in the past, which wakes the
                # wait at once; the error is then the context's.
                stop = _interrupt_on_cancel(self.ctx, fd)
                try:
                    if deadline is not None:
                        fd._set_deadline(deadline, "w")
                    try:
                        await net._connect_wait(fd, sock)
                    except DeadlineExceededError:
                        err = _ctx_err(self.ctx)
                        if err is not None:
                            raise err from None
                        raise
                    if deadline is not None:
                        fd._set_deadline(None, "w")
                finally:
                    stop()
                    if race is not None:
                        race.inflight.discard(fd)
            if race is not None and not race.claim(fd):
                raise _Lost()
        except BaseException as e:
            if fd is not None:
                if not fd.closed:
                    fd.close()
            else:
                net._close_quietly(sock)
            if isinstance(e, net._WRAPPED) or (self.ctx is not None and e is _ctx_err(self.ctx)):
                raise net.operror("dial", nw, la, ra, e) from None
            raise
        if stream and nw != "unix":
            _set_tcp_options(sock, self.keep_alive)
        fd._laddr = net._sockaddr_to_addr(nw, sock.getsockname())
        try:
            fd._raddr = net._sockaddr_to_addr(nw, sock.getpeername()) or ra
        except OSError:  # reset since: the address dialed stands
            pass
        return fd


def _interrupt_on_cancel(ctx: Any, fd: net._NetFD) -> Callable[[], Any]:
    """While a connect is in flight, a netpoll context's cancellation ends
    it (context.after_func); returns the stop function. Objects that only
    have Go's context shape are consulted between attempts, not during one."""
    from netpoll import context

    if not isinstance(ctx, context.Context):
        return lambda: None

    def cancel() -> None:
        if not fd.closed:
            fd._set_deadline(0, "w")  # 0: long past

    return context.after_func(ctx, cancel)


def _concrete(nw: str, addr: net.Addr) -> str:
    # Go hands Control the network with its family: "tcp4", "udp6".
    if nw in ("tcp", "udp") and isinstance(addr, net.TCPAddr):
        return nw + ("6" if addr.family == _socket.AF_INET6 else "4")
    return nw


def _set_tcp_options(sock: _socket.socket, keep_alive: float) -> None:
    # Go: TCP_NODELAY on every TCP conn; keep-alive on with the Dialer's
    # period (0: 15 s), off when negative.
    try:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        if keep_alive < 0:
            return
        secs = max(1, math.ceil(keep_alive)) if keep_alive > 0 else 15
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
        if hasattr(_socket, "TCP_KEEPIDLE"):
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, secs)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPINTVL, secs)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# ListenConfig
# ---------------------------------------------------------------------------

class ListenConfig:
    """Go's net.ListenConfig.

    - ``backlog``: as ``net.listen``'s (default: somaxconn);
    - ``reuse_port``: set SO_REUSEPORT before bind, so that several
      processes (or runtimes) each have their own listener on one port and
      the kernel spreads connections among them;
    - ``control``: ``control(network, address, sock)`` before bind.
    """

    def __init__(self, backlog: Optional[int] = None, reuse_port: bool = False,
                 control: Optional[Control] = None) -> None:
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.control = control

    def _prepare(self, nw: str, sock: _socket.socket, laddr: net.Addr) -> None:
        if self.reuse_port and not isinstance(laddr, net.UnixAddr):
            if not hasattr(_socket, "SO_REUSEPORT"):
                raise OSError(_errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        if self.control is not None:
            self.control(_concrete(nw, laddr), str(laddr), sock)

    def _laddr(self, nw: str, address: net.AddrLike) -> net.Addr:
        try:
            if self.control is not None and not callable(self.control):
                raise TypeError(f"control must be callable, not {type(self.control).__name__}")
            return net.resolve_addr(nw, address)
        except (ValueError, TypeError) as e:
            raise net.operror("listen", nw, None, None, e) from None

    def listen(self, network: str, address: net.AddrLike) -> net.Listener:
        """``net.listen`` with this configuration (tcp, tcp4, tcp6, unix)."""
        nw = net._check_net("listen", network, net.STREAM_NETS)
        return net._listen_stream(nw, self._laddr(nw, address), self.backlog,
                                  lambda sock, a: self._prepare(nw, sock, a))

    def listen_packet(self, network: str, address: net.AddrLike) -> net.PacketConn:
        """``net.listen_packet`` with this configuration (udp, udp4, udp6, unixgram)."""
        nw = net._check_net("listen", network, net.PACKET_NETS)
        return net._listen_packet(nw, self._laddr(nw, address),
                                  lambda sock, a: self._prepare(nw, sock, a))
