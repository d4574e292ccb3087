"""The benchmark's echo servers, one per process.

    python -m netpoll.benchmark.servers NAME [--host H] [--port P] [--backend B]

Each binds, prints ``READY host:port <what polls>`` on stdout, echoes until
SIGTERM or SIGINT, and exits 0. Every server is what a user of that library
would write: netpoll a goroutine per connection, in two programs: ``netpoll``
parks in ``wait_readable`` holding no buffer and takes one from a pool to
read, ``netpoll-echo`` is ``python -m netpoll echo`` (a buffer of its own
per connection, read, write);
asyncio and uvloop streams (``reader.read``/``writer.write``/``drain``) and
protocols (``data_received`` -> ``transport.write``); asyncio's
BufferedProtocol (``recv_into`` a reused buffer); trio's ``serve_tcp``;
gevent's ``StreamServer``; a selectors loop written by hand.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

BACKLOG = 4096
BUFSIZE = 65536


def _ready(addr: str, what: str) -> None:
    sys.stdout.write(f"READY {addr} {what}\n")
    sys.stdout.flush()


def _raise_nofile() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _stop_on_signals() -> None:
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


# -- netpoll -------------------------------------------------------------------


def serve_netpoll(host: str, port: int, backend: str | None, bufsize: int = BUFSIZE) -> None:
    from collections import deque

    import netpoll
    from netpoll import net

    # Buffers come from a pool only while a connection has data: an idle
    # connection holds none (conn.wait_readable parks without one). A deque,
    # not a list: the pool is near empty under load, and a list reallocates
    # its array on nearly every pop and append at that size. Plain
    # bytearrays: write(buf, n) needs no memoryview to slice, and a
    # bytearray's buffer is cheaper to take than a memoryview's.
    pool: deque = deque()
    get, put = pool.pop, pool.append

    async def handle(conn):
        read, write, wait = conn.read, conn.write, conn.wait_readable
        try:
            while True:
                await wait()
                buf = get() if pool else bytearray(bufsize)
                try:
                    n = await read(buf)
                    if not n:
                        break
                    await write(buf, n)
                finally:
                    put(buf)
        except OSError:
            pass
        finally:
            conn.close()

    async def main():
        ln = net.listen("tcp", f"{host}:{port}", backlog=BACKLOG)
        try:
            _ready(str(ln.addr), f"{backend or netpoll.BACKEND} (netpoll)")
            while True:
                try:
                    conn = await ln.accept()
                except OSError as e:
                    if isinstance(e, netpoll.ClosedError):
                        raise
                    await netpoll.sleep(0.01)  # EMFILE, or a backend's fd limit
                    continue
                netpoll.go(handle(conn))
        finally:
            ln.close()

    netpoll.run(main(), backend=backend)


def serve_netpoll_echo(host: str, port: int, backend: str | None, bufsize: int = BUFSIZE) -> None:
    # The handler of `python -m netpoll echo`, line for line.
    import netpoll
    from netpoll import net

    async def handle(conn):
        buf = bytearray(bufsize)
        try:
            with conn:
                while n := await conn.read(buf):
                    await conn.write(buf, n)
        except OSError:
            pass

    async def main():
        ln = net.listen("tcp", f"{host}:{port}", backlog=BACKLOG)
        try:
            _ready(str(ln.addr), f"{backend or netpoll.BACKEND} (netpoll)")
            while True:
                try:
                    conn = await ln.accept()
                except OSError as e:
                    if isinstance(e, netpoll.ClosedError):
                        raise
                    await netpoll.sleep(0.01)
                    continue
                netpoll.go(handle(conn))
        finally:
            ln.close()

    netpoll.run(main(), backend=backend)


# -- asyncio and uvloop ------------------------------------------------------


def _loop_factory(loop: str):
    import asyncio

    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _what(loop: str) -> str:
    if loop == "uvloop":
        return "epoll (libuv)"
    import selectors

    return f"{selectors.DefaultSelector.__name__.replace('Selector', '').lower()} (selectors)"


def _serve_asyncio(loop: str, start) -> None:
    # Run an asyncio server on the named loop: start() makes it; report the
    # address, then serve until killed.
    import asyncio

    async def main():
        srv = await start()
        h, p = srv.sockets[0].getsockname()[:2]
        # SIGTERM through the loop: a KeyboardInterrupt raised by a plain
        # handler lands in whichever callback runs (eof_received, say), and
        # the loop reports it there and goes on serving.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
        _ready(f"{h}:{p}", _what(loop))
        try:
            await srv.serve_forever()
        except asyncio.CancelledError:
            pass

    with asyncio.Runner(loop_factory=_loop_factory(loop)) as r:
        r.run(main())


def serve_streams(host: str, port: int, loop: str) -> None:
    import asyncio

    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(BUFSIZE)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    _serve_asyncio(loop, lambda: asyncio.start_server(handle, host, port, backlog=BACKLOG))


def serve_protocols(host: str, port: int, loop: str) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    _serve_asyncio(loop, lambda: asyncio.get_running_loop().create_server(Echo, host, port, backlog=BACKLOG))


def serve_buffered(host: str, port: int, loop: str) -> None:
    # BufferedProtocol: the loop recv_into()s one reused buffer instead of
    # allocating a 256 KiB bytes object per recv.
    import asyncio

    shared = bytearray(BUFSIZE)
    view = memoryview(shared)

    class Echo(asyncio.BufferedProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return view

        def buffer_updated(self, nbytes):
            # write() may keep what it could not send: hand it its own copy.
            self.transport.write(bytes(view[:nbytes]))

    _serve_asyncio(loop, lambda: asyncio.get_running_loop().create_server(Echo, host, port, backlog=BACKLOG))


# -- trio, gevent ------------------------------------------------------------


def serve_trio(host: str, port: int) -> None:
    import trio

    async def handle(stream):
        try:
            while True:
                data = await stream.receive_some(BUFSIZE)
                if not data:
                    break
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def main():
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(lambda task_status: trio.serve_tcp(
                handle, port, host=host, backlog=BACKLOG, task_status=task_status))
            h, p = listeners[0].socket.getsockname()[:2]
            # SIGTERM through trio, as asyncio's loop does it: a KeyboardInterrupt
            # raised by a plain handler can land in trio's own machinery.
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                _ready(f"{h}:{p}", "epoll (trio)")
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


def serve_gevent(host: str, port: int) -> None:
    from gevent.server import StreamServer

    def handle(sock, addr):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                data = sock.recv(BUFSIZE)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        finally:
            sock.close()

    srv = StreamServer((host, port), handle, backlog=BACKLOG)
    srv.init_socket()
    h, p = srv.socket.getsockname()[:2]
    import gevent

    loop = gevent.get_hub().loop
    _ready(f"{h}:{p}", f"{getattr(loop, 'backend', '?')} (gevent {type(loop).__module__.split('.')[1]})")
    srv.serve_forever()


# -- selectors, by hand ------------------------------------------------------


def serve_selectors(host: str, port: int) -> None:
    import selectors

    sel = selectors.DefaultSelector()
    ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(BACKLOG)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    buf = bytearray(BUFSIZE)
    mv = memoryview(buf)
    pending: dict[socket.socket, bytes] = {}
    R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
    h, p = ls.getsockname()[:2]
    _ready(f"{h}:{p}", f"{type(sel).__name__.replace('Selector', '').lower()} (selectors)")

    def drop(s):
        sel.unregister(s)
        pending.pop(s, None)
        s.close()

    try:
        while True:
            for key, ev in sel.select():
                s = key.fileobj
                if key.data is None:
                    while True:
                        try:
                            c, _ = ls.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:  # EMFILE, a reset before accept
                            break
                        c.setblocking(False)
                        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sel.register(c, R, 1)
                    continue
                if ev & W:
                    data = pending[s]
                    try:
                        m = s.send(data)
                    except BlockingIOError:
                        continue
                    except OSError:
                        drop(s)
                        continue
                    if m < len(data):
                        pending[s] = data[m:]
                    else:
                        del pending[s]
                        sel.modify(s, R, 1)
                    continue
                try:
                    n = s.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    drop(s)
                    continue
                try:
                    m = s.send(mv[:n])
                except BlockingIOError:
                    m = 0
                except OSError:
                    drop(s)
                    continue
                if m < n:
                    # Stop reading until the rest is out (the peer's flow control).
                    pending[s] = bytes(mv[m:n])
                    sel.modify(s, W, 1)
    finally:
        ls.close()


SERVE = {
    "netpoll": lambda a: serve_netpoll(a.host, a.port, a.backend, a.bufsize),
    "netpoll-echo": lambda a: serve_netpoll_echo(a.host, a.port, a.backend, a.bufsize),
    "asyncio-streams": lambda a: serve_streams(a.host, a.port, "asyncio"),
    "asyncio-protocols": lambda a: serve_protocols(a.host, a.port, "asyncio"),
    "asyncio-buffered": lambda a: serve_buffered(a.host, a.port, "asyncio"),
    "uvloop-streams": lambda a: serve_streams(a.host, a.port, "uvloop"),
    "uvloop-protocols": lambda a: serve_protocols(a.host, a.port, "uvloop"),
    "trio": lambda a: serve_trio(a.host, a.port),
    "gevent": lambda a: serve_gevent(a.host, a.port),
    "selectors": lambda a: serve_selectors(a.host, a.port),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netpoll.benchmark.servers", description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(SERVE))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--backend", default=None, help="netpoll's backend (netpoll only)")
    p.add_argument("--bufsize", type=int, default=BUFSIZE, help="netpoll's per-connection read buffer")
    a = p.parse_args(argv)
    _raise_nofile()
    _stop_on_signals()
    try:
        SERVE[a.name](a)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
