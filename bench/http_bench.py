"""HTTP/1.1 keep-alive "Hello, World!": netpoll against uvicorn+uvloop and Go's net/http, under wrk.

    python3 bench/http_bench.py [--conns 64[,256]] [--duration 5] [--warmup 1] [--rounds 3]
                                [--backends epoll] [--json FILE]

Servers, each in its own process on 127.0.0.1 for the whole run:
examples/http_hello.py on netpoll (one per --backends entry, epoll by default);
examples/http_hello_uvicorn.py, uvicorn on uvloop with httptools (when
importable); examples/http_hello.go, built with `go build` into a temporary
directory, with GOMAXPROCS=1 and with the default (when `go` is on PATH).

Each round, for each connection count, every server in turn (the order
rotates from round to round) gets a warm-up run and a measured one:

    wrk -t1 -c{C} -d{WARMUP}s http://127.0.0.1:PORT/
    wrk -t1 -c{C} -d{D}s --latency http://127.0.0.1:PORT/

Per server and connection count the table gives medians over the rounds:
requests/s and the p50 and p99 latency as wrk reports them, and the server's
CPU time per request (utime+stime of the server process from /proc/PID/stat
across the measured run, divided by the requests wrk completed), and wrk's own CPU use (a load
generator near 100% of a CPU caps what it can measure). The ratios
against uvicorn+uvloop are medians of the per-round ratios, each taken
between runs of the same round. Linux only (wrk, /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from netpoll.benchmark.runner import readline, stop_process

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BASELINE = "uvicorn+uvloop"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Spec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class Server:
    """A server process, started, listening, and stopped and reaped by stop()."""

    def __init__(self, spec: Spec, timeout: float = 30.0) -> None:
        self.spec = spec
        env = dict(os.environ)
        env.pop("GOMAXPROCS", None)
        env.update(spec.env)
        self.errf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf, env=env, start_new_session=True)
        self.pid = self.proc.pid
        try:
            line = readline(self.proc.stdout, timeout)
            m = re.search(r"serving http://(\S+):(\d+)", line)
            if not m:
                raise RuntimeError(f"{spec.name} did not start: {line.strip() or self.stderr()}")
            self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
            self.url = f"http://{m.group(1)}:{self.port}/"
            _wait_for_port(self.host, self.port, timeout)
        except BaseException:
            self.stop()
            raise

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (every thread)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        self.errf.seek(0)
        return self.errf.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        stop_process(self.proc, self.errf)


def _wait_for_port(host: str, port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


# -- the servers ------------------------------------------------------------------


def build_go(tmp: Path) -> Path:
    """examples/http_hello.go built in ``tmp`` (a module of its own)."""
    go = shutil.which("go")
    assert go is not None
    shutil.copyfile(EXAMPLES / "http_hello.go", tmp / "main.go")
    (tmp / "go.mod").write_text("module hello\n\ngo 1.16\n")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    cache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True, env=env).stdout.strip()
    try:
        os.makedirs(cache, exist_ok=True)
        writable = os.access(cache, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        env["GOCACHE"] = str(tmp / "go-build")
    r = subprocess.run([go, "build", "-o", "hello", "."], cwd=tmp, capture_output=True, text=True,
                       env=env, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"go build failed:\n{r.stderr}")
    return tmp / "hello"


def server_specs(backends: list[str], tmp: Path) -> tuple[list[Spec], dict[str, str]]:
    """The servers to race, and those skipped with the reason."""
    specs, skipped = [], {}
    env = {}
    if importlib.util.find_spec("netpoll") is None:  # a source checkout built in place
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    for b in backends:
        specs.append(Spec(f"netpoll-{b}", [sys.executable, str(EXAMPLES / "http_hello.py"), "--port", "0",
                                           "--backend", b], env))
    missing = [m for m in ("uvicorn", "uvloop", "httptools") if importlib.util.find_spec(m) is None]
    if missing:
        skipped[BASELINE] = f"not importable: {', '.join(missing)}"
    else:
        specs.append(Spec(BASELINE, [sys.executable, str(EXAMPLES / "http_hello_uvicorn.py"), "--port", "0"]))
    if shutil.which("go") is None:
        skipped["go"] = "go is not on PATH"
    else:
        try:
            binary = str(build_go(tmp))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            skipped["go"] = str(e)
        else:
            specs.append(Spec("go-1proc", [binary, "-addr", "127.0.0.1:0"], {"GOMAXPROCS": "1"}))
            specs.append(Spec("go", [binary, "-addr", "127.0.0.1:0"]))
    return specs, skipped


# -- wrk ----------------------------------------------------------------------------

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def wrk(url: str, conns: int, seconds: int, latency: bool) -> str:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s"] + (["--latency"] if latency else []) + [url]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}): {(p.stderr.strip() or p.stdout.strip())[:500]}")
    return p.stdout


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, requests/s, p50/p99 (microseconds) and errors from wrk --latency's report."""

    def latency(pct: int) -> float:
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk's output:\n{out}")
        return float(m.group(1)) * _UNITS_US[m.group(2)]

    m = re.search(r"^\s*(\d+) requests in ", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m or not rps:
        raise ValueError(f"unexpected wrk output:\n{out}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return {"requests": int(m.group(1)), "rps": float(rps.group(1)),
            "p50_us": latency(50), "p99_us": latency(99), "errors": errors}


# -- the race ------------------------------------------------------------------------


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(srv: Server, conns: int, warmup: int, duration: int) -> dict[str, Any]:
    if warmup > 0:
        wrk(srv.url, conns, warmup, latency=False)
    cpu0, load0 = srv.cpu_seconds(), _children_cpu()
    out = wrk(srv.url, conns, duration, latency=True)
    cpu, load = srv.cpu_seconds() - cpu0, _children_cpu() - load0
    r = parse_wrk(out)
    r["cpu_s"] = cpu
    r["wrk_cpu_pct"] = load / duration * 100  # wrk is the only child reaped in between
    r["cpu_us_per_req"] = cpu / r["requests"] * 1e6 if r["requests"] else None
    return r


def race(servers: list[Server], args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    runs: list[dict] = []
    errors: list[dict] = []
    dead: set[str] = set()
    n = len(servers)
    for rnd in range(args.rounds):
        for conns in args.conns:
            for srv in servers[rnd % n:] + servers[:rnd % n]:
                name = srv.spec.name
                if name in dead:
                    continue
                try:
                    r = measure(srv, conns, args.warmup, args.duration)
                except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as e:
                    if not srv.alive():
                        dead.add(name)
                        e = RuntimeError(f"{e}; the server exited {srv.proc.returncode}: {srv.stderr()}")
                    errors.append({"server": name, "round": rnd, "conns": conns, "error": str(e)})
                    print(f"round {rnd + 1} c={conns} {name}: {e}", file=sys.stderr, flush=True)
                    continue
                r.update(server=name, round=rnd, conns=conns)
                runs.append(r)
                print(f"round {rnd + 1}/{args.rounds} c={conns} {name}: {r['rps']:,.0f} req/s, "
                      f"p99 {fmt_us(r['p99_us'])}, {fmt_cpu(r['cpu_us_per_req'])} CPU/req"
                      + (f", {r['errors']} errors" if r["errors"] else ""), file=sys.stderr, flush=True)
    return runs, errors


def median(xs: list[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict], names: list[str], conns: list[int]) -> list[dict]:
    by = {(r["server"], r["conns"], r["round"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    rows = []
    for c in conns:
        for name in names:
            mine = [by[name, c, k] for k in rounds if (name, c, k) in by]
            if not mine:
                continue
            rps_x, cpu_x = [], []
            for r in mine:
                base = by.get((BASELINE, c, r["round"]))
                if base and base["rps"]:
                    rps_x.append(r["rps"] / base["rps"])
                if base and base["cpu_us_per_req"] and r["cpu_us_per_req"] is not None:
                    cpu_x.append(r["cpu_us_per_req"] / base["cpu_us_per_req"])
            rows.append({
                "server": name, "conns": c, "runs": len(mine),
                "rps": median([r["rps"] for r in mine]),
                "p50_us": median([r["p50_us"] for r in mine]),
                "p99_us": median([r["p99_us"] for r in mine]),
                "cpu_us_per_req": median([r["cpu_us_per_req"] for r in mine]),
                "rps_vs_uvicorn": median(rps_x),
                "cpu_vs_uvicorn": median(cpu_x),
                "wrk_cpu_pct": median([r["wrk_cpu_pct"] for r in mine]),
                "errors": sum(r["errors"] for r in mine),
            })
    return rows


def fmt_us(us: Optional[float]) -> str:
    if us is None:
        return "-"
    return f"{us:.0f}us" if us < 1000 else f"{us / 1000:.2f}ms"


def fmt_cpu(us: Optional[float]) -> str:
    return "-" if us is None else f"{us:.1f}us"


def fmt_x(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(rows: list[dict]) -> str:
    head = ["server", "conns", "req/s", "p50", "p99", "CPU/req", "req/s vs uvicorn", "CPU/req vs uvicorn",
            "wrk CPU", "errors"]
    body = [[r["server"], str(r["conns"]), f"{r['rps']:,.0f}", fmt_us(r["p50_us"]), fmt_us(r["p99_us"]),
             fmt_cpu(r["cpu_us_per_req"]), fmt_x(r["rps_vs_uvicorn"]), fmt_x(r["cpu_vs_uvicorn"]),
             f"{r['wrk_cpu_pct']:.0f}%", str(r["errors"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
             for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def versions() -> dict[str, str]:
    v = {"python": platform.python_version(), "cpus": str(os.cpu_count()), "platform": platform.platform()}
    for mod in ("uvicorn", "uvloop", "httptools"):
        with contextlib.suppress(Exception):
            v[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        v["go"] = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=30).stdout.split()[2]
    with contextlib.suppress(Exception):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=30)
        v["wrk"] = (out.stdout or out.stderr).split()[1]
    return v


def _conns(s: str) -> list[int]:
    out = [int(c) for c in s.split(",") if c.strip()]
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("a comma list of connection counts, each >= 1")
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--conns", type=_conns, default=[64], help="connection counts, comma-separated (default 64)")
    p.add_argument("--duration", type=int, default=5, help="whole seconds per measured wrk run (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="whole seconds of the warm-up wrk run; 0: none (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians over them (default 3)")
    p.add_argument("--backends", default="epoll", help="netpoll backends, comma-separated (default epoll)")
    p.add_argument("--json", metavar="FILE", help="write every run and the summary as JSON")
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("http_bench: needs Linux (/proc for the CPU accounting)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("http_bench: wrk is not on PATH", file=sys.stderr)
        return 2
    if importlib.util.find_spec("httptools") is None:
        print("http_bench: the netpoll server needs httptools (pip install httptools)", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")

    signal.signal(signal.SIGTERM, _interrupt)  # stop and reap the servers on SIGTERM too
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="http-bench-")))
        specs, skipped = server_specs([b.strip() for b in args.backends.split(",") if b.strip()], tmp)
        servers = []
        for spec in specs:
            try:
                srv = Server(spec)
            except (RuntimeError, OSError) as e:
                skipped[spec.name] = str(e)
                continue
            stack.callback(srv.stop)
            servers.append(srv)
        info = versions()
        conns = str(args.conns[0]) if len(args.conns) == 1 else "{" + ",".join(map(str, args.conns)) + "}"
        print(f"wrk -t1 -c{conns} -d{args.duration}s --latency, warm-up {args.warmup} s, "
              f"{args.rounds} rounds; "
              + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
        for name, why in skipped.items():
            print(f"skipped {name}: {why}", flush=True)
        runs, errors = race(servers, args)

    rows = summarize(runs, [s.name for s in specs], args.conns)
    print()
    print(table(rows))
    print(f"\nMedians over {args.rounds} rounds. CPU/req: the server process's utime+stime over the measured "
          "run per request. wrk CPU: the load generator's utime+stime as % of one CPU. Ratios vs uvicorn: medians of the per-round ratios (req/s: higher is better; "
          "CPU/req: lower is better).")
    if errors:
        print(f"\n{len(errors)} failed runs:")
        for e in errors:
            print(f"  round {e['round'] + 1} c={e['conns']} {e['server']}: {e['error']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "versions": info, "skipped": skipped, "runs": runs,
                       "errors": errors, "summary": rows}, f, indent=1)
    return 1 if errors or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
