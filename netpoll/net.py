"""The net layer: Go's net package (Unix), on the FD layer.

``listen``, ``dial`` and ``listen_packet`` create every socket through the
hook table (netpoll.hooks), non-blocking and close-on-exec, set Go's default
options, and register it with the running runtime's poller. Every failure is
an ``OpError`` that names the operation, the network and the addresses, and
is also the built-in exception a plain socket call would raise.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import math
import os
import socket as _socket
from typing import Any, Callable, Optional, Union

from netpoll import hooks
from netpoll._fd import FD

__all__ = [
    "listen", "dial", "listen_packet", "Listener", "Conn", "PacketConn",
    "TCPAddr", "UDPAddr", "UnixAddr", "OpError", "AddrError", "UnknownNetworkError",
    "WriteToConnectedError",
    "Dialer", "ListenConfig", "split_host_port", "join_host_port",
    "Resolver", "DNSError", "lookup_host", "lookup_ip", "lookup_port",
]

STREAM_NETS = {"tcp": None, "tcp4": _socket.AF_INET, "tcp6": _socket.AF_INET6, "unix": _socket.AF_UNIX}
PACKET_NETS = {"udp": None, "udp4": _socket.AF_INET, "udp6": _socket.AF_INET6, "unixgram": _socket.AF_UNIX}

# sun_path's size: 108 on Linux, 104 on macOS and the BSDs.
SUN_PATH_MAX = 108 if os.uname().sysname == "Linux" else 104
# Linux has an abstract namespace for unix sockets ("@name" in Go's form).
ABSTRACT_UNIX = os.uname().sysname == "Linux"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class AddrError(ValueError):
    """A malformed address (Go's net.AddrError)."""

    def __init__(self, why: str, addr: Any) -> None:
        super().__init__(f"address {addr!r}: {why}")
        self.why = why
        self.addr = addr

    def __reduce__(self):
        return (type(self), (self.why, self.addr))


class UnknownNetworkError(ValueError):
    """A network name netpoll does not know (Go's net.UnknownNetworkError)."""

    def __init__(self, net: str) -> None:
        super().__init__(f"unknown network {net!r}")
        self.net = net

    def __reduce__(self):
        return (type(self), (self.net,))


class OpError(OSError):
    """A failed net operation: ``op net source->addr: err``, as Go prints it.

    It is also an instance of ``type(err)`` when ``err`` is an OSError
    (ConnectionRefusedError, TimeoutError for deadlines, ClosedError, ...),
    so code written against plain sockets keeps working.
    """

    op: str
    net: str
    source: Optional["Addr"]
    addr: Optional["Addr"]
    err: BaseException

    def __str__(self) -> str:
        s = self.op
        if self.net:
            s += " " + self.net
        if self.source is not None:
            s += " " + str(self.source)
        if self.addr is not None:
            s += ("->" if self.source is not None else " ") + str(self.addr)
        return f"{s}: {getattr(self.err, 'strerror', None) or self.err}"

    def timeout(self) -> bool:
        return isinstance(self.err, TimeoutError)

    # Pickling rebuilds it through operror(), so the copy is of the same
    # OpError[...] class; equality is by the fields, as Go compares values.
    def __reduce__(self):
        return (operror, (self.op, self.net, self.source, self.addr, self.err))

    def _key(self) -> tuple:
        return (type(self), self.op, self.net, self.source, self.addr, type(self.err), self.err.args)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OpError):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self.op, self.net))

    def temporary(self) -> bool:
        if self.op == "accept" and isinstance(self.err, (ConnectionResetError, ConnectionAbortedError)):
            return True
        return isinstance(self.err, (TimeoutError, InterruptedError)) or getattr(
            self.err, "errno", None) in (_errno.EMFILE, _errno.ENFILE)


_operror_classes: dict[type, type] = {}


def operror(op: str, net: str, source: Any, addr: Any, err: BaseException) -> OpError:
    """An OpError for ``err``, of a class that also derives from ``type(err)``."""
    if isinstance(err, OpError):
        return err
    base = type(err)
    cls = _operror_classes.get(base)
    if cls is None:
        cls = OpError if base is OSError or not isinstance(err, Exception) else type(
            f"OpError[{base.__name__}]", (OpError, base), {})
        _operror_classes[base] = cls
    code = getattr(err, "errno", None)
    e = cls.__new__(cls, code, str(err)) if code is not None else cls.__new__(cls, str(err))
    OSError.__init__(e, *((code, getattr(err, "strerror", None) or str(err)) if code is not None else (str(err),)))
    e.op, e.net, e.source, e.addr, e.err = op, net, source, addr, err
    e.__cause__ = err
    return e


