"""An HTTP/1.1 keep-alive "Hello, World!" server on netpoll.

One goroutine per connection reads into a reused buffer and feeds httptools'
parser; every complete request gets one response, pipelined requests are
answered in order with one write, and the connection closes after a request
that does not keep it alive, or with 400 after a malformed one.

    python examples/http_hello.py [--host 127.0.0.1] [--port 8080] [--backend NAME]
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

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.replies: list[bytes] = []
        self.closing = False  # the last reply ends the connection

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


async def serve_conn(conn: net.Conn) -> None:
    ex = Exchange()
    buf = bytearray(16384)
    view = memoryview(buf)
    # A reset or broken pipe ends this connection only (an exception escaping
    # a goroutine would end run(), the whole server).
    with conn, contextlib.suppress(OSError):
        while not ex.closing and (n := await conn.read(buf)):
            try:
                ex.parser.feed_data(view[:n])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                # After a closing request the parser also rejects whatever follows it.
                if not ex.closing:
                    ex.replies.append(BAD_REQUEST)
                    ex.closing = True
            if len(ex.replies) == 1:
                await conn.write(ex.replies[0])
            elif ex.replies:
                await conn.writev(ex.replies)
            ex.replies.clear()


async def serve(host: str, port: int) -> None:
    ln = net.listen("tcp", (host, port))
    try:
        backend = netpoll.current_runtime().backend.name
        print(f"serving http://{ln.addr} (backend {backend})", flush=True)
        while True:
            try:
                conn = await ln.accept()
            except net.OpError as e:
                if not e.temporary():  # EMFILE, a connection reset before accept: wait, go on
                    raise
                print(f"accept: {e}", file=sys.stderr, flush=True)
                await netpoll.sleep(0.05)
                continue
            netpoll.go(serve_conn(conn))
    finally:
        ln.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--backend", default=None, help="netpoll backend (default: NETPOLL_BACKEND or the best)")
    args = p.parse_args()
    # SIGTERM stops the server as Ctrl-C does: run() closes every goroutine,
    # whose `finally` and `with` blocks close the connections and the listener.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        netpoll.run(serve(args.host, args.port), backend=args.backend)
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
