"""Run the echo benchmark: servers in their own processes, the C load
generator against each, alternating rounds, medians and ratios.

Three measurements:

- ``run_echo``: per server and connection count, messages/s, p50/p99
  round-trip latency, server CPU time per message (utime+stime of the server
  process over the measured window, from /proc/PID/stat) and the load
  generator's own CPU use; ratios against uvloop-protocols and
  asyncio-streams are medians of per-round ratios (same round, same load).
- ``run_syscalls``: system calls per echoed message (``perf stat`` on the
  syscall tracepoints, else ``strace -c -f``).
- ``run_idle``: RSS per idle connection with N idle connections, and the
  throughput of 64 active connections with 0 and with N idle ones.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import netpoll
from netpoll.benchmark import build

BASELINES = ("uvloop-protocols", "asyncio-streams")


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    name: str                       # what --servers selects: netpoll-epoll, go-1proc, ...
    label: str                      # the table's server column
    argv: Optional[Callable[[], list[str]]] = None
    env: dict = dataclasses.field(default_factory=dict)
    skip: Optional[str] = None      # why it cannot run here
    backend: Optional[str] = None   # netpoll's backend
    what: str = ""                  # what polls, as the server reports it

    def __post_init__(self) -> None:
        self.max_fd: Optional[int] = None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _py(name: str, *extra: str) -> Callable[[], list[str]]:
    # -P: the server imports the netpoll this process imported (PYTHONPATH,
    # set by Running), never a source tree in the current directory.
    return lambda: [sys.executable, "-P", "-m", "netpoll.benchmark.servers", name, "--port", "0", *extra]


def all_servers(netpoll_bufsize: int = 65536) -> list[Server]:
    """Every server the benchmark knows, in table order, with a skip reason
    for those that cannot run here."""
    from netpoll._table import backend_infos

    out = []
    for name, info in backend_infos().items():
        s = Server(f"netpoll-{name}", "netpoll", backend=name,
                   argv=_py("netpoll", "--backend", name, "--bufsize", str(netpoll_bufsize)))
        if not info.available:
            s.skip = info.reason
        else:
            s.max_fd = info.cls.max_fd
            s.what = name
            if name == "kqueue" and sys.platform.startswith("linux"):
                s.what = "kqueue (over the epoll test shim)"
        out.append(s)
    uv = None if _has("uvloop") else "uvloop is not installed (pip install uvloop)"
    out += [
        Server("uvloop-protocols", "uvloop protocols", _py("uvloop-protocols"), skip=uv),
        Server("uvloop-streams", "uvloop streams", _py("uvloop-streams"), skip=uv),
        Server("asyncio-protocols", "asyncio protocols", _py("asyncio-protocols")),
        Server("asyncio-buffered", "asyncio BufferedProtocol", _py("asyncio-buffered")),
        Server("asyncio-streams", "asyncio streams", _py("asyncio-streams")),
        Server("trio", "trio", _py("trio"), skip=None if _has("trio") else "trio is not installed (pip install trio)"),
        Server("gevent", "gevent", _py("gevent"),
               skip=None if _has("gevent") else "gevent is not installed (pip install gevent)"),
        Server("selectors", "selectors loop", _py("selectors")),
    ]
    nogo = None if build.go_tool() else "go is not on PATH"
    out += [
        Server("go-1proc", "Go net, GOMAXPROCS=1", lambda: [str(build.go_echo()), "127.0.0.1:0"],
               env={"GOMAXPROCS": "1"}, skip=nogo),
        Server("go", "Go net, GOMAXPROCS default", lambda: [str(build.go_echo()), "127.0.0.1:0"], skip=nogo),
    ]
    return out


def select_servers(servers: list[Server], spec: Optional[str]) -> list[Server]:
    """Filter by a comma list: a name, or a prefix before '-' ("netpoll",
    "uvloop", "asyncio", "go")."""
    if not spec:
        return servers
    want = [w.strip() for w in spec.split(",") if w.strip()]
    known = {s.name for s in servers}
    unknown = [w for w in want if not any(s.name == w or s.name.startswith(w + "-") for s in servers)]
    if unknown:
        raise SystemExit(f"unknown server {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [s for s in servers if any(s.name == w or s.name.startswith(w + "-") for w in want)]


class Running:
    """A server process, started and ready."""

    def __init__(self, server: Server, pin: Optional[list[int]] = None, timeout: float = 60.0) -> None:
        self.server = server
        env = dict(os.environ)
        env.pop("GOMAXPROCS", None)
        root = os.path.dirname(os.path.dirname(os.path.abspath(netpoll.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.update(server.env)
        self.errf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            server.argv(), stdout=subprocess.PIPE, stderr=self.errf, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_pinner(pin), start_new_session=True)
        self.pid = self.proc.pid
        line = readline(self.proc.stdout, timeout)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{server.name} did not start: {line.strip() or self.stderr()}")
        parts = line.split(None, 2)
        self.addr = parts[1]
        self.host, _, port = self.addr.rpartition(":")
        self.host = self.host.strip("[]")
        self.port = int(port)
        server.what = server.what or (parts[2].strip() if len(parts) > 2 else "")

    def stderr(self) -> str:
        self.errf.seek(0)
        return self.errf.read().decode(errors="replace")[-2000:]

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> int:
        return stop_process(self.proc, self.errf)

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _pinner(cpus: Optional[list[int]]):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def stop_process(p: subprocess.Popen, errf: Any) -> int:
    """SIGTERM, then SIGKILL after 5 s; reap it and close its stdout and
    the file its stderr went to; returns the exit status."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    p.stdout.close()
    errf.close()
    return p.returncode


