"""asyncio on netpoll against the stdlib loop and uvloop: the same programs on each.

    netpoll bench --asyncio [--conns 1,64] [--rounds 3] [--duration 5] [--quick] [--no-wrk]
                            [--backends epoll,poll]
    netpoll bench --asyncio --instructions [--messages 2000,10000] [--requests 1000,3000]
                                           [--backends epoll]

(or ``python -m netpoll.benchmark.aio_bench`` with the same options)

1. Echo (netpoll's C load generator and CPU accounting, netpoll.benchmark):
   an asyncio streams server (reader.read / writer.write / drain) and a
   protocols server (data_received -> transport.write), each on the
   netpoll.aio loop (one row per backend asked for), the stdlib loop and
   uvloop; ratios against uvloop protocols and asyncio streams.
2. uvicorn's hello world (an ASGI app answering "Hello, world!") under wrk,
   on each loop, if wrk is on PATH.
3. ``--instructions``: instead, user-space instructions under callgrind on
   each loop: per echoed message (protocols and streams; netpoll bench
   --instructions' method and table) and per uvicorn request (valgrind's
   counts do not depend on the machine's load, where req/s here swing by a
   fifth).

Figures, not tests: the run prints them and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

BUFSIZE = 65536
LOOPS = ("netpoll", "asyncio", "uvloop")


# -- the servers (run as: python -m netpoll.benchmark.aio_bench serve KIND LOOP [BACKEND]) --


def _factory(loop: str, backend: str | None):
    import asyncio

    if loop == "netpoll":
        from netpoll import aio

        return lambda: aio.new_event_loop(backend=backend)
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def serve(kind: str, loop: str, backend: str | None) -> None:
    import asyncio
    import signal

    def ready(addr: str) -> None:
        print(f"READY {addr} {loop}{'-' + backend if backend else ''}", flush=True)

    async def echo_streams(reader, writer):
        try:
            while data := await reader.read(BUFSIZE):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def hello(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
        await send({"type": "http.response.body", "body": b"Hello, world!"})

    async def main():
        loop_ = asyncio.get_running_loop()
        if kind == "uvicorn":
            import socket

            import uvicorn

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            # host/port, as uvicorn's command line runs it (its sockets= path
            # answers some 20 times slower on every loop here).
            server = uvicorn.Server(uvicorn.Config(hello, host="127.0.0.1", port=port,
                                                   log_config=None, access_log=False,
                                                   lifespan="off"))
            task = asyncio.ensure_future(server.serve())
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            ready(f"127.0.0.1:{port}")
            # uvicorn installs its own SIGTERM handler and stops itself.
            await task
            return
        if kind == "streams":
            srv = await asyncio.start_server(echo_streams, "127.0.0.1", 0, backlog=4096)
        else:
            srv = await loop_.create_server(EchoProtocol, "127.0.0.1", 0, backlog=4096)
        stop = loop_.create_future()
        loop_.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        ready("127.0.0.1:%d" % srv.sockets[0].getsockname()[1])
        await stop
        srv.close()

    with asyncio.Runner(loop_factory=_factory(loop, backend)) as r:
        r.run(main())


# -- the runs ------------------------------------------------------------------------------


def _servers(kind: str, backends: list[str]):
    from netpoll.benchmark import runner

    def argv(loop: str, backend: str | None):
        return lambda: ([sys.executable, "-P", "-m", "netpoll.benchmark.aio_bench", "serve", kind, loop]
                        + ([backend] if backend else []))

    # Names: the echo table's ratio columns look for "uvloop-protocols" and
    # "asyncio-streams".
    out = [runner.Server(f"netpoll.aio-{b}-{kind}", f"netpoll.aio {kind}", argv("netpoll", b))
           for b in backends]
    uv = None if runner._has("uvloop") else "uvloop is not installed (pip install uvloop)"
    out.append(runner.Server(f"uvloop-{kind}", f"uvloop {kind}", argv("uvloop", None), skip=uv))
    out.append(runner.Server(f"asyncio-{kind}", f"asyncio {kind}", argv("asyncio", None)))
    return out


def wrk_hello(backends: list[str], duration: float, conns: int, rounds: int) -> str:
    from netpoll.benchmark import runner

    wrk = shutil.which("wrk")
    if wrk is None:
        return "uvicorn hello: wrk is not on PATH (Debian: apt-get install wrk); not run"
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return "uvicorn hello: uvicorn is not installed (pip install uvicorn); not run"
    servers = _servers("uvicorn", backends)
    secs = max(1, round(duration))  # wrk takes whole seconds
    results: dict[str, list[float]] = {}
    for rnd in range(rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]
        for s in order:
            if s.skip:
                continue
            with runner.Running(s) as srv:
                url = f"http://{srv.addr}/"
                subprocess.run([wrk, "-t1", "-c8", "-d1s", url], capture_output=True, timeout=30)
                out = subprocess.run([wrk, "-t1", f"-c{conns}", f"-d{secs}s", url],
                                     capture_output=True, text=True, timeout=duration + 30).stdout
            m = re.search(r"Requests/sec:\s*([\d.]+)", out)
            non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
            if m and not non2xx:
                results.setdefault(s.name, []).append(float(m.group(1)))
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    uv, std = med.get("uvloop-uvicorn"), med.get("asyncio-uvicorn")
    rows = []
    for s in servers:
        if s.name not in med:
            rows.append([s.label.replace(" uvicorn", ""), s.name, "skipped" if s.skip else "failed", "", ""])
            continue
        r = med[s.name]
        rows.append([s.label.replace(" uvicorn", ""), s.name.split("-")[1] if s.name.startswith("netpoll") else "",
                     f"{r:,.0f}", f"{r / uv:.2f}" if uv else "-", f"{r / std:.2f}" if std else "-"])
    head = (f"uvicorn hello world under wrk -t1 -c{conns} -d{secs}s, median of {rounds} "
            f"alternating round(s)")
    return head + "\n\n" + runner.render(["loop", "backend", "req/s", "× uvloop", "× asyncio"], rows,
                                         markdown=True, right={2, 3, 4})


def _requests(host: str, port: int, total: int, conns: int) -> int:
    # Exactly `total` keep-alive GETs over `conns` connections, one in flight
    # on each; the answers that came back whole.
    import socket
    import threading

    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    done = [0] * conns

    def one(i: int, n: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=120) as s:
                buf = b""
                for _ in range(n):
                    s.sendall(req)
                    while b"Hello, world!" not in buf:
                        chunk = s.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    buf = buf[buf.index(b"Hello, world!") + 13:]
                    done[i] += 1
        except OSError:
            pass  # a connection the server dropped: its answers so far count

    threads = [threading.Thread(target=one, args=(i, total // conns + (i < total % conns)))
               for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def uvicorn_instructions(backends: list[str], counts: tuple[int, int], conns: int) -> str:
    """User-space instructions per uvicorn request (callgrind), each loop:
    the server counted from its first request to its exit, at two request
    counts; the difference over the difference of the counts (so start-up
    and shut-down cancel, as in netpoll bench --instructions)."""
    import tempfile

    from netpoll.benchmark import instructions, runner

    try:
        instructions.check()
        import uvicorn  # noqa: F401
    except (instructions.Unavailable, ImportError) as e:
        return f"uvicorn instructions: not run ({e})"
    rows = []
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="netpoll-aio-callgrind-") as outdir:
        for s in _servers("uvicorn", backends):
            if s.skip:
                rows.append([s.label, s.skip, "", ""])
                continue
            irs = []
            for n in counts:
                out = os.path.join(outdir, f"callgrind.{s.name}.{n}")
                vg = [instructions.valgrind(), "-q", "--tool=callgrind", "--instr-atstart=no",
                      f"--callgrind-out-file={out}"]
                wrapped = runner.Server(s.name, s.label, lambda s=s, vg=vg: vg + s.argv(),
                                        env={**s.env, "PYTHONHASHSEED": "0"})
                srv = runner.Running(wrapped, timeout=instructions.READY_TIMEOUT)
                try:
                    _requests(srv.host, srv.port, conns, conns)  # connections and first answers
                    subprocess.run([instructions._tool("callgrind_control"), "--instr=on", str(srv.pid)],
                                   capture_output=True, timeout=60, check=True)
                    got = _requests(srv.host, srv.port, n, conns)
                    if got != n:
                        raise RuntimeError(f"{s.name}: {got} of {n} requests answered")
                    # uvicorn re-raises SIGTERM after its shutdown: the exit
                    # status is the signal's, and callgrind still writes out.
                    instructions.stop_under_valgrind(srv.proc, s.name)
                finally:
                    srv.stop()
                irs.append(instructions.totals(out))
            per[s.name] = (irs[1] - irs[0]) / (counts[1] - counts[0])
    uv = per.get("uvloop-uvicorn")
    for s in _servers("uvicorn", backends):
        if s.name in per:
            rows.append([s.label, s.name.split("-")[1] if s.name.startswith("netpoll") else "",
                         f"{per[s.name]:,.0f}", f"{per[s.name] / uv:.2f}" if uv else "-"])
    head = (f"uvicorn hello world: user-space instructions per request (callgrind), "
            f"{counts[0]} and {counts[1]} requests over {conns} keep-alive connections")
    return head + "\n\n" + runner.render(["loop", "backend", "instructions/request", "× uvloop"], rows,
                                           markdown=True, right={2, 3})


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of its own, which ``netpoll bench`` also takes."""
    p.add_argument("--backends", default=None,
                   help="--asyncio: netpoll backends for the netpoll.aio rows (comma list; "
                        "default the one netpoll chooses)")
    p.add_argument("--no-wrk", action="store_true", help="--asyncio: leave out uvicorn under wrk")
    p.add_argument("--requests", default="1000,3000", metavar="A,B",
                   help="--asyncio --instructions: the two request counts (default 1000,3000)")


