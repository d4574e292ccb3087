"""python -m netpoll: what this machine offers, an echo server, the echo benchmark."""

from __future__ import annotations

import argparse
import json
import signal
import sys

import netpoll
from netpoll._table import backend_infos


def cmd_info(args: argparse.Namespace) -> int:
    print(f"netpoll {netpoll.__version__} (Python {sys.version.split()[0]}, {sys.platform})")
    print(f"backend: {netpoll.BACKEND}")
    print(f"{'name':8} {'available':9} {'edge':5} {'arm':5} {'max_fd':7} note")
    for name, info in backend_infos().items():
        cls = info.cls
        if cls is None:
            caps = f"{'-':5} {'-':5} {'-':7}"
        else:
            caps = f"{str(cls.edge_triggered).lower():5} {str(cls.needs_arm).lower():5} {str(cls.max_fd or '-'):7}"
        mark = "*" if name == netpoll.BACKEND else ""
        print(f"{name + mark:8} {'yes' if info.available else 'no':9} {caps} {info.reason or ''}")
    return 0


# -- echo ----------------------------------------------------------------------


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_echo(args: argparse.Namespace) -> int:
    from netpoll import net
    from netpoll._table import resolve

    try:
        backend = resolve(args.backend, "--backend") if args.backend else netpoll.BACKEND
    except netpoll.BackendError as e:
        print(f"python -m netpoll echo: {e}", file=sys.stderr)
        return 2

    ssl_ctx = None
    if args.tls is not None:
        from netpoll import tls
        from netpoll._tlscert import server_context

        if len(args.tls) > 2:
            print("python -m netpoll echo: --tls takes CERT [KEY], or nothing for a throwaway certificate",
                  file=sys.stderr)
            return 2
        try:
            ssl_ctx = server_context(*args.tls)
        except (OSError, RuntimeError) as e:
            print(f"python -m netpoll echo: --tls: {e}", file=sys.stderr)
            return 1

    async def handle(conn):
        buf = bytearray(65536)
        try:
            with conn:
                if ssl_ctx is not None:  # a client that stalls the handshake is dropped
                    conn.set_read_deadline(netpoll.now() + 10)
                    await conn.handshake()
                    conn.set_read_deadline(None)
                while n := await conn.read(buf):
                    await conn.write(buf, n)
        except OSError:
            pass  # a reset, a broken pipe: this connection only

    async def main():
        ln = net.listen("tcp", (args.host, args.port)) if ssl_ctx is None else \
            tls.listen("tcp", (args.host, args.port), ssl_ctx)
        try:
            over = " over TLS" if ssl_ctx is not None else ""
            print(f"netpoll echo server listening on {ln.addr} (backend {backend}){over}; Ctrl-C to stop",
                  flush=True)
            while True:
                try:
                    conn = await ln.accept()
                except netpoll.ClosedError:
                    raise
                except OSError as e:  # EMFILE and the like: say so, go on
                    print(f"accept: {e}", file=sys.stderr, flush=True)
                    await netpoll.sleep(0.05)
                    continue
                netpoll.go(handle(conn))
        finally:
            ln.close()

    # SIGTERM ends the server as Ctrl-C does: the runtime closes every
    # goroutine (their finally blocks close the connections and the listener).
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        netpoll.run(main(), backend=backend)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except OSError as e:
        print(f"python -m netpoll echo: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


# -- bench -----------------------------------------------------------------------

QUICK = {"conns": [64], "rounds": 1, "warmup": 0.5, "duration": 1.5}
FULL = {"conns": [1, 64, 512], "rounds": 3, "warmup": 1.0, "duration": 5.0}


def _conns(s: str) -> list[int]:
    try:
        out = [int(c) for c in s.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--conns wants a comma list of numbers, not {s!r}") from None
    if not out or any(c < 1 for c in out):
        raise argparse.ArgumentTypeError("--conns: every count must be >= 1")
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from netpoll.benchmark import build, runner

    if args.asyncio:
        from netpoll.benchmark import aio_bench

        return aio_bench.run_from_args(args)
    if args.instructions:
        return cmd_bench_instructions(args)
    if args.tls:
        from netpoll.benchmark import tls_bench

        return tls_bench.run_from_args(args)

    given_conns, given_rounds = args.conns, args.rounds
    preset = QUICK if args.quick else FULL
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    conns = args.conns
    if not sys.platform.startswith("linux"):
        print("python -m netpoll bench: the load generator and the CPU accounting (/proc) need Linux",
              file=sys.stderr)
        return 2
    try:
        build.loadgen()
    except build.BuildError as e:
        print(f"python -m netpoll bench: {e}", file=sys.stderr)
        return 2
    servers = runner.all_servers(args.netpoll_bufsize)
    out: dict = {}
    texts = []

    if args.syscalls or args.idle:
        if args.syscalls:
            sel = runner.select_servers(servers, args.servers or
                                        f"netpoll-{netpoll.BACKEND},go,uvloop-protocols,asyncio")
            res = runner.run_syscalls(sel, given_conns or [64], args.size,
                                      args.warmup, args.duration)
            out["syscalls"] = res
            texts.append(runner.syscalls_table(res, args.markdown))
        if args.idle:
            sel = runner.select_servers(servers, args.servers or
                                        "netpoll,uvloop-protocols,asyncio-streams,trio,gevent,go-1proc")
            res = runner.run_idle(sel, args.idle, args.active, args.size, args.warmup, args.duration,
                                  rounds=given_rounds or 1)
            out["idle"] = res
            texts.append(runner.idle_table(res, args.markdown))
    else:
        sel = runner.select_servers(servers, args.servers)
        if not [s for s in sel if s.skip is None]:
            print("python -m netpoll bench: none of the chosen servers can run here", file=sys.stderr)
        cfg = runner.EchoConfig(conns=conns, size=args.size, warmup=args.warmup, duration=args.duration,
                                rounds=args.rounds, pin=args.pin, prewarm=args.prewarm)
        res = runner.run_echo(sel, cfg)
        out = res
        texts.append(runner.echo_table(res, args.markdown))
        if args.quick:
            texts.append("(--quick: one short round, 64 connections; the full run is `python -m netpoll bench`)")
    print("\n\n".join(texts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def cmd_bench_instructions(args: argparse.Namespace) -> int:
    from netpoll.benchmark import build, instructions, runner

    given = args.conns or [instructions.DEFAULT_CONNS]
    try:
        counts = instructions.parse_messages(args.messages)
        if len(given) != 1:
            raise ValueError(f"one --conns count at a time, not {len(given)}")
        instructions.check()
        build.loadgen()
    except (ValueError, instructions.Unavailable, build.BuildError) as e:
        print(f"python -m netpoll bench --instructions: {e}", file=sys.stderr)
        return 2
    sel = runner.select_servers(instructions.servers(None, args.netpoll_bufsize), args.servers)
    try:
        res = instructions.run_instructions(sel, counts, given[0], args.size, keep=args.callgrind_dir,
                                            top=args.top)
    except instructions.Unavailable as e:
        print(f"python -m netpoll bench --instructions: {e}", file=sys.stderr)
        return 2
    print(instructions.instructions_table(res, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 1 if any("failed" in r for r in res["rows"]) else 0


# -- the parser --------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netpoll", description=__doc__)
    sub = p.add_subparsers(dest="cmd", metavar="{info,echo,bench}")
    sub.add_parser("info", help="version, chosen backend and every backend's availability (the default)",
                   description="Version, the backend chosen here, every backend with its availability, "
                               "the reason when unavailable and its capabilities.")

    e = sub.add_parser("echo", help="run a goroutine-per-connection echo server",
                       description="A goroutine-per-connection echo server on net.listen/accept/read/write. "
                                   "Prints the address it serves; Ctrl-C or SIGTERM stops it (exit 0).")
    e.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=7007, help="port (default 7007; 0 picks a free one)")
    e.add_argument("--backend", default=None, help="netpoll backend (default: NETPOLL_BACKEND or the best)")
    e.add_argument("--tls", nargs="*", metavar="CERT KEY", default=None,
                   help="serve TLS (netpoll.tls) with this certificate and key, or a throwaway "
                        "self-signed certificate for localhost when none is given")

    b = sub.add_parser(
        "bench", help="the echo benchmark against asyncio, uvloop, trio, gevent, selectors and Go",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Echo servers, each in its own process on 127.0.0.1, driven by one C load generator\n"
            "(single-threaded epoll, ping-pong of SIZE-byte messages on each connection). Per server:\n"
            "messages/s, p50/p99 round-trip latency, server CPU time per message (utime+stime of the\n"
            "server process over the measured window; user time in brackets), the load generator's own\n"
            "CPU, and ratios against uvloop protocols and asyncio streams measured in the same round.\n"
            "Servers alternate within each round; figures are medians over the rounds.\n\n"
            "servers: netpoll-<backend> for every backend, uvloop-protocols, uvloop-streams,\n"
            "asyncio-protocols, asyncio-buffered, asyncio-streams, trio, gevent, selectors,\n"
            "go-1proc, go (GOMAXPROCS=1 and the default; needs `go` on PATH). Missing ones are skipped.\n"
            "--servers takes names or prefixes: netpoll, uvloop, asyncio, go."),
        epilog=("defaults: --conns 1,64,512 --rounds 3 --warmup 1 --duration 5; "
                "--quick: --conns 64 --rounds 1 --warmup 0.5 --duration 1.5"))
    b.add_argument("--quick", action="store_true", help="one short round at 64 connections (well under a minute)")
    b.add_argument("--conns", type=_conns, default=None, help="connection counts, comma-separated (default 1,64,512)")
    b.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    b.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 5)")
    b.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1)")
    b.add_argument("--rounds", type=int, default=None, help="alternating rounds; medians over them (default 3)")
    b.add_argument("--servers", default=None, help="comma list of servers or prefixes (default: all)")
    b.add_argument("--json", metavar="FILE", default=None, help="write every run and the summary as JSON")
    b.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    b.add_argument("--pin", metavar="CPUS", default=None,
                   help='pin to CPUs: "0" puts server and load generator both on CPU 0, "0,1" the server on 0 '
                        "and the load generator on 1")
    b.add_argument("--prewarm", action="store_true",
                   help="load each server for 0.5 s on 64 connections, closed again, before measuring it "
                        "(a fresh asyncio process allocates a 256 KiB buffer per recv with mmap/mremap/munmap "
                        "until something frees a large block; this shows the other state)")
    b.add_argument("--syscalls", action="store_true",
                   help="instead: system calls per echoed message (perf stat on syscall tracepoints, else "
                        "strace -c -f), at 64 connections unless --conns says otherwise")
    b.add_argument("--idle", type=int, nargs="?", const=10000, default=0, metavar="N",
                   help="instead: RSS per idle connection with N (default 10,000) idle connections, and the "
                        "throughput of --active connections with 0 and with N idle ones, per server")
    b.add_argument("--instructions", action="store_true",
                   help="instead: user-space instructions per echoed message under valgrind's callgrind "
                        "(two runs of exact message counts, their difference; 16 connections unless --conns "
                        "says otherwise), and the ratio to uvloop protocols. Servers: netpoll-echo "
                        "(python -m netpoll echo), netpoll (the benchmark's server), uvloop-protocols, "
                        "uvloop-streams, asyncio-protocols, asyncio-buffered, asyncio-streams, selectors, "
                        "trio, gevent. User space only: the kernel's share shows in --syscalls and the "
                        "wall-clock runs")
    b.add_argument("--messages", default="2000,10000", metavar="A,B",
                   help="--instructions: the two runs' message counts (default 2000,10000)")
    b.add_argument("--top", type=int, default=0, metavar="K",
                   help="--instructions: also the K functions with the most self instructions per message "
                        "(callgrind_annotate, the same two-run difference)")
    b.add_argument("--callgrind-dir", default=None, metavar="DIR",
                   help="--instructions: keep the callgrind output files in DIR")
    b.add_argument("--active", type=int, default=64, help="active connections for --idle (default 64)")
    b.add_argument("--tls", action="store_true",
                   help="instead: the TLS benchmark (netpoll.tls vs asyncio+ssl, uvloop+ssl, Go crypto/tls): "
                        "echo at 64 B and 16 KiB, handshakes/s, RSS per idle TLS conn; needs go "
                        "(netpoll/benchmark/tls_bench.py)")
    b.add_argument("--asyncio", action="store_true",
                   help="instead: asyncio on netpoll.aio, the stdlib loop and uvloop: protocols and streams "
                        "echo, uvicorn under wrk; with --instructions, uvicorn's instructions per request "
                        "(netpoll/benchmark/aio_bench.py)")
    from netpoll.benchmark import aio_bench

    aio_bench.add_arguments(b)
    b.add_argument("--netpoll-bufsize", type=int, default=65536,
                   help="the netpoll servers' per-connection read buffer (default 65536)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "echo":
        return cmd_echo(args)
    if args.cmd == "bench":
        return cmd_bench(args)
    return cmd_info(args)


def console() -> None:
    """The `netpoll` console script, and `python -m netpoll`."""
    try:
        sys.exit(main())
    except BrokenPipeError:  # `netpoll | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    console()