def readline(stream, timeout: float) -> str:
    """One line from a pipe, waiting at most ``timeout`` seconds."""
    fd = stream.fileno()
    buf = b""
    end = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


# ---------------------------------------------------------------------------
# The load generator
# ---------------------------------------------------------------------------


def loadgen_argv(srv: Running, conns: int, size: int, warmup: float, duration: float,
                 idle: int = 0, idle_wait: bool = False) -> list[str]:
    argv = [str(build.loadgen()), "--host", srv.host, "--port", str(srv.port), "--conns", str(conns),
            "--size", str(size), "--warmup", str(warmup), "--duration", str(duration), "--pid", str(srv.pid)]
    if idle:
        argv += ["--idle", str(idle)]
    if idle_wait:
        argv.append("--idle-wait")
    return argv


def _parse(out: str, err: str, rc: int) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    return {"error": f"load generator exited {rc}: {(err or out).strip()[-500:]}"}


def drive(srv: Running, conns: int, size: int, warmup: float, duration: float,
          pin: Optional[list[int]] = None) -> dict:
    """One loadgen run against a running server; its JSON result."""
    argv = loadgen_argv(srv, conns, size, warmup, duration)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=warmup + duration + 120,
                           preexec_fn=_pinner(pin))
    except subprocess.TimeoutExpired:
        return {"error": "load generator timed out"}
    r = _parse(p.stdout, p.stderr, p.returncode)
    if srv.proc.poll() is not None:
        r.setdefault("error", f"server exited {srv.proc.returncode}: {srv.stderr()}")
    return r


def parse_pin(spec: Optional[str]) -> tuple[Optional[list[int]], Optional[list[int]]]:
    """--pin "0": server and client both on CPU 0; "0,1": server on 0, client on 1."""
    if not spec:
        return None, None
    cpus = [int(c) for c in spec.split(",")]
    return [cpus[0]], [cpus[-1]]


# ---------------------------------------------------------------------------
# Machine, formatting
# ---------------------------------------------------------------------------


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import netpoll

    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "netpoll": netpoll.__version__,
    }


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    return format(v, spec)


def render(headers: list[str], rows: list[list[str]], markdown: bool = False, right: set[int] = frozenset()) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |",
               "| " + " | ".join("---:" if i in right else "---" for i in range(len(headers))) + " |"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


