"""The same "Hello, World!" server as http_hello.py, as a raw ASGI app run by
uvicorn on uvloop with its httptools parser: the baseline for bench/http_bench.py.

    python examples/http_hello_uvicorn.py [--host 127.0.0.1] [--port 8080]
"""

from __future__ import annotations

import argparse
import socket
from typing import Any, Awaitable, Callable

import uvicorn

BODY = b"Hello, World!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
END = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict]],
              send: Callable[[dict], Awaitable[None]]) -> None:
    if scope["type"] != "http":  # a websocket: refused (lifespan is off)
        return
    await send(START)
    await send(END)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    args = p.parse_args()
    # Bind here so that --port 0 can print the port it got.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    print(f"serving http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}", flush=True)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off", access_log=False,
                            server_header=False, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])  # stops on SIGINT or SIGTERM


if __name__ == "__main__":
    main()
