"""A fault-injecting switch for the hook table (Go's net/internal/socktest).

    sw = Switch()
    sw.set("connect", lambda st: fail(errno.ECONNREFUSED))
    with sw:                      # installs into netpoll.hooks, restores on exit
        ...
    assert not sw.sockets()       # every socket opened was closed

A filter runs *before* the call with the call's Status. It may raise an
OSError, which cancels the call and becomes its result, or return an
after-filter, which runs *after* the call with ``Status.err`` filled in and may
raise an OSError to replace the result (a socket the call created is closed
first, so the injected failure leaks nothing). The switch keeps a table of the
sockets it saw open and per-(family, type, proto) counters.
"""

from __future__ import annotations

import errno as _errno
import os
import socket as _socket
import threading
from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

from netpoll import hooks

CALLS = hooks.NAMES


@dataclass
class Status:
    cookie: tuple[int, int, int]  # (family, type, proto)
    err: Optional[OSError] = None  # the call's own error, for after-filters
    socket_err: int = 0  # the SO_ERROR value getsockopt returned


@dataclass
class Stat:
    opened: int = 0
    connected: int = 0
    listened: int = 0
    accepted: int = 0
    closed: int = 0
    open_failed: int = 0
    connect_failed: int = 0
    listen_failed: int = 0
    accept_failed: int = 0
    close_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


AfterFilter = Callable[[Status], None]
Filter = Callable[[Status], Optional[AfterFilter]]


def fail(code: int) -> None:
    """Raise the OSError a real call failing with ``code`` would raise."""
    raise OSError(code, os.strerror(code))


def _cookie(sock: _socket.socket) -> tuple[int, int, int]:
    return (int(sock.family), int(sock.type), sock.proto)