# ---------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------

class TCPAddr:
    """An IP endpoint; ``str()`` gives Go's form, "127.0.0.1:80" or "[::1]:80"."""

    __slots__ = ("host", "port", "zone")
    network = "tcp"

    def __init__(self, host: str, port: int, zone: str = "") -> None:
        self.host, self.port, self.zone = host, port, zone

    @property
    def family(self) -> int:
        return _socket.AF_INET6 if ":" in self.host else _socket.AF_INET

    def sockaddr(self) -> tuple:
        if self.family == _socket.AF_INET6:
            return (self.host, self.port, 0, _scope_id(self.zone, self))
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"{self.host}%{self.zone}" if self.zone else self.host
        return f"[{host}]:{self.port}" if ":" in self.host else f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (self.host, self.port, self.zone) == (
            other.host, other.port, other.zone)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.host, self.port, self.zone))

    def __iter__(self):  # so that `host, port = addr` works
        return iter((self.host, self.port))


class UDPAddr(TCPAddr):
    __slots__ = ()
    network = "udp"


class UnixAddr:
    """A unix socket address. On Linux a path that starts with ``@`` (Go's
    form) names the abstract namespace, and abstract addresses print so."""

    __slots__ = ("path", "network")

    def __init__(self, path: str, network: str = "unix") -> None:
        if ABSTRACT_UNIX and path.startswith("\0"):
            path = "@" + path[1:]
        self.path, self.network = path, network

    family = _socket.AF_UNIX

    @property
    def abstract(self) -> bool:
        return ABSTRACT_UNIX and self.path.startswith("@")

    def sockaddr(self) -> str:
        return "\0" + self.path[1:] if self.abstract else self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"UnixAddr({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnixAddr) and other.path == self.path

    def __hash__(self) -> int:
        return hash((UnixAddr, self.path))


Addr = Union[TCPAddr, UDPAddr, UnixAddr]
AddrLike = Union[str, tuple, Addr]


def _scope_id(zone: str, addr: Any) -> int:
    # An IPv6 zone is an interface: its index, or the number itself (Go's
    # zoneCache). It is never a name to resolve.
    if not zone:
        return 0
    if zone.isdigit():
        return int(zone)
    try:
        return _socket.if_nametoindex(zone)
    except OSError:
        raise AddrError(f"unknown IPv6 zone (no interface {zone!r})", str(addr)) from None


def _zone_name(scope: int) -> str:
    if not scope:
        return ""
    try:
        return _socket.if_indextoname(scope)
    except OSError:
        return str(scope)


def _canonical_ip(ip: Any) -> Any:
    # Go's rule: an IPv4-mapped IPv6 address is IPv4 (IP.To4() != nil).
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _split_host_port(s: str) -> tuple[str, str]:
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise AddrError("missing ']' in address", s)
        host, rest = s[1:end], s[end + 1:]
        if not rest.startswith(":"):
            raise AddrError("missing port in address", s)
        return host, rest[1:]
    if ":" not in s:
        raise AddrError("missing port in address", s)
    host, port = s.rsplit(":", 1)
    if ":" in host:
        raise AddrError("too many colons in address", s)
    return host, port


def _port(p: Any, addr: Any) -> int:
    if isinstance(p, bool):
        raise AddrError("invalid port", addr)
    if isinstance(p, str):
        if p.isdigit():
            p = int(p)
        elif p:
            try:
                p = _socket.getservbyname(p)
            except OSError:
                raise AddrError(f"unknown port {p!r}", addr) from None
        else:
            raise AddrError("missing port in address", addr)
    if not isinstance(p, int):
        raise AddrError(f"port must be an int, not {type(p).__name__}", addr)
    if not 0 <= p <= 65535:
        raise AddrError(f"port {p} out of range 0-65535", addr)
    return p