class Progress:
    """One line, rewritten in place, when stdout is a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: Optional[bool] = None) -> None:
        self.total = total
        self.done = 0
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()

    def show(self, what: str) -> None:
        if not self.enabled:
            return
        el = time.monotonic() - self.t0
        eta = ""
        if self.done:
            eta = f", ~{el / self.done * (self.total - self.done):.0f} s left"
        msg = f"[{self.done + 1}/{self.total}] {what} ({el:.0f} s{eta})"
        cols = shutil.get_terminal_size((100, 20)).columns
        sys.stdout.write("\r\033[K" + msg[: cols - 1])
        sys.stdout.flush()

    def step(self) -> None:
        self.done += 1

    def clear(self) -> None:
        if self.enabled:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()


def _median(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------
# The echo benchmark
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class EchoConfig:
    conns: list[int]
    size: int = 64
    warmup: float = 1.0
    duration: float = 5.0
    rounds: int = 3
    pin: Optional[str] = None
    prewarm: bool = False


def run_echo(servers: list[Server], cfg: EchoConfig, progress: Optional[bool] = None) -> dict:
    runnable = [s for s in servers if s.skip is None]
    spin, cpin = parse_pin(cfg.pin)
    runs: list[dict] = []
    errors: dict[str, str] = {}
    prog = Progress(cfg.rounds * len(cfg.conns) * len(runnable), progress)
    for rnd in range(cfg.rounds):
        for c in cfg.conns:
            order = runnable if (rnd + cfg.conns.index(c)) % 2 == 0 else runnable[::-1]
            for s in order:
                prog.show(f"round {rnd + 1}/{cfg.rounds}, {c} conns: {s.name}")
                try:
                    with Running(s, spin) as srv:
                        if cfg.prewarm:
                            drive(srv, 64, cfg.size, 0.0, 0.5, cpin)
                        r = drive(srv, c, cfg.size, cfg.warmup, cfg.duration, cpin)
                except Exception as e:  # a server that would not start
                    r = {"error": str(e)}
                r.update(server=s.name, round=rnd, conns=c)
                if r.get("machine_busy_pct") is not None and r.get("server_cpu_pct") is not None:
                    # CPU that neither the server nor the load generator used: other processes.
                    r["others_cpu_pct"] = max(0.0, r["machine_busy_pct"] - r["server_cpu_pct"]
                                              - r.get("client_cpu_pct", 0))
                if "error" in r:
                    errors[s.name] = r["error"]
                runs.append(r)
                prog.step()
    prog.clear()
    return {"machine": machine(), "config": dataclasses.asdict(cfg), "runs": runs,
            "summary": summarize(servers, cfg, runs), "errors": errors,
            "skipped": {s.name: s.skip for s in servers if s.skip}}


def summarize(servers: list[Server], cfg: EchoConfig, runs: list[dict]) -> list[dict]:
    by = {}
    for r in runs:
        by.setdefault((r["server"], r["conns"]), {})[r["round"]] = r
    out = []
    for c in cfg.conns:
        for s in servers:
            row: dict[str, Any] = {"server": s.name, "label": s.label, "backend": s.what, "conns": c}
            if s.skip:
                row["skipped"] = s.skip
                out.append(row)
                continue
            rs = [r for r in by.get((s.name, c), {}).values() if "error" not in r and r.get("messages")]
            if not rs:
                errs = [r.get("error") for r in by.get((s.name, c), {}).values() if r.get("error")]
                row["failed"] = errs[0] if errs else "no messages"
                out.append(row)
                continue
            for k in ("msgs_per_s", "p50_us", "p99_us", "server_us_per_msg", "server_user_us_per_msg",
                      "client_cpu_pct", "server_cpu_pct", "others_cpu_pct"):
                row[k] = _median([r.get(k) for r in rs])
            row["rounds"] = len(rs)
            for base in BASELINES:
                ratios, cpu = [], []
                for rnd, r in by.get((s.name, c), {}).items():
                    b = by.get((base, c), {}).get(rnd)
                    if b and "error" not in r and "error" not in b and b.get("msgs_per_s") and r.get("msgs_per_s"):
                        ratios.append(r["msgs_per_s"] / b["msgs_per_s"])
                        if r.get("server_us_per_msg") and b.get("server_us_per_msg"):
                            cpu.append(r["server_us_per_msg"] / b["server_us_per_msg"])
                key = base.replace("-", "_")
                row[f"x_{key}"] = _median(ratios)
                row[f"cpu_x_{key}"] = _median(cpu)
            out.append(row)
    return out


def echo_table(result: dict, markdown: bool = False) -> str:
    cfg = result["config"]
    m = result["machine"]
    head = (f"echo benchmark: {cfg['size']}-byte messages, ping-pong, medians of {cfg['rounds']} alternating "
            f"round(s) of {cfg['duration']:g} s after {cfg['warmup']:g} s warm-up"
            + (f", pinned {cfg['pin']}" if cfg.get("pin") else "")
            + (", each server pre-warmed by a 0.5 s load on 64 connections" if cfg.get("prewarm") else "")
            + f"; {m['os']}, {m['cpus']} CPUs, Python {m['python']}")
    headers = ["conns", "server", "backend", "msgs/s", "p50 µs", "p99 µs", "server µs/msg (user)",
               "server CPU", "client CPU", "others", "× uvloop-p", "× asyncio-s", "CPU × uvloop-p"]
    rows = []
    notes = []
    for r in result["summary"]:
        base = [str(r["conns"]), r["label"], r.get("backend") or ""]
        if "skipped" in r or "failed" in r:
            why = r.get("skipped") or f"failed: {r['failed']}"
            if (r["server"], why) not in notes:
                notes.append((r["server"], why))
            if "skipped" in r:
                continue
            rows.append(base + ["failed"] + [""] * 9)
            continue
        cpu = "-"
        if r.get("server_us_per_msg") is not None:
            cpu = f"{r['server_us_per_msg']:.2f} ({r['server_user_us_per_msg']:.2f})"
        rows.append(base + [
            _fmt(r.get("msgs_per_s"), ",.0f"), _fmt(r.get("p50_us"), ".0f"), _fmt(r.get("p99_us"), ".0f"), cpu,
            _fmt(r.get("server_cpu_pct"), ".0f") + "%", _fmt(r.get("client_cpu_pct"), ".0f") + "%",
            _fmt(r.get("others_cpu_pct"), ".0f") + "%",
            _fmt(r.get("x_uvloop_protocols"), ".2f"), _fmt(r.get("x_asyncio_streams"), ".2f"),
            _fmt(r.get("cpu_x_uvloop_protocols"), ".2f"),
        ])
    text = head + "\n\n" + render(headers, rows, markdown, right={0} | set(range(3, 13)))
    text += ("\n\nCPU columns are % of one CPU over the measured window: the server process, the load "
             "generator, and everything else on the machine (others).")
    others = _median([r.get("others_cpu_pct") for r in result["summary"]])
    if others is not None and others > 25:
        text += (f" Other processes used a median {others:.0f}% of a CPU during the measurements: "
                 "the server and the load generator shared what was left, so throughput is lower and "
                 "noisier than on a quiet machine; CPU time per message is the steadier figure.")
    if notes:
        text += "\n\n" + "\n".join(f"{'- ' if markdown else ''}{n}: {w}" for n, w in notes)
    return text


# ---------------------------------------------------------------------------
# System calls per message
# ---------------------------------------------------------------------------

SYSCALLS = ("read", "write", "recvfrom", "sendto", "recvmsg", "sendmsg", "readv", "writev",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll", "select", "pselect6",
            "futex", "nanosleep", "getpid", "accept4", "close")
TRACEFS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")


def _tracepoints() -> Optional[list[str]]:
    for root in TRACEFS:
        if os.path.isdir(os.path.join(root, "raw_syscalls")):
            return [n for n in SYSCALLS if os.path.isdir(os.path.join(root, "syscalls", f"sys_enter_{n}"))]
    return None


def syscall_tool() -> Optional[str]:
    """'perf' when perf can count syscall tracepoints here, 'strace' as the fallback."""
    if shutil.which("perf") and _tracepoints() is not None:
        p = subprocess.run(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "true"],
                           capture_output=True, text=True)
        if p.returncode == 0:
            return "perf"
    if shutil.which("strace"):
        return "strace"
    return None


def count_syscalls(pid: int, load: Callable[[], dict], tool: str) -> tuple[dict, dict]:
    """Run ``load()`` while counting the syscalls of process ``pid``:
    ({syscall: count, "total": n}, load's result)."""
    if tool == "perf":
        names = _tracepoints() or []
        events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{n}" for n in names]
        p = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(0.5)
        res = load()
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        counts: dict[str, int] = {}
        for line in err.splitlines():
            f = line.split(",")
            if len(f) >= 3 and f[0].strip().isdigit():
                ev = f[2]
                counts["total" if ev == "raw_syscalls:sys_enter" else ev.rsplit("sys_enter_", 1)[-1]] = int(f[0])
        return counts, res
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        p = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out.name, "-p", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1.0)
        res = load()
        p.send_signal(signal.SIGINT)
        p.wait(30)
        counts = {}
        for line in out.read().splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[3].isdigit():
                counts[f[-1]] = int(f[3])
            elif len(f) >= 3 and f[-1] == "total":
                counts["total"] = int(f[2])
        return counts, res