class Switch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._filters: dict[str, Filter] = {}
        self._sockets: dict[int, Status] = {}
        self._stats: defaultdict[tuple[int, int, int], Stat] = defaultdict(Stat)
        self._saved: Optional[dict[str, Any]] = None

    # -- configuration ----------------------------------------------------

    def set(self, call: str, filter: Optional[Filter]) -> None:
        """Install ``filter`` for ``call`` (one of CALLS); None removes it."""
        if call not in CALLS:
            raise ValueError(f"unknown hooked call {call!r}; one of {', '.join(CALLS)}")
        with self._lock:
            if filter is None:
                self._filters.pop(call, None)
            else:
                self._filters[call] = filter

    def install(self) -> None:
        if self._saved is not None:
            raise RuntimeError("switch already installed")
        self._saved = {name: getattr(hooks, name) for name in CALLS}
        for name in CALLS:
            setattr(hooks, name, getattr(self, name))

    def uninstall(self) -> None:
        if self._saved is None:
            return
        for name, fn in self._saved.items():
            setattr(hooks, name, fn)
        self._saved = None

    def __enter__(self) -> "Switch":
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    # -- inspection -------------------------------------------------------

    def sockets(self) -> dict[int, Status]:
        """The sockets opened through the switch and not yet closed."""
        with self._lock:
            return dict(self._sockets)

    def stats(self) -> dict[tuple[int, int, int], Stat]:
        with self._lock:
            return {k: Stat(**v.as_dict()) for k, v in self._stats.items()}

    def total(self, counter: str) -> int:
        """One counter summed over every cookie, e.g. total("accepted")."""
        with self._lock:
            return sum(getattr(s, counter) for s in self._stats.values())

    # -- the wrapped calls --------------------------------------------------

    def _before(self, call: str, st: Status) -> Optional[AfterFilter]:
        f = self._filters.get(call)
        return f(st) if f is not None else None

    def socket(self, family: int, type: int, proto: int) -> _socket.socket:
        st = Status((family, type, proto))
        try:
            after = self._before("socket", st)
            sock = hooks.DEFAULTS["socket"](family, type, proto)
        except OSError as e:
            st.err = e
            with self._lock:
                self._stats[st.cookie].open_failed += 1
            raise
        if after is not None:
            try:
                after(st)
            except OSError:
                sock.close()
                with self._lock:
                    self._stats[st.cookie].open_failed += 1
                raise
        st.cookie = _cookie(sock)
        with self._lock:
            self._sockets[sock.fileno()] = st
            self._stats[st.cookie].opened += 1
        return sock

    def close(self, sock: _socket.socket) -> None:
        fd = sock.fileno()
        with self._lock:
            st = self._sockets.get(fd)
        if st is None:
            return hooks.DEFAULTS["close"](sock)
        try:
            after = self._before("close", st)
            st.err = None  # this call's result, not an earlier call's
            hooks.DEFAULTS["close"](sock)
            if after is not None:
                after(st)
        except OSError as e:
            st.err = e
            with self._lock:
                self._stats[st.cookie].close_failed += 1
                # close(2) releases the descriptor even when it reports an
                # error (Linux); only a close cancelled before the call keeps it.
                if sock.fileno() < 0:
                    self._sockets.pop(fd, None)
            raise
        with self._lock:
            self._sockets.pop(fd, None)
            self._stats[st.cookie].closed += 1

    def _count(self, cookie: tuple[int, int, int], counter: str) -> None:
        with self._lock:
            stat = self._stats[cookie]
            setattr(stat, counter, getattr(stat, counter) + 1)

    def _filtered(self, call: str, sock: _socket.socket, fn: Callable[[], Any]) -> tuple[Optional[Status], Any]:
        with self._lock:
            st = self._sockets.get(sock.fileno())
        if st is None:
            return None, fn()
        try:
            after = self._before(call, st)
            st.err = None  # this call's result, not an earlier call's
            result = fn()
            if after is not None:
                after(st)
        except OSError as e:
            st.err = e
            self._count(st.cookie, call + "_failed")
            raise
        return st, result

    def connect(self, sock: _socket.socket, addr: Any) -> int:
        st, err = self._filtered("connect", sock, lambda: hooks.DEFAULTS["connect"](sock, addr))
        # An asynchronous connect is counted when SO_ERROR reports success.
        if st is not None and err in (0, _errno.EISCONN):
            self._count(st.cookie, "connected")
        return err

    def listen(self, sock: _socket.socket, backlog: int) -> None:
        st, _ = self._filtered("listen", sock, lambda: hooks.DEFAULTS["listen"](sock, backlog))
        if st is not None:
            self._count(st.cookie, "listened")

    def getsockopt(self, sock: _socket.socket, level: int, option: int) -> int:
        with self._lock:
            st = self._sockets.get(sock.fileno())
        if st is None:
            return hooks.DEFAULTS["getsockopt"](sock, level, option)
        after = self._before("getsockopt", st)
        st.err = None
        value = hooks.DEFAULTS["getsockopt"](sock, level, option)
        st.socket_err = value
        if after is not None:
            after(st)
        if option == _socket.SO_ERROR and value in (0, _errno.EISCONN):
            self._count(st.cookie, "connected")
        return value

    def accept(self, sock: _socket.socket) -> tuple[_socket.socket, Any]:
        with self._lock:
            lst = self._sockets.get(sock.fileno())
        st = Status(lst.cookie if lst else _cookie(sock))
        try:
            after = self._before("accept", st)
            ns, addr = hooks.DEFAULTS["accept"](sock)
        except OSError as e:
            st.err = e
            if not isinstance(e, BlockingIOError):
                with self._lock:
                    self._stats[st.cookie].accept_failed += 1
            raise
        if after is not None:
            try:
                after(st)
            except OSError:
                ns.close()
                with self._lock:
                    self._stats[st.cookie].accept_failed += 1
                raise
        with self._lock:
            self._sockets[ns.fileno()] = Status(_cookie(ns))
            self._stats[st.cookie].accepted += 1
        return ns, addr