def run_from_args(a: argparse.Namespace) -> int:
    # Also called by `netpoll bench --asyncio` with the echo benchmark's
    # arguments: --conns is a list there, and unset figures are None.
    import netpoll
    from netpoll.benchmark import build, instructions, runner

    backends = [b for b in (a.backends or netpoll.BACKEND).split(",") if b]
    if a.instructions:
        try:
            lo, hi = (int(x) for x in a.requests.split(","))
        except ValueError:
            lo = hi = 0
        if not 0 < lo < hi:
            print(f"netpoll bench --asyncio: --requests wants two counts 0 < A < B, not {a.requests!r}",
                  file=sys.stderr)
            return 2
        try:
            messages = instructions.parse_messages(a.messages)
            instructions.check()
            build.loadgen()
        except (ValueError, instructions.Unavailable, build.BuildError) as e:
            print(f"netpoll bench --asyncio --instructions: {e}", file=sys.stderr)
            return 2
        servers = _servers("protocols", backends) + _servers("streams", backends)
        echo = instructions.run_instructions(servers, messages,
                                             a.conns[0] if a.conns else instructions.DEFAULT_CONNS, 64)
        print("## echo\n\n" + instructions.instructions_table(echo, markdown=True))
        print("\n## uvicorn\n\n" + uvicorn_instructions(backends, (lo, hi), 8))
        return 1 if any("failed" in r for r in echo["rows"]) else 0
    quick = a.quick
    conns = a.conns or ([64] if quick else [1, 64])
    rounds = a.rounds or (1 if quick else 3)
    duration = a.duration if a.duration is not None else (1.5 if quick else 5.0)
    warmup = a.warmup if a.warmup is not None else (0.5 if quick else 1.0)
    try:
        build.loadgen()
    except build.BuildError as e:
        print(f"netpoll bench --asyncio: {e}", file=sys.stderr)
        return 1
    cfg = runner.EchoConfig(conns=conns, size=64, warmup=warmup, duration=duration, rounds=rounds)
    t0 = time.monotonic()
    texts = []
    for kind in ("protocols", "streams"):
        servers = _servers(kind, backends)
        if kind == "streams":
            # the ratio columns need uvloop protocols in the same rounds
            servers += [s for s in _servers("protocols", []) if s.name == "uvloop-protocols"]
        else:
            servers += [s for s in _servers("streams", []) if s.name == "asyncio-streams"]
        texts.append(f"## {kind}\n\n" + runner.echo_table(runner.run_echo(servers, cfg), markdown=True))
    if not a.no_wrk:
        texts.append("## uvicorn\n\n" + wrk_hello(backends, duration, 64, rounds))
    print("\n\n".join(texts))
    print(f"\n({time.monotonic() - t0:.0f} s)")
    return 0


def _conns(text: str) -> list[int]:
    try:
        out = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--conns wants counts like 1,64, not {text!r}") from None
    if any(c < 1 for c in out):
        raise argparse.ArgumentTypeError("--conns: every count must be >= 1")
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve(argv[1], argv[2], argv[3] if len(argv) > 3 else None)
        return 0
    p = argparse.ArgumentParser(prog="python -m netpoll.benchmark.aio_bench",
                                description=__doc__.splitlines()[0])
    p.add_argument("--conns", type=_conns, default=None, help="connection counts, comma list (default 1,64)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1)")
    p.add_argument("--quick", action="store_true", help="one round of 1.5 s on 64 connections")
    p.add_argument("--instructions", action="store_true",
                   help="instead: instructions per echoed message and per uvicorn request under "
                        "callgrind, on each loop")
    p.add_argument("--messages", default="2000,10000", metavar="A,B",
                   help="--instructions: the two echo message counts (default 2000,10000)")
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