def run_syscalls(servers: list[Server], conns: list[int], size: int, warmup: float, duration: float,
                 progress: Optional[bool] = None) -> dict:
    tool = syscall_tool()
    runnable = [s for s in servers if s.skip is None]
    prog = Progress(len(runnable) * len(conns), progress)
    rows = []
    if tool is None:
        return {"tool": None, "rows": [], "error": "neither perf (with syscall tracepoints) nor strace is usable"}
    for c in conns:
        for s in runnable:
            prog.show(f"syscalls, {c} conns: {s.name}")
            row: dict[str, Any] = {"server": s.name, "label": s.label, "conns": c}
            try:
                with Running(s) as srv:
                    # A first load, not counted, so that every thread the
                    # server starts under load exists before the counting.
                    drive(srv, c, size, 0.0, 0.5)
                    counts, res = count_syscalls(srv.pid, lambda: drive(srv, c, size, warmup, duration), tool)
                row["backend"] = s.what
                if "error" in res:
                    row["failed"] = res["error"]
                else:
                    n = res["total_messages"]
                    row.update(messages=n, msgs_per_s=res.get("msgs_per_s"), counts=counts,
                               per_msg={k: v / n for k, v in counts.items()} if n else {})
            except Exception as e:
                row["failed"] = str(e)
            rows.append(row)
            prog.step()
    prog.clear()
    return {"tool": tool, "machine": machine(), "size": size, "rows": rows,
            "skipped": {s.name: s.skip for s in servers if s.skip}}