def _ip_addr(net: str, address: AddrLike, cls: type, family: Optional[int]) -> TCPAddr:
    if isinstance(address, (TCPAddr, UDPAddr)):
        host, port, zone = address.host, address.port, address.zone
    elif isinstance(address, tuple):
        if len(address) not in (2, 4):
            raise AddrError("an IP address tuple is (host, port)", address)
        host, port, zone = address[0], _port(address[1], address), ""
    elif isinstance(address, str):
        if not address:
            raise AddrError("missing address", address)
        host, p = _split_host_port(address)
        port, zone = _port(p, address), ""
    else:
        raise AddrError(f"{net} address must be 'host:port' or (host, port), not {type(address).__name__}", address)
    if not isinstance(host, str):
        raise AddrError("host must be a str", address)
    if "\0" in host:
        raise AddrError("host contains a NUL byte", address)
    if "%" in host:
        host, zone = host.split("%", 1)
    if host:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if zone:
                raise AddrError("a zone is allowed on a numeric IPv6 address only", address) from None
            ip = _resolve(net, host, family, address)
        ip = _canonical_ip(ip)
        if family == _socket.AF_INET and ip.version != 4:
            raise AddrError(f"no suitable address found ({net} needs an IPv4 address)", address)
        if family == _socket.AF_INET6 and ip.version != 6:
            raise AddrError(f"no suitable address found ({net} needs an IPv6 address)", address)
        if zone and ip.version != 6:
            raise AddrError("a zone is allowed on an IPv6 address only", address)
        host = str(ip)
    elif zone:
        raise AddrError("a zone needs an IPv6 address", address)
    a = cls(host, port, zone)
    _scope_id(zone, address)  # an unknown interface is an error here, not at bind
    return a


def _resolve(net: str, host: str, family: Optional[int], address: Any):
    # Host names go through the system resolver (blocking, like getaddrinfo).
    try:
        infos = _socket.getaddrinfo(host, None, family or 0, _socket.SOCK_STREAM)
    except _socket.gaierror as e:
        raise AddrError(f"no such host ({e.strerror})", address) from None
    except UnicodeError as e:  # a label longer than 63 characters, ...
        raise AddrError(f"invalid host name ({e})", address) from None
    return ipaddress.ip_address(infos[0][4][0])


def _unix_addr(net: str, address: AddrLike) -> UnixAddr:
    if isinstance(address, UnixAddr):
        path = address.path
    elif isinstance(address, (str, bytes, os.PathLike)):
        path = os.fsdecode(address)
    else:
        raise AddrError(f"{net} address must be a path, not {type(address).__name__}", address)
    if not path:
        raise AddrError("missing address", address)
    if "\0" in path and not path.startswith("\0"):
        raise AddrError("unix socket path contains a NUL byte (it would be cut there)", address)
    # An abstract socket ("@name", or "\0name") is not a file; neither is truncated.
    if len(os.fsencode(path)) >= SUN_PATH_MAX:
        raise AddrError(f"unix socket path longer than sun_path ({SUN_PATH_MAX - 1} bytes)", address)
    return UnixAddr(path, net)


def resolve_addr(net: str, address: AddrLike) -> Addr:
    """Parse ``address`` for network ``net`` (Go's ResolveTCPAddr and friends)."""
    if net in ("unix", "unixgram"):
        return _unix_addr(net, address)
    if net in STREAM_NETS:
        return _ip_addr(net, address, TCPAddr, STREAM_NETS[net])
    if net in PACKET_NETS:
        return _ip_addr(net, address, UDPAddr, PACKET_NETS[net])
    raise UnknownNetworkError(net)


def _sockaddr_to_addr(net: str, sa: Any) -> Optional[Addr]:
    if sa is None or sa == "" or sa == b"":
        return None
    if isinstance(sa, (str, bytes)):
        return UnixAddr(os.fsdecode(sa), net)
    cls = UDPAddr if net.startswith("udp") else TCPAddr
    host = sa[0]
    zone = ""
    if "%" in host:
        host = host.split("%", 1)[0]
    if len(sa) == 4:
        zone = _zone_name(sa[3])
        # One string form per address: the kernel's ("::ffff:127.0.0.1")
        # and a parsed one compare equal.
        ip = _canonical_ip(ipaddress.ip_address(host))
        host = str(ip)
        if ip.version == 4:
            zone = ""
    return cls(host, sa[1], zone)


def _family_for(net: str, addr: Addr) -> int:
    fam = (STREAM_NETS.get(net) if net in STREAM_NETS else PACKET_NETS.get(net))
    if fam is not None:
        return fam
    return addr.family


