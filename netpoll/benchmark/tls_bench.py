"""The TLS benchmark (``netpoll bench --tls``): TLS echo servers, each in its
own process on 127.0.0.1, against one load generator written with Go's
crypto/tls (compiled once into the benchmark cache; it needs ``go``).

Servers, each what a user of that library would write:

- netpoll: ``tls.listen``, a goroutine per conn that parks in
  ``wait_readable`` holding no buffer, then reads into a pooled 64 KiB
  buffer and writes it back;
- asyncio streams with ``ssl=`` on the stdlib loop;
- uvloop protocols with ``ssl=`` (``data_received`` -> ``transport.write``);
- Go's crypto/tls with GOMAXPROCS=1 (a goroutine per conn, 16 KiB buffer).

Measured per server (all TLS 1.3, ECDSA P-256, verification off in the
load generator, whose CPU is reported to show it is not the bottleneck):

- echo messages/s and server CPU (utime+stime from /proc/PID/stat over the
  window) per message, C connections ping-ponging SIZE-byte messages, at
  64 B and 16 KiB;
- full handshakes per second (no session cache): dial, handshake, a 1-byte
  echo, close, from 16 concurrent dialers;
- RSS per idle TLS connection: N conns that each echoed one message, then
  sit idle; (RSS with them - RSS before) / N.

    python -m netpoll bench --tls [--quick] [--markdown]
    python -m netpoll.benchmark.tls_bench [--quick] [--servers netpoll,asyncio] [--idle N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

GO_TLS = r'''package main

// The TLS benchmark's Go side: a crypto/tls echo server, and the load
// generator (echo ping-pong, handshakes, idle connections).
import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func die(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func serverCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100.0
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

var client = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}

func serve(addr, cert, key string) {
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		die(err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{c}})
	if err != nil {
		die(err)
	}
	fmt.Printf("READY %s Go crypto/tls\n", ln.Addr())
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
		<-ch
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(conn net.Conn) {
			defer conn.Close()
			buf := make([]byte, 16384)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					if _, err := conn.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(conn)
	}
}

// measure runs work on conns goroutines; each call of work is one event
// counted once warmup seconds have passed, for duration seconds.
func measure(conns int, warmup, duration float64, pid int, setup func() (func() error, func())) {
	var count, errs int64
	var measuring, stop int32
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work, done := setup()
			defer done()
			<-ready
			for atomic.LoadInt32(&stop) == 0 {
				if err := work(); err != nil {
					atomic.AddInt64(&errs, 1)
					return
				}
				if atomic.LoadInt32(&measuring) == 1 {
					atomic.AddInt64(&count, 1)
				}
			}
		}()
	}
	close(ready)
	time.Sleep(time.Duration(warmup * float64(time.Second)))
	c0, s0, t0 := serverCPU(pid), selfCPU(), time.Now()
	atomic.StoreInt32(&measuring, 1)
	time.Sleep(time.Duration(duration * float64(time.Second)))
	atomic.StoreInt32(&measuring, 0)
	n := atomic.LoadInt64(&count)
	c1, s1, el := serverCPU(pid), selfCPU(), time.Since(t0).Seconds()
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	out, _ := json.Marshal(map[string]interface{}{
		"events": n, "per_s": float64(n) / el, "window_s": el, "errors": atomic.LoadInt64(&errs),
		"server_cpu_s": c1 - c0, "loadgen_cpu_s": s1 - s0,
	})
	fmt.Println(string(out))
}

func dial(addr string) *tls.Conn {
	for i := 0; ; i++ {
		c, err := tls.Dial("tcp", addr, client)
		if err == nil {
			return c
		}
		if i > 50 {
			die(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func main() {
	f := func(i int) float64 { v, _ := strconv.ParseFloat(os.Args[i], 64); return v }
	d := func(i int) int { v, _ := strconv.Atoi(os.Args[i]); return v }
	switch os.Args[1] {
	case "server": // ADDR CERT KEY
		serve(os.Args[2], os.Args[3], os.Args[4])
	case "echo": // ADDR CONNS SIZE WARMUP DURATION PID
		addr, size := os.Args[2], d(4)
		measure(d(3), f(5), f(6), d(7), func() (func() error, func()) {
			c := dial(addr)
			msg, back := make([]byte, size), make([]byte, size)
			return func() error {
				if _, err := c.Write(msg); err != nil {
					return err
				}
				_, err := io.ReadFull(c, back)
				return err
			}, func() { c.Close() }
		})
	case "handshake": // ADDR CONNS WARMUP DURATION PID
		addr := os.Args[2]
		measure(d(3), f(4), f(5), d(6), func() (func() error, func()) {
			one := make([]byte, 1)
			return func() error {
				c, err := tls.Dial("tcp", addr, client)
				if err != nil {
					return err
				}
				defer c.Close()
				if _, err := c.Write(one); err != nil {
					return err
				}
				_, err = io.ReadFull(c, one)
				return err
			}, func() {}
		})
	case "idle": // ADDR N: N conns that echo once, then idle until a line on stdin
		addr, n := os.Args[2], d(3)
		conns := make([]*tls.Conn, 0, n)
		buf := make([]byte, 64)
		for i := 0; i < n; i++ {
			c := dial(addr)
			if _, err := c.Write(buf); err != nil {
				die(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				die(err)
			}
			conns = append(conns, c)
		}
		fmt.Println("idle-ready", n)
		bufio.NewReader(os.Stdin).ReadString('\n')
		for _, c := range conns {
			c.Close()
		}
	}
}
'''


# ---------------------------------------------------------------------------
# Building the Go side
# ---------------------------------------------------------------------------

def go_binary() -> Path:
    """The Go program above, built once into the benchmark cache."""
    from netpoll.benchmark import build

    go = build.go_tool()
    if go is None:
        raise build.BuildError("netpoll bench --tls needs go on PATH for its load generator "
                               "(apt-get install golang-go)")
    version = subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256(GO_TLS.encode() + b"\0" + version.encode()).hexdigest()[:16]
    target = build.cache_dir() / f"go-tls-{digest}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="netpoll-go-tls-") as tmp:
        t = Path(tmp)
        (t / "main.go").write_text(GO_TLS)
        (t / "go.mod").write_text("module tlsbench\n\ngo 1.16\n")
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        env.setdefault("GOCACHE", str(build.cache_dir() / "go-build"))
        r = subprocess.run([go, "build", "-o", "tlsbench", "."], cwd=t, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise build.BuildError(f"go build failed:\n{r.stderr}")
        tmpbin = build.cache_dir() / f".go-tls-{os.getpid()}"
        shutil.copyfile(t / "tlsbench", tmpbin)
        os.chmod(tmpbin, 0o755)
        os.replace(tmpbin, target)
    return target


# ---------------------------------------------------------------------------
# The Python servers (run as: python -m netpoll.benchmark.tls_bench serve KIND ...)
# ---------------------------------------------------------------------------

def _context(cert: str, key: str):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def serve(kind: str, cert: str, key: str, backend: Optional[str]) -> None:
    from netpoll.benchmark.servers import _raise_nofile, _ready, _stop_on_signals

    _raise_nofile()
    _stop_on_signals()
    ctx = _context(cert, key)
    if kind == "netpoll":
        import netpoll
        from netpoll import tls

        pool: list = []

        async def handle(tc):
            try:
                while True:
                    await tc.wait_readable()
                    buf = pool.pop() if pool else memoryview(bytearray(65536))
                    try:
                        n = await tc.read(buf)
                        if not n:
                            break
                        await tc.write(buf[:n])
                    finally:
                        pool.append(buf)
            except OSError:
                pass
            finally:
                tc.close()

        async def main():
            ln = tls.listen("tcp", "127.0.0.1:0", ctx, backlog=4096)
            try:
                _ready(str(ln.addr), f"netpoll.tls ({backend or netpoll.BACKEND})")
                while True:
                    netpoll.go(handle(await ln.accept()))
            finally:
                ln.close()

        try:
            netpoll.run(main(), backend=backend)
        except KeyboardInterrupt:
            pass
        return

    import asyncio

    if kind == "uvloop":
        import uvloop

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.t = transport

            def data_received(self, data):
                self.t.write(data)

        async def amain():
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=ctx, backlog=4096)
            _ready("127.0.0.1:%d" % srv.sockets[0].getsockname()[1], "uvloop protocols + ssl")
            await asyncio.Event().wait()

        runner = uvloop.run
    else:
        async def handle(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def amain():
            srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=4096)
            _ready("127.0.0.1:%d" % srv.sockets[0].getsockname()[1], "asyncio streams + ssl")
            await asyncio.Event().wait()

        runner = asyncio.run
    try:
        runner(amain())
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------

SERVERS = ("netpoll", "asyncio", "uvloop", "go-1proc")
LABELS = {"netpoll": "netpoll.tls", "asyncio": "asyncio streams + ssl",
          "uvloop": "uvloop protocols + ssl", "go-1proc": "Go crypto/tls, GOMAXPROCS=1"}


def _servers(cert: str, key: str, want: Optional[list[str]], backend: Optional[str]):
    from netpoll.benchmark import build
    from netpoll.benchmark.runner import Server, _has

    def py(kind: str) -> Any:
        extra = ["--backend", backend] if backend else []
        return lambda: [sys.executable, "-P", "-m", "netpoll.benchmark.tls_bench", "serve", kind,
                        "--cert", cert, "--key", key, *extra]

    out = []
    for name in SERVERS:
        if want and name not in want:
            continue
        s = Server(name, LABELS[name], py(name) if name != "go-1proc" else
                   (lambda: [str(go_binary()), "server", "127.0.0.1:0", cert, key]))
        if name == "go-1proc":
            s.env = {"GOMAXPROCS": "1"}
            s.skip = None if build.go_tool() else "go is not on PATH"
        if name == "uvloop" and not _has("uvloop"):
            s.skip = "uvloop is not installed (pip install uvloop)"
        out.append(s)
    return out


def _go(args: list[str], timeout: float) -> dict:
    p = subprocess.run([str(go_binary()), *args], capture_output=True, text=True, timeout=timeout)
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"load generator exited {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}"}


def _idle_rss(srv: Any, n: int) -> dict:
    before = srv.rss_kb()
    p = subprocess.Popen([str(go_binary()), "idle", srv.addr, str(n)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line.startswith("idle-ready"):
            return {"error": f"idle phase failed: {line.strip() or p.stderr.read()[-400:]}"}
        time.sleep(0.3)
        after = srv.rss_kb()
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()
    return {"rss_before_kb": before, "rss_after_kb": after, "idle": n,
            "kb_per_conn": (after - before) / n}


def _summary(runs: list[dict]) -> dict:
    """Medians over the rounds of one measurement (runs with errors count
    as errors)."""
    ok = [r for r in runs if "error" not in r and r.get("events")]
    if not ok:
        return runs[-1] if runs else {}
    med = statistics.median
    return {"per_s": med(r["per_s"] for r in ok),
            "us_per_event": med(r["server_cpu_s"] / r["events"] * 1e6 for r in ok),
            "loadgen_cpu": med(r["loadgen_cpu_s"] / r["window_s"] for r in ok),
            "events": sum(r["events"] for r in ok), "errors": sum(r.get("errors", 0) for r in ok),
            "rounds": len(ok)}


def run_tls(conns: int = 64, warmup: float = 0.5, duration: float = 2.0, idle: int = 1000,
            servers: Optional[list[str]] = None, backend: Optional[str] = None,
            handshake_conns: int = 16, rounds: int = 3) -> dict:
    """Every measurement for every server, the servers alternating within
    each round; medians over the rounds."""
    from netpoll._tlscert import _with_cryptography, _with_openssl
    from netpoll.benchmark.runner import Running, machine

    go_binary()  # fail early, with the reason
    results: dict = {"config": {"conns": conns, "warmup": warmup, "duration": duration, "idle": idle,
                                "handshake_conns": handshake_conns, "rounds": rounds},
                     "machine": machine(), "servers": []}
    kinds = ("echo_64", "echo_16384", "handshake")
    with tempfile.TemporaryDirectory(prefix="netpoll-tls-bench-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        if not (_with_cryptography(cert, key, "localhost") or _with_openssl(cert, key, "localhost")):
            raise RuntimeError("no certificate can be made: install cryptography or openssl")
        todo = []
        for s in _servers(cert, key, servers, backend):
            row: dict = {"name": s.name, "label": s.label, "runs": {k: [] for k in kinds}}
            results["servers"].append(row)
            if s.skip:
                row["skip"] = s.skip
            else:
                todo.append((s, row))
        t = warmup + duration + 60
        for rnd in range(rounds):
            for s, row in todo:
                print(f"  round {rnd + 1}/{rounds}: {s.label} ...", file=sys.stderr, flush=True)
                with Running(s) as srv:
                    row["what"] = s.what
                    for size in (64, 16384):
                        row["runs"][f"echo_{size}"].append(_go(
                            ["echo", srv.addr, str(conns), str(size), str(warmup), str(duration),
                             str(srv.pid)], t))
                    row["runs"]["handshake"].append(_go(
                        ["handshake", srv.addr, str(handshake_conns), str(warmup), str(duration),
                         str(srv.pid)], t))
        for s, row in todo:
            for k in kinds:
                row[k] = _summary(row["runs"][k])
            if idle:
                # A fresh process, so that memory freed by earlier runs does
                # not absorb the idle conns' allocations.
                with Running(s) as srv:
                    row["idle"] = _idle_rss(srv, idle)
    return results


def _cell(r: dict, key: str, fmt: str) -> str:
    if not r or "error" in r:
        return "error" if r else "-"
    v = r.get(key)
    return "-" if v is None else format(v, fmt)


def table(result: dict, markdown: bool = False) -> str:
    from netpoll.benchmark.runner import render

    cfg = result["config"]
    headers = ["server", "64 B msg/s", "64 B us/msg", "16 KiB msg/s", "16 KiB us/msg",
               "handshakes/s", "hs us/each", "KiB/idle conn", "loadgen CPU"]
    rows = []
    by = {r["name"]: r for r in result["servers"]}
    for r in result["servers"]:
        if "skip" in r:
            rows.append([r["label"], f"skipped: {r['skip']}"] + [""] * (len(headers) - 2))
            continue
        cells = [r["label"]]
        for k in ("echo_64", "echo_16384", "handshake"):
            e = r.get(k, {})
            cells.append(_cell(e, "per_s", ",.0f"))
            cells.append(_cell(e, "us_per_event", ".1f"))
        cells.append(_cell(r.get("idle", {}), "kb_per_conn", ".1f"))
        cells.append(" / ".join(f"{r[k]['loadgen_cpu']:.0%}" for k in ("echo_64", "echo_16384")
                                if "loadgen_cpu" in r.get(k, {})) or "-")
        rows.append(cells)
    out = [render(headers, rows, markdown, right=set(range(1, len(headers))))]
    np_, uv, aio = by.get("netpoll"), by.get("uvloop"), by.get("asyncio")

    def ratio(a, b, k, field="per_s"):
        try:
            return a[k][field] / b[k][field]
        except (KeyError, TypeError, ZeroDivisionError):
            return None

    def cpu(r, k):
        return r.get(k, {}).get("us_per_event")

    lines = []
    if np_ and "skip" not in np_:
        for k, what in (("echo_64", "64 B"), ("echo_16384", "16 KiB")):
            for base, name, target in ((uv, "uvloop+ssl", 1.0), (aio, "asyncio+ssl", 1.3)):
                if base and "skip" not in base:
                    x = ratio(np_, base, k)
                    if x is not None:
                        lines.append(f"echo {what}: netpoll/{name} = {x:.2f}x (target >= {target}x: "
                                     f"{'met' if x >= target else 'missed'})")
            if uv and "skip" not in uv:
                a, b = cpu(np_, k), cpu(uv, k)
                if a and b:
                    lines.append(f"server CPU/msg {what}: netpoll {a:.1f} us vs uvloop {b:.1f} us "
                                 f"(target <= uvloop: {'met' if a <= b else 'missed'} by {a / b:.2f}x)")
        if aio and "skip" not in aio:
            x = ratio(np_, aio, "handshake")
            if x is not None:
                lines.append(f"handshakes/s: netpoll/asyncio = {x:.2f}x (target >= 1: {'met' if x >= 1 else 'missed'})")
            try:
                a, b = np_["idle"]["kb_per_conn"], aio["idle"]["kb_per_conn"]
                lines.append(f"RSS/idle conn: netpoll {a:.1f} KiB vs asyncio {b:.1f} KiB = {a / b:.2f} "
                             f"(target <= 0.33: {'met' if a / b <= 1 / 3 else 'missed'})")
            except (KeyError, TypeError, ZeroDivisionError):
                pass
    head = (f"TLS 1.3 echo, C={cfg['conns']}, warm-up {cfg['warmup']} s, {cfg['duration']} s measured, "
            f"medians of {cfg['rounds']} alternating rounds; "
            f"handshakes from {cfg['handshake_conns']} dialers; RSS with {cfg['idle']} idle conns. "
            "us/msg: server CPU (utime+stime) per message.")
    return "\n".join([head, *out, *lines])


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netpoll.benchmark.tls_bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("kind", choices=("netpoll", "asyncio", "uvloop"))
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--backend", default=None)
    add_arguments(p)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.kind, args.cert, args.key, args.backend)
        return 0
    return run_from_args(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="one round of shorter runs (0.3 s warm-up, 1 s measured, 300 idle)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--warmup", type=float, default=None)
    p.add_argument("--idle", type=int, default=0, help="idle conns for the RSS figure (default 1000)")
    p.add_argument("--servers", default=None, help=f"comma list of {', '.join(SERVERS)}")
    p.add_argument("--backend", default=None, help="netpoll's backend")
    p.add_argument("--json", metavar="FILE", default=None)
    p.add_argument("--markdown", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    from netpoll.benchmark import build

    # Also called by `netpoll bench --tls` with the echo benchmark's
    # arguments: --conns is a list there, --idle 0 means "not asked".
    quick = args.quick
    dur = args.duration if args.duration is not None else (1.0 if quick else 2.0)
    warm = args.warmup if args.warmup is not None else (0.3 if quick else 0.5)
    idle = args.idle or (300 if quick else 1000)
    conns = args.conns[0] if isinstance(args.conns, list) else (args.conns or 64)
    want = [w.strip() for w in args.servers.split(",")] if args.servers else None
    try:
        rounds = args.rounds or (1 if quick else 3)
        res = run_tls(conns, warm, dur, idle, want, getattr(args, "backend", None), rounds=rounds)
    except build.BuildError as e:
        print(f"netpoll bench --tls: {e}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(table(res, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