def syscalls_table(result: dict, markdown: bool = False) -> str:
    if not result.get("tool"):
        return f"syscalls per message: {result.get('error')}"
    shown = ["read", "write", "recvfrom", "sendto", "epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "select",
             "futex", "nanosleep"]
    used = [k for k in shown if any(r.get("per_msg", {}).get(k, 0) >= 0.005 for r in result["rows"])]
    headers = ["conns", "server", "backend", "syscalls/msg"] + used + ["other", "msgs/s under tracing"]
    rows = []
    for r in result["rows"]:
        base = [str(r["conns"]), r["label"], r.get("backend", "")]
        if "failed" in r:
            rows.append(base + ["failed: " + r["failed"][:60]] + [""] * (len(used) + 2))
            continue
        pm = r["per_msg"]
        other = pm.get("total", 0) - sum(v for k, v in pm.items() if k != "total" and k in used)
        rows.append(base + [f"{pm.get('total', 0):.2f}"] + [f"{pm.get(k, 0):.2f}" for k in used]
                    + [f"{other:.2f}", _fmt(r.get("msgs_per_s"), ",.0f")])
    head = (f"system calls per echoed message ({result['tool']}; {result['size']}-byte messages; every syscall of "
            "the server process from before the load starts to after it ends, over every message echoed)")
    return head + "\n\n" + render(headers, rows, markdown, right=set(range(3, len(headers))) | {0})


# ---------------------------------------------------------------------------
# Idle connections
# ---------------------------------------------------------------------------


def _raise_nofile(need: int) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def idle_run(s: Server, idle: int, active: int, size: int, warmup: float, duration: float) -> dict:
    """RSS per idle connection, then the active load with the idle
    connections still open, on one server process."""
    out: dict[str, Any] = {"server": s.name, "label": s.label, "idle": idle}
    with Running(s) as srv:
        out["backend"] = s.what
        warm = drive(srv, 1, size, 0.0, 0.3)  # code paths and allocator pools in use
        if "error" in warm:
            out["failed"] = warm["error"]
            return out
        time.sleep(0.3)
        base = srv.rss_kb()
        argv = loadgen_argv(srv, active, size, warmup, duration, idle=idle, idle_wait=True)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = readline(p.stderr, 300)
        try:
            n = int(line.split()[1]) if line.startswith("idle-ready") else 0
            time.sleep(0.5)
            rss = srv.rss_kb()
            out.update(idle_open=n, rss_base_kb=base, rss_idle_kb=rss,
                       rss_per_idle_conn_kb=(rss - base) / n if n else None)
            p.stdin.write("\n")
            p.stdin.flush()
            stdout, stderr = p.communicate(timeout=warmup + duration + 120)
        except BaseException:
            p.kill()
            p.wait()
            raise
        r = _parse(stdout, stderr, p.returncode)
        if r.get("idle_error"):
            out["idle_error"] = r["idle_error"]
        if "error" in r:
            out["failed"] = r["error"]
        else:
            out.update(msgs_per_s=r.get("msgs_per_s"), server_us_per_msg=r.get("server_us_per_msg"))
    return out