def listener_backlog() -> int:
    """Go's listenerBacklog: /proc/sys/net/core/somaxconn capped at 65535,
    else SOMAXCONN."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            n = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        n = 0
    if n <= 0:
        return _socket.SOMAXCONN
    return min(n, 65535)


def _check_net(op: str, net: Any, table: dict) -> str:
    if not isinstance(net, str) or net not in table:
        raise operror(op, str(net), None, None, UnknownNetworkError(str(net)))
    return net


def _new_socket(op: str, net: str, family: int, sotype: int, source: Any, addr: Any):
    try:
        return hooks.socket(family, sotype, 0)
    except OSError as e:
        raise operror(op, net, source, addr, e) from None


# What creating, binding or registering a socket with the poller can raise for a
# reason the caller should see as an OpError: an errno, or a backend limit
# such as select's FD_SETSIZE (ValueError).
_WRAPPED = (OSError, ValueError)


def _newfd(cls: type, sock: _socket.socket, stream: bool = True) -> Any:
    # Register with the poller. A backend's descriptor limit (select's
    # FD_SETSIZE, a ValueError) is EMFILE to the caller: like the process
    # limit it clears as descriptors close, so OpError.temporary() holds and
    # an accept loop drops that connection and keeps serving.
    try:
        return cls(sock, stream=stream)
    except ValueError as e:
        raise OSError(_errno.EMFILE, str(e)) from None


def _close_quietly(sock: _socket.socket) -> None:
    try:
        hooks.close(sock)
    except OSError:
        pass


def _seconds(t: Any, what: str) -> Any:
    """Check a deadline or timeout before it reaches the FD layer: a number
    (an int too large for a float is +-inf) or None; a str, bytes or bool is
    a TypeError even when float() would take it."""
    if t is None:
        return None
    if isinstance(t, (str, bytes, bytearray, bool)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(t).__name__} {t!r}")
    if isinstance(t, int):
        try:
            float(t)
        except OverflowError:
            return math.inf if t > 0 else -math.inf
    return t


def _set_tcp_defaults(sock: _socket.socket) -> None:
    # Go: TCP_NODELAY on every TCP conn, keep-alive on with 15 s idle.
    try:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
        if hasattr(_socket, "TCP_KEEPIDLE"):
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, 15)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPINTVL, 15)
    except OSError:
        pass


def _set_v6only(sock: _socket.socket, net: str, addr: Addr) -> None:
    # "tcp"/"udp" on the IPv6 wildcard listen dual-stack; "tcp6"/"udp6" not.
    if addr.family == _socket.AF_INET6:
        try:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1 if net.endswith("6") else 0)
        except OSError:
            pass


def _wildcard(net: str, addr: TCPAddr) -> TCPAddr:
    if addr.host:
        return addr
    fam = STREAM_NETS.get(net) or PACKET_NETS.get(net)
    if fam == _socket.AF_INET or (fam is None and not _socket.has_ipv6):
        return type(addr)("0.0.0.0", addr.port)
    return type(addr)("::", addr.port)


# ---------------------------------------------------------------------------
# Conn, Listener, PacketConn
# ---------------------------------------------------------------------------

class _NetFD(FD):
    """An FD with the net layer's names: network, local and remote address.

    The FD layer's own methods (socket access, accept, recvfrom, sendto,
    options) have underscore names: the public ones are Go's Conn methods.
    """

    _net: str
    _laddr: Optional[Addr]
    _raddr: Optional[Addr]

    def _init(self, net: str, laddr: Optional[Addr], raddr: Optional[Addr]) -> None:
        self._net = net
        self._laddr = laddr
        self._raddr = raddr

    @property
    def local_addr(self) -> Optional[Addr]:
        if self._laddr is None and not self.closed:
            self._laddr = _sockaddr_to_addr(self._net, self._sock.getsockname())
        return self._laddr

    @property
    def remote_addr(self) -> Optional[Addr]:
        if self._raddr is None and not self.closed:
            try:
                self._raddr = _sockaddr_to_addr(self._net, self._sock.getpeername())
            except OSError:
                return None
        return self._raddr

    def _wrap_error(self, op: str, err: BaseException) -> BaseException:
        if op == "accept":
            return operror(op, self._net, None, self._laddr, err)
        return operror(op, self._net, self._laddr, self._raddr, err)

    def _deadline(self, t: Optional[float], mode: str) -> None:
        t = _seconds(t, "deadline")
        try:
            self._set_deadline(t, mode)
        except OSError as e:
            raise operror("set", self._net, None, self._laddr, e) from None

    def set_deadline(self, t: Optional[float]) -> None:
        """Read and write deadline: absolute ``netpoll.now()`` seconds.

        None is the only "no deadline"; a number is a point in time, so 0
        (or any past time) makes pending and future operations time out at
        once. Moving it re-arms the timer."""
        self._deadline(t, "rw")

    def set_read_deadline(self, t: Optional[float]) -> None:
        """As set_deadline, for reads only."""
        self._deadline(t, "r")

    def set_write_deadline(self, t: Optional[float]) -> None:
        """As set_deadline, for writes only."""
        self._deadline(t, "w")

    def close(self) -> None:
        """Close at once; blocked operations wake with ClosedError. Closing twice is a no-op."""
        if self.closed:
            return
        if self._raddr is None and self._net not in ("unixgram",):
            self.remote_addr  # noqa: B018 - keep it for error messages after close
        try:
            FD.close(self)
        except OSError as e:
            raise operror("close", self._net, self._laddr, self._raddr, e) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<{type(self).__name__} {self._net} {self._laddr}->{self._raddr} {state}>"


class Conn(_NetFD):
    """A stream connection (TCP or Unix).

    ``await read(buf)`` reads into a writable buffer and returns the count, 0
    at EOF; ``await write(data)`` writes all of data. Both raise OpError.
    """

    async def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Send ``count`` bytes (None: to EOF) of the binary file ``file`` from
        ``offset`` with sendfile(2), falling back to read+write; returns the
        count sent (netpoll.file.sendfile)."""
        from netpoll.file import sendfile

        return await sendfile(self, file, offset, count)

    def close_write(self) -> None:
        """Shut down the writing side (the peer reads EOF)."""
        self._close_side(_socket.SHUT_WR)

    def close_read(self) -> None:
        """Shut down the reading side (later reads return EOF)."""
        self._close_side(_socket.SHUT_RD)

    def _close_side(self, how: int) -> None:
        try:
            self._shutdown(how)
        except OSError as e:
            raise operror("close", self._net, self._laddr, self._raddr, e) from None

    def _setopt(self, level: int, opt: int, value: Any) -> None:
        try:
            self._control(lambda s: s.setsockopt(level, opt, value))
        except OSError as e:
            raise operror("set", self._net, self._laddr, self._raddr, e) from None

    def set_no_delay(self, on: bool = True) -> None:
        self._setopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, int(on))

    def set_keep_alive(self, on: bool = True) -> None:
        self._setopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, int(on))

    def set_linger(self, sec: Optional[int]) -> None:
        """None: the OS default; 0: discard unsent data and reset on close; > 0: linger."""
        import struct

        if sec is not None and (isinstance(sec, bool) or not isinstance(sec, int)):
            raise TypeError(f"linger must be None or an int number of seconds, not {type(sec).__name__} {sec!r}")
        if sec is not None and not -0x80000000 <= sec <= 0x7FFFFFFF:
            raise ValueError(f"linger must fit a C int (-2147483648 to 2147483647), not {sec!r}")
        on, sec = (0, 0) if sec is None or sec < 0 else (1, sec)
        self._setopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", on, sec))


