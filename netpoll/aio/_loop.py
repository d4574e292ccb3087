"""netpoll's asyncio event loop: asyncio's Unix loop on netpoll's runtime.

The servers, sockets, signals, pipes, datagram and subprocess transports
are asyncio's own (selector_events, unix_events); the TCP and unix stream
transports are netpoll's compiled ``_transport.SocketTransport`` (TLS runs
asyncio's SSLProtocol over it, as asyncio does over its own).
The selector is replaced by ``_Registry``, which turns each registered fd
into a netpoll poll descriptor watched by goroutines, and ``_run_once``
hands the thread to netpoll's scheduler (``_core.Core.run``) until
``stop()``; asyncio's callbacks and timers then run as steps of the loop's
main goroutine. See _core.pyx for the invariants.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
from asyncio.base_events import _format_handle  # asyncio's wording for slow callbacks
from asyncio.log import logger
from typing import Any, Mapping, Optional

from netpoll import _netpoll, _resolve, _sched
from netpoll._table import backend_class, resolve
from netpoll.errors import NotPollableError
from netpoll.aio import _core, _transport

_EVENTS = selectors.EVENT_READ | selectors.EVENT_WRITE


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _NotPollable(NotPollableError, PermissionError):
    """A regular file or directory: refused as asyncio's epoll selector does (EPERM)."""


class _Map(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[_fileobj_to_fd(fileobj)]
        except ValueError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._keys)


class _Registry(selectors.BaseSelector):
    """The loop's selector: registration only. Each fd gets one poll
    descriptor for its registration's life and one watcher per direction;
    ``data`` is asyncio's (reader handle, writer handle). The fd of a
    stream transport (``shared``: fd -> its pd) is watched on the transport's
    descriptor, which the transport keeps and frees (asyncio's sendfile
    adds a writer on the socket of a transport that waits for it)."""

    def __init__(self, core: _core.Core, shared: dict[int, Any]) -> None:
        self._core = core
        self._shared = shared
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._fds: dict[int, list[Any]] = {}   # fd -> [pd, reader watcher, writer watcher, borrowed]
        self._map = _Map(self._keys)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~_EVENTS:
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        pd = self._shared.get(fd)
        borrowed = pd is not None
        if not borrowed:
            try:
                pd = self._core.sched.pollopen(fd)
            except NotPollableError as e:
                raise _NotPollable(fd, str(e).split(": ", 1)[-1]) from None
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        self._fds[fd] = [pd, None, None, borrowed]
        self._watch(fd, events, data)
        return key

    def _watch(self, fd: int, events: int, data: Any) -> None:
        entry = self._fds[fd]
        reader, writer = data if data is not None else (None, None)
        for i, bit, mode, handle in ((1, selectors.EVENT_READ, "r", reader),
                                     (2, selectors.EVENT_WRITE, "w", writer)):
            w = entry[i]
            if events & bit:
                if w is None:
                    entry[i] = self._core.watch(entry[0], mode, handle, entry[3])
                else:
                    w.handle = handle
            elif w is not None:
                w.cancel()
                entry[i] = None

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        try:
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        pd, rw, ww, borrowed = self._fds.pop(fd)
        for w in (rw, ww):
            if w is not None:
                w.cancel()
        if borrowed:
            return key
        self._core.sched.wake(pd.evict())
        try:
            _netpoll.pollclose(pd)
        except OSError:
            pass  # the fd was closed (or reused) before it was unregistered
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~_EVENTS:
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        try:
            old = self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        key = old._replace(events=events, data=data)
        self._keys[fd] = key
        self._watch(fd, events, data)
        return key

    def select(self, timeout: Optional[float] = None) -> list[Any]:
        raise RuntimeError("netpoll.aio: readiness is delivered by the runtime, not select()")

    def close(self) -> None:
        for fd in list(self._keys):
            self.unregister(fd)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map


class EventLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """An asyncio event loop whose callbacks, timers and readiness run on
    netpoll's scheduler and poller; ``netpoll.go()`` works inside it."""

    def __init__(self, *, backend: Optional[str] = None) -> None:
        from netpoll import BACKEND

        try:
            name = BACKEND if backend is None else resolve(backend, "backend")
            self._core = _core.Core(_sched.Sched(backend_class(name)()), self)
        except BaseException:
            self._closed = True  # never opened: nothing for __del__ to warn about
            raise
        self._backend_name = name
        self._stream_pds: dict[int, Any] = {}
        try:
            super().__init__(_Registry(self._core, self._stream_pds))
        except BaseException:
            self._core.close()
            raise
        self._core.ready = self._ready
        # call_soon, call_at and call_later bound on the instance: Core's
        # twins read Core's mirrors of _debug and _closed where the class's
        # read the loop's attributes (a subclass that overrides one keeps it).
        for name in ("call_soon", "call_at", "call_later"):
            if getattr(type(self), name) is getattr(EventLoop, name):
                setattr(self, name, getattr(self._core, name))

    def set_debug(self, enabled: bool) -> None:
        # Also called by BaseEventLoop.__init__, after _core is made.
        super().set_debug(enabled)
        self._core.debug = bool(enabled)

    @property
    def backend(self) -> str:
        """The netpoll backend this loop polls with."""
        return self._backend_name

    @property
    def runtime(self) -> "_sched.Sched":
        """The netpoll runtime (scheduler) the loop runs on."""
        return self._core.sched

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} backend={self._backend_name} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()}>")

    def _make_socket_transport(self, sock: Any, protocol: Any, waiter: Any = None, *,
                               extra: Any = None, server: Any = None) -> asyncio.Transport:
        if not isinstance(sock, socket.socket) or sock.fileno() in self._selector._keys:
            # Not a socket, or one with add_reader/add_writer callbacks on
            # it: asyncio's transport, which shares those registrations.
            return super()._make_socket_transport(sock, protocol, waiter,
                                                  extra=extra, server=server)
        self._ensure_fd_no_transport(sock)
        return _transport.SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock: Any, protocol: Any, sslcontext: Any, waiter: Any = None,
                            *, server_side: bool = False, server_hostname: Optional[str] = None,
                            extra: Any = None, server: Any = None,
                            ssl_handshake_timeout: Optional[float] = None,
                            ssl_shutdown_timeout: Optional[float] = None) -> asyncio.Transport:
        # asyncio's own, with SSLProtocol over the compiled transport.
        from asyncio import sslproto

        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    # Names go to netpoll's resolver (its pool, shared lookups in flight;
    # none for a numeric host and port), as asyncio's create_connection,
    # create_server and sock_connect find them through these two methods.
    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
        infos = _resolve._gai_at_once(host, port, family, type, proto, flags)
        if infos is not None:
            return infos
        return await self._lookup(_resolve.default_resolver.getaddrinfo(
            host, port, family, type, proto, flags))

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        return await self._lookup(_resolve.default_resolver.getnameinfo(sockaddr, flags))

    def _lookup(self, coro: Any) -> "asyncio.Future[Any]":
        # The lookup is a goroutine; a task awaits its future. A future
        # cancelled meanwhile drops the answer (the shared lookup goes on for
        # the others), and a loop closed meanwhile closes the goroutine.
        fut = self.create_future()

        async def lookup() -> None:
            try:
                value = await coro
            except (GeneratorExit, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                if not fut.done():
                    fut.set_exception(e)
            else:
                if not fut.done():
                    fut.set_result(value)

        _sched.go(lookup())
        return fut

    def _run_once(self) -> None:
        # One run of the runtime, until stop(): run_forever calls this in its
        # loop and then sees _stopping.
        self._core.run()

    def _run_handle_debug(self, handle: asyncio.Handle) -> None:
        if handle._cancelled:
            return
        self._current_handle = handle
        try:
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                logger.warning("Executing %s took %.3f seconds", _format_handle(handle), dt)
        finally:
            self._current_handle = None

    # A goroutine (or a watcher) may queue work while the loop goroutine is
    # parked idle: wake it, or move its timer. The source traceback of a
    # handle in debug mode leaves this frame out, as asyncio's own do.
    call_soon = _core.call_soon

    def _call_soon_debug(self, callback: Any, args: tuple, context: Any) -> asyncio.Handle:
        handle = super().call_soon(callback, *args, context=context)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        self._core.wake()
        return handle

    call_at = _core.call_at
    call_later = _core.call_later
    create_task = _core.create_task
    time = _core.time
    get_debug = _core.get_debug

    def _call_at_debug(self, when: float, callback: Any, args: tuple,
                       context: Any) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        self._core.rearm(handle._when)
        return handle

    def stop(self) -> None:
        super().stop()
        self._core.wake()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        # Goroutines end first, while the loop is open: what their finally
        # blocks or the bridge's cancellation queue is dropped with the rest
        # of the ready queue, without "Event loop is closed" errors.
        try:
            self._core.close()
        finally:
            self._core.closed = True
            super().close()
