"""The syscall hook table (Go's net/hook_unix.go and poll.CloseFunc).

Every socket the net layer creates, connects, listens on, accepts or closes
goes through these module attributes, looked up at each call, so tests can
swap them for a fault-injecting switch (``netpoll.socktest.Switch``) and
prove that every error path closes what it opened.

- ``socket(family, type, proto) -> socket.socket``: non-blocking, close-on-exec
- ``connect(sock, addr) -> int``: 0 or an errno (EINPROGRESS...), like connect_ex
- ``listen(sock, backlog) -> None``
- ``accept(sock) -> (socket.socket, addr or None)``: the new socket non-blocking
  and close-on-exec (``netpoll._syscall.accept``: accept4, or accept + fcntl where
  the system lacks it); raises BlockingIOError when nothing is queued
- ``close(sock) -> None``
- ``getsockopt(sock, level, option) -> int``
"""

from __future__ import annotations

import socket as _socket
from typing import Any, Callable

from netpoll import _syscall

# A NETPOLL_PORTABLE build takes the path of systems without the flags here too.
_NONBLOCK_CLOEXEC = 0 if _syscall.PORTABLE else (
    getattr(_socket, "SOCK_NONBLOCK", 0) | getattr(_socket, "SOCK_CLOEXEC", 0))


def sys_socket(family: int, type: int, proto: int) -> _socket.socket:
    s = _socket.socket(family, type | _NONBLOCK_CLOEXEC, proto)
    if not _NONBLOCK_CLOEXEC:  # platforms without the flags (macOS)
        s.setblocking(False)
    return s


def sys_connect(sock: _socket.socket, addr: Any) -> int:
    return sock.connect_ex(addr)


def sys_listen(sock: _socket.socket, backlog: int) -> None:
    sock.listen(backlog)


def sys_accept(sock: _socket.socket) -> tuple[_socket.socket, Any]:
    # The address is left to the caller (getpeername when asked), as
    # socket.accept() would set the fd blocking.
    fd = _syscall.accept(sock.fileno())
    return _socket.socket(sock.family, sock.type, sock.proto, fileno=fd), None


def sys_close(sock: _socket.socket) -> None:
    sock.close()


def sys_getsockopt(sock: _socket.socket, level: int, option: int) -> int:
    return sock.getsockopt(level, option)


socket: Callable[[int, int, int], _socket.socket] = sys_socket
connect: Callable[[_socket.socket, Any], int] = sys_connect
listen: Callable[[_socket.socket, int], None] = sys_listen
accept: Callable[[_socket.socket], tuple[_socket.socket, Any]] = sys_accept
close: Callable[[_socket.socket], None] = sys_close
getsockopt: Callable[[_socket.socket, int, int], int] = sys_getsockopt

NAMES = ("socket", "connect", "listen", "accept", "close", "getsockopt")
DEFAULTS = {name: globals()[name] for name in NAMES}


def restore() -> None:
    """Put the real system calls back."""
    globals().update(DEFAULTS)