class Listener:
    """A stream listener; ``await accept()`` returns a Conn.

    It holds its descriptor (Go's TCPListener{fd *netFD}) instead of being
    one, so it has a listener's names only: no read or write.
    """

    __slots__ = ("_fd", "_unlink")

    def __init__(self, sock: _socket.socket) -> None:
        self._fd = _newfd(_NetFD, sock)
        self._unlink: Optional[str] = None

    def _init(self, net: str, laddr: Optional[Addr], raddr: Optional[Addr]) -> None:
        self._fd._init(net, laddr, raddr)

    @property
    def addr(self) -> Addr:
        return self._fd._laddr  # type: ignore[return-value]

    @property
    def closed(self) -> bool:
        return self._fd.closed

    def fileno(self) -> int:
        return self._fd.fileno()

    def set_deadline(self, t: Optional[float]) -> None:
        """Deadline for accept: absolute ``netpoll.now()`` seconds; None is
        the only "no deadline", a past time (0 included) expires at once."""
        self._fd._deadline(t, "r")

    async def accept(self) -> Conn:
        fd = self._fd
        sock, _ = await fd._accept()
        try:
            conn = _newfd(Conn, sock)
        except BaseException as e:
            _close_quietly(sock)
            if isinstance(e, _WRAPPED):
                raise operror("accept", fd._net, None, fd._laddr, e) from None
            raise
        if fd._net != "unix":
            _set_tcp_defaults(sock)
        conn._init(fd._net, fd._laddr if fd._net == "unix" else None, None)
        return conn

    def close(self) -> None:
        """Close at once (the address is free again); a blocked accept wakes
        with ClosedError. Closing twice is a no-op."""
        was_open = not self._fd.closed
        self._fd.close()
        if was_open and self._unlink:
            try:
                os.unlink(self._unlink)
            except OSError:
                pass

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<Listener {self._fd._net} {self.addr} {state}>"