def run_idle(servers: list[Server], idle: int, active: int, size: int, warmup: float, duration: float,
             rounds: int = 1, progress: Optional[bool] = None) -> dict:
    hard = _raise_nofile(idle + active + 64)
    runnable = [s for s in servers if s.skip is None]
    prog = Progress(len(runnable) * rounds * 2, progress)
    rows = []
    notes = {}
    if hard < idle + active + 64:
        notes["*"] = f"RLIMIT_NOFILE's hard limit is {hard}: {hard - active - 64} idle connections at most"
        idle = max(0, hard - active - 64)
    for rnd in range(rounds):
        for s in (runnable if rnd % 2 == 0 else runnable[::-1]):
            n = idle
            if s.max_fd is not None and idle + active + 64 > s.max_fd:
                n = max(0, s.max_fd - active - 64)
                notes[s.name] = (f"{s.backend} handles descriptors below {s.max_fd} only (FD_SETSIZE): it cannot "
                                 f"hold {idle:,} connections; measured with {n:,}")
            prog.show(f"round {rnd + 1}/{rounds}, {n:,} idle + {active} active: {s.name}")
            try:
                row = idle_run(s, n, active, size, warmup, duration)
            except Exception as e:
                row = {"server": s.name, "label": s.label, "failed": str(e)}
            prog.step()
            prog.show(f"round {rnd + 1}/{rounds}, 0 idle + {active} active: {s.name}")
            try:
                with Running(s) as srv:
                    r0 = drive(srv, active, size, warmup, duration)
                row["msgs_per_s_no_idle"] = r0.get("msgs_per_s")
                row["server_us_per_msg_no_idle"] = r0.get("server_us_per_msg")
            except Exception as e:
                row.setdefault("failed", str(e))
            prog.step()
            row["round"] = rnd
            rows.append(row)
    prog.clear()
    summary = []
    for s in servers:
        rs = [r for r in rows if r["server"] == s.name]
        if s.skip or not rs:
            continue
        ok = [r for r in rs if "failed" not in r]
        row = {"server": s.name, "label": s.label, "backend": rs[0].get("backend", s.what),
               "idle": _median([r.get("idle_open") for r in ok]) if ok else None}
        if not ok:
            row["failed"] = rs[0].get("failed")
        for k in ("rss_per_idle_conn_kb", "msgs_per_s_no_idle", "msgs_per_s", "server_us_per_msg_no_idle",
                  "server_us_per_msg"):
            row[k] = _median([r.get(k) for r in ok])
        if row.get("msgs_per_s") and row.get("msgs_per_s_no_idle"):
            row["ratio"] = row["msgs_per_s"] / row["msgs_per_s_no_idle"]
        summary.append(row)
    return {"machine": machine(), "idle": idle, "active": active, "size": size, "rows": rows,
            "summary": summary, "notes": notes, "skipped": {s.name: s.skip for s in servers if s.skip}}


def idle_table(result: dict, markdown: bool = False) -> str:
    headers = ["server", "backend", "idle conns", "RSS/idle conn", f"msgs/s, {result['active']} active",
               "with the idle ones", "ratio", "server µs/msg", "with the idle ones"]
    rows = []
    for r in result["summary"]:
        if r.get("failed"):
            rows.append([r["label"], r.get("backend") or "", "-", "failed: " + str(r["failed"])[:60]] + [""] * 5)
            continue
        rows.append([r["label"], r.get("backend") or "", _fmt(r.get("idle"), ",.0f"),
                     _fmt(r.get("rss_per_idle_conn_kb"), ".2f") + " KB",
                     _fmt(r.get("msgs_per_s_no_idle"), ",.0f"), _fmt(r.get("msgs_per_s"), ",.0f"),
                     _fmt(r.get("ratio"), ".2f"), _fmt(r.get("server_us_per_msg_no_idle"), ".2f"),
                     _fmt(r.get("server_us_per_msg"), ".2f")])
    head = (f"idle connections: server RSS growth per idle connection (each echoed one message, then silent), "
            f"and {result['active']} active connections with 0 and with the idle ones registered "
            f"({result['size']}-byte messages)")
    text = head + "\n\n" + render(headers, rows, markdown, right=set(range(2, 9)))
    notes = list(result["notes"].values())
    if notes:
        text += "\n\n" + "\n".join(("- " if markdown else "") + n for n in notes)
    return text
