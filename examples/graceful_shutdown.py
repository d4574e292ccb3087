"""A line-echo server that shuts down gracefully on SIGTERM or SIGINT.

Each connection is served by its own goroutine: every line the client sends
comes back prefixed with "echo: ". On the first SIGTERM (or Ctrl-C) the
server stops accepting (the listener closes, new clients are refused), lets
the connections in flight finish, and exits 0. A connection still open when
the drain deadline passes has its deadline set in the past, so its goroutine
wakes with a timeout and closes it; then the server exits 0 as well.

    python examples/graceful_shutdown.py [--host 127.0.0.1] [--port 0] [--drain 5]

It prints "listening on HOST:PORT", then one line per stage of the shutdown.
"""

from __future__ import annotations

import argparse
import signal
import sys

import netpoll
from netpoll import context, net
from netpoll import signal as npsignal


async def serve_conn(conn: net.Conn, active: set[net.Conn], wg: netpoll.WaitGroup) -> None:
    buf = bytearray(4096)
    pending = b""
    try:
        while True:
            n = await conn.read(buf)
            if n == 0:
                return
            pending += bytes(buf[:n])
            *lines, pending = pending.split(b"\n")
            for line in lines:
                await conn.write(b"echo: " + line + b"\n")
    except TimeoutError:
        pass  # the drain deadline: stop serving this client
    except OSError:
        pass  # the client went away
    finally:
        conn.close()
        active.discard(conn)
        wg.done()


async def main(host: str, port: int, drain: float) -> int:
    ctx, stop = npsignal.notify_context(context.background(), signal.SIGTERM, signal.SIGINT)
    ln = net.listen("tcp", f"{host}:{port}")
    # The first signal closes the listener: the accept loop ends.
    context.after_func(ctx, ln.close)
    print(f"listening on {ln.addr}", flush=True)

    active: set[net.Conn] = set()
    wg = netpoll.WaitGroup()
    while True:
        try:
            conn = await ln.accept()
        except netpoll.ClosedError:
            break
        except OSError as e:  # EMFILE and the like: keep accepting
            print(f"accept: {e}", file=sys.stderr, flush=True)
            await netpoll.sleep(0.1)
            continue
        active.add(conn)
        wg.add(1)
        netpoll.go(serve_conn(conn, active, wg))
    stop()  # a second signal now gets the default behaviour
    print(f"shutting down: draining {len(active)} connection(s)", flush=True)

    dctx, cancel = context.with_timeout(context.background(), drain)
    context.after_func(dctx, lambda: [c.set_deadline(0) for c in list(active)])
    await wg.wait()
    expired = dctx.err() is not None
    cancel()
    print("drain deadline passed: connections cut" if expired else "drained", flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--drain", type=float, default=5.0, help="seconds in-flight connections get")
    a = ap.parse_args()
    sys.exit(netpoll.run(main(a.host, a.port, a.drain)))