class WriteToConnectedError(OSError):
    """write_to on a dialed datagram conn (Go's net.ErrWriteToConnected)."""

    def __init__(self, msg: str = "use of WriteTo with pre-connected connection") -> None:
        super().__init__(_errno.EISCONN, msg)

    def __str__(self) -> str:
        return self.strerror or ""

    def __reduce__(self):
        return (type(self), (self.strerror,))


class PacketConn(_NetFD):
    """A datagram socket (UDP or unixgram). A dialed one (net.dial("udp",
    ...)) is connected: it reads and writes, and write_to is refused."""

    async def read_from(self, buf: Any) -> tuple[int, Optional[Addr]]:
        """Receive one datagram into ``buf`` (truncated to fit): (n, sender)."""
        n, sa = await self._recvfrom(buf)
        return n, _sockaddr_to_addr(self._net, sa)

    async def write_to(self, data: Any, addr: AddrLike) -> int:
        """Send ``data`` as one datagram to ``addr``; returns len(data)."""
        try:
            a = resolve_addr(self._net, addr)
        except (AddrError, UnknownNetworkError) as e:
            raise operror("write", self._net, self._laddr, None, e) from None
        if self._raddr is not None:
            raise operror("write", self._net, self._laddr, a, WriteToConnectedError())
        try:
            sa = self._family_sockaddr(a)
        except AddrError as e:
            raise operror("write", self._net, self._laddr, a, e) from None
        try:
            return await self._sendto(data, sa)
        except OpError as e:
            # Go: a WriteTo error names the destination (Addr), not raddr.
            if e.addr is None:
                e.addr = a
            raise

    def _family_sockaddr(self, a: Addr) -> Any:
        if isinstance(a, TCPAddr):
            fam = self._sock.family
            if fam == _socket.AF_INET6 and a.family == _socket.AF_INET:
                return (f"::ffff:{a.host}", a.port, 0, 0)
            if fam == _socket.AF_INET and a.family == _socket.AF_INET6:
                raise AddrError("non-IPv4 address", str(a))
        return a.sockaddr()


# ---------------------------------------------------------------------------
# listen, dial, listen_packet
# ---------------------------------------------------------------------------

def _bind(net: str, laddr: Addr, sotype: int, ipopt: int, make: Callable[[_socket.socket], Any],
          prepare: Optional[Callable[[_socket.socket, Addr], None]] = None) -> Any:
    # listen's and listen_packet's common part: socket, options (ipopt on IP
    # sockets; then prepare(sock, laddr), ListenConfig's), bind, then
    # make(sock) wraps it (after listen(2) for streams).
    # Any failure closes the socket and leaves as OpError("listen").
    if isinstance(laddr, TCPAddr):
        laddr = _wildcard(net, laddr)
    sock = _new_socket("listen", net, _family_for(net, laddr), sotype, None, laddr)
    try:
        if isinstance(laddr, TCPAddr):
            sock.setsockopt(_socket.SOL_SOCKET, ipopt, 1)
            _set_v6only(sock, net, laddr)
        if prepare is not None:
            prepare(sock, laddr)
        sock.bind(laddr.sockaddr())
        fd = make(sock)
    except BaseException as e:
        _close_quietly(sock)
        if isinstance(e, _WRAPPED):
            raise operror("listen", net, None, laddr, e) from None
        raise
    fd._init(net, _sockaddr_to_addr(net, sock.getsockname()), None)
    return fd


def listen(network: str, address: AddrLike, backlog: Optional[int] = None) -> Listener:
    """Socket, bind and listen in one call (tcp, tcp4, tcp6, unix).

    ``backlog`` defaults to the system's somaxconn (capped at 65535); unlike
    Go, a caller may pass its own.
    """
    net = _check_net("listen", network, STREAM_NETS)
    try:
        laddr = resolve_addr(net, address)
    except ValueError as e:
        raise operror("listen", net, None, None, e) from None
    return _listen_stream(net, laddr, backlog)


