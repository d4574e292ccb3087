"""The HTTP/1.1 "Hello, World!" server of http_hello.py, over TLS.

The same per-connection code (http_hello.serve_conn) runs on a
netpoll.tls.TLSConn instead of a net.Conn: a TLSConn reads, writes and
closes like one. ALPN offers http/1.1. Without --cert it makes a throwaway
self-signed certificate for localhost.

    python examples/https_hello.py [--cert CERT --key KEY] [--host 127.0.0.1] [--port 8443] [--backend NAME]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import netpoll  # noqa: E402
from netpoll import net, tls  # noqa: E402
from netpoll._tlscert import server_context  # noqa: E402

from http_hello import _interrupt, serve_conn  # noqa: E402


async def serve(host: str, port: int, ctx) -> None:
    ln = tls.listen("tcp", (host, port), ctx)
    try:
        backend = netpoll.current_runtime().backend.name
        print(f"serving https://{ln.addr} (backend {backend})", flush=True)
        while True:
            try:
                conn = await ln.accept()
            except net.OpError as e:
                if not e.temporary():
                    raise
                print(f"accept: {e}", file=sys.stderr, flush=True)
                await netpoll.sleep(0.05)
                continue
            # The handshake runs at the first read, bounded by this deadline;
            # a client that never finishes it is dropped.
            conn.set_read_deadline(netpoll.now() + 10)
            netpoll.go(handshake_then_serve(conn))
    finally:
        ln.close()


async def handshake_then_serve(conn: tls.TLSConn) -> None:
    try:
        await conn.handshake()
    except OSError as e:   # a bad client: this connection only (handshake() closed it)
        print(f"handshake with {conn.remote_addr}: {e}", file=sys.stderr, flush=True)
        return
    conn.set_read_deadline(None)
    await serve_conn(conn)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cert", help="certificate chain (PEM); default: a throwaway self-signed one")
    p.add_argument("--key", help="private key (PEM), if not in --cert")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks a free one)")
    p.add_argument("--backend", default=None, help="netpoll backend (default: NETPOLL_BACKEND or the best)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        ctx = server_context(args.cert, args.key, alpn=["http/1.1"])
        netpoll.run(serve(args.host, args.port, ctx), backend=args.backend)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except netpoll.BackendError as e:
        print(f"https_hello: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:
        print(f"https_hello: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
