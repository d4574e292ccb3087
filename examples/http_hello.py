"""An HTTP/1.1 keep-alive "Hello, World!" server on netpoll.

One goroutine per connection reads into a reused buffer and feeds httptools'
parser; every complete request gets one response, pipelined requests are
answered in order with one write, and the connection closes after a request
that does not keep it alive, or with 400 after a malformed one.

As Go's http.Server: a request's header must arrive within
--read-header-timeout seconds of its first byte (ReadHeaderTimeout), and a
keep-alive connection may wait at most --idle-timeout seconds for its next
request (IdleTimeout); then the connection is closed. Ctrl-C or SIGTERM
stops the server, even when the signal lands inside a parser callback.

    python examples/http_hello.py [--host 127.0.0.1] [--port 8080] [--backend NAME]
                                  [--read-header-timeout 10] [--idle-timeout 60]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
import time
from email.utils import formatdate

import httptools

import netpoll
from netpoll import net

BODY = b"Hello, World!"
READ_HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request")


@functools.lru_cache(maxsize=16)
def response(second: int, connection: bytes, head: bool) -> bytes:
    """The reply, built once per second and variant (Date changes each second)."""
    date = formatdate(second, usegmt=True).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Date: %s\r\n%s\r\n%s" % (len(BODY), date, connection, b"" if head else BODY))


class Exchange:
    """httptools' callbacks for one connection: a reply per complete request."""

    def __init__(self, conn: net.Conn, read_header_timeout: float, idle_timeout: float) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.replies: list[bytes] = []
        self.closing = False  # the last reply ends the connection
        self.conn = conn
        self.read_header_timeout = read_header_timeout
        self.idle_timeout = idle_timeout
        # The first request's header is due as if it had begun now.
        conn.set_read_deadline(netpoll.now() + read_header_timeout)

    def on_message_begin(self) -> None:
        # The header is due this long after its first byte, however slowly
        # the rest trickles in (slowloris).
        self.conn.set_read_deadline(netpoll.now() + self.read_header_timeout)

    def on_headers_complete(self) -> None:
        self.conn.set_read_deadline(None)

    def on_message_complete(self) -> None:
        p = self.parser
        # No protocol switch here: a request asking for one is answered, then the connection closes.
        keep_alive = p.should_keep_alive() and not p.should_upgrade()
        if not keep_alive:
            connection = b"Connection: close\r\n"
        elif p.get_http_version() == "1.0":  # a 1.0 client closes unless told otherwise
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        self.replies.append(response(int(time.time()), connection, p.get_method() == b"HEAD"))
        self.closing = not keep_alive
        # Waiting for the next request (a pipelined one may already be in).
        self.conn.set_read_deadline(netpoll.now() + self.idle_timeout)


def _callback_error(e: httptools.HttpParserCallbackError) -> BaseException:
    # httptools turns whatever a callback raised into HttpParserCallbackError,
    # keeping the original as the context: a KeyboardInterrupt (a signal that
    # landed in the callback) or SystemExit must stop the server.
    inner = e.__cause__ or e.__context__
    return inner if isinstance(inner, (KeyboardInterrupt, SystemExit)) else e


async def serve_conn(conn: net.Conn, read_header_timeout: float = READ_HEADER_TIMEOUT,
                     idle_timeout: float = IDLE_TIMEOUT) -> None:
    ex = Exchange(conn, read_header_timeout, idle_timeout)
    buf = bytearray(16384)
    view = memoryview(buf)
    # A reset, a broken pipe or a header/idle timeout ends this connection
    # only (an exception escaping a goroutine would end run(), the whole server).
    with conn, contextlib.suppress(OSError):
        while not ex.closing and (n := await conn.read(buf)):
            try:
                ex.parser.feed_data(view[:n])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
                if isinstance(e, httptools.HttpParserCallbackError):
                    stop = _callback_error(e)
                    if stop is not e:
                        raise stop from None
                # After a closing request the parser also rejects whatever follows it.
                if not ex.closing:
                    ex.replies.append(BAD_REQUEST)
                    ex.closing = True
            if len(ex.replies) == 1:
                await conn.write(ex.replies[0])
            elif ex.replies:
                await conn.writev(ex.replies)
            ex.replies.clear()


async def serve(host: str, port: int, read_header_timeout: float = READ_HEADER_TIMEOUT,
                idle_timeout: float = IDLE_TIMEOUT) -> None:
    ln = net.listen("tcp", (host, port))
    try:
        backend = netpoll.current_runtime().backend.name
        print(f"serving http://{ln.addr} (backend {backend})", flush=True)
        while True:
            try:
                conn = await ln.accept()
            except net.OpError as e:
                # EMFILE, a backend's descriptor limit (select's FD_SETSIZE),
                # a connection reset before accept: that connection is
                # dropped; wait, go on.
                if not e.temporary():
                    raise
                print(f"accept: {e}", file=sys.stderr, flush=True)
                await netpoll.sleep(0.05)
                continue
            netpoll.go(serve_conn(conn, read_header_timeout, idle_timeout))
    finally:
        ln.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--backend", default=None, help="netpoll backend (default: NETPOLL_BACKEND or the best)")
    p.add_argument("--read-header-timeout", type=float, default=READ_HEADER_TIMEOUT, metavar="SECONDS",
                   help=f"a request header must arrive within this (default {READ_HEADER_TIMEOUT:g})")
    p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT, metavar="SECONDS",
                   help=f"a keep-alive connection may idle this long (default {IDLE_TIMEOUT:g})")
    args = p.parse_args()
    for name in ("read_header_timeout", "idle_timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    # SIGTERM stops the server as Ctrl-C does: run() closes every goroutine,
    # whose `finally` and `with` blocks close the connections and the listener.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        netpoll.run(serve(args.host, args.port, args.read_header_timeout, args.idle_timeout),
                    backend=args.backend)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except netpoll.BackendError as e:
        print(f"http_hello: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"http_hello: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