def _listen_stream(net: str, laddr: Addr, backlog: Optional[int],
                   prepare: Optional[Callable[[_socket.socket, Addr], None]] = None) -> Listener:
    # listen's and ListenConfig.listen's common part, after the address.
    if backlog is None:
        backlog = listener_backlog()
    elif isinstance(backlog, bool) or not isinstance(backlog, int) or not 0 <= backlog <= 0x7FFFFFFF:
        raise operror("listen", net, None, None, ValueError(
            f"backlog must be an int from 0 to 2147483647, not {backlog!r}"))

    def make(sock: _socket.socket) -> Listener:
        hooks.listen(sock, backlog)
        return Listener(sock)

    ln = _bind(net, laddr, _socket.SOCK_STREAM, _socket.SO_REUSEADDR, make, prepare)
    if isinstance(laddr, UnixAddr) and not laddr.abstract:
        ln._unlink = laddr.path
    return ln


def listen_packet(network: str, address: AddrLike) -> PacketConn:
    """A bound datagram socket (udp, udp4, udp6, unixgram)."""
    net = _check_net("listen", network, PACKET_NETS)
    try:
        laddr = resolve_addr(net, address)
    except ValueError as e:
        raise operror("listen", net, None, None, e) from None
    return _listen_packet(net, laddr)


def _listen_packet(net: str, laddr: Addr,
                   prepare: Optional[Callable[[_socket.socket, Addr], None]] = None) -> PacketConn:
    return _bind(net, laddr, _socket.SOCK_DGRAM, _socket.SO_BROADCAST,
                 lambda sock: _newfd(PacketConn, sock, stream=False), prepare)


async def dial(network: str, address: AddrLike, timeout: Optional[float] = None,
               local_addr: Optional[AddrLike] = None) -> Union[Conn, PacketConn]:
    """Connect to ``address`` (tcp, tcp4, tcp6, unix, udp, udp4, udp6, unixgram):
    ``Dialer(timeout=timeout, local_addr=local_addr).dial(network, address)``.

    A name is resolved without blocking the runtime and every address it has
    is tried (see Dialer). ``timeout`` (seconds) bounds the whole dial; as
    in Go, None and 0 both mean no timeout, and a negative timeout fails at
    once with a TimeoutError. ``local_addr`` binds the socket first; a
    wildcard host (``0.0.0.0``, ``::``) fits a remote address of either
    family. The conn's ``remote_addr`` is the peer name (getpeername).
    """
    return await Dialer(timeout=timeout, local_addr=local_addr).dial(network, address)


def _local_for(laddr: Optional[Addr], raddr: Addr) -> Optional[Addr]:
    # Go's resolveAddrList filter: a local IP address must be of the remote
    # address's family, except a wildcard, which fits either.
    if not isinstance(laddr, TCPAddr) or not isinstance(raddr, TCPAddr) or not raddr.host:
        return laddr
    if laddr.host in ("", "0.0.0.0", "::"):
        if not laddr.host:
            return laddr
        return type(laddr)("::" if raddr.family == _socket.AF_INET6 else "0.0.0.0", laddr.port)
    if laddr.family != raddr.family:
        raise AddrError("no suitable address found (the local and remote addresses are of different families)",
                        str(laddr))
    return laddr


async def _connect_wait(fd: _NetFD, sock: _socket.socket) -> None:
    while True:
        await fd._wait_write()
        err = hooks.getsockopt(sock, _socket.SOL_SOCKET, _socket.SO_ERROR)
        if err in (_errno.EINPROGRESS, _errno.EALREADY, _errno.EINTR):
            continue
        if err == _errno.EISCONN:
            return
        if err:
            raise OSError(err, os.strerror(err))
        # SO_ERROR 0 can come with a spurious wakeup (Go issues 14548,
        # 19289): only a peer name proves the connection.
        try:
            sock.getpeername()
            return
        except OSError:
            continue


# Resolving, dialing and listening with options live in their own modules;
# they build on everything above.
from netpoll._dial import Dialer, ListenConfig, join_host_port, split_host_port  # noqa: E402
from netpoll._resolve import DNSError, Resolver, lookup_host, lookup_ip, lookup_port  # noqa: E402
