"""User-space instructions per echoed message, counted by callgrind.

Each server runs under ``valgrind --tool=callgrind`` twice, driven by the C
load generator with an exact message count (``loadgen --messages N``), the
second time with more messages. The server starts uninstrumented (start-up
under full instrumentation takes a Python server 15 s or more) and
``callgrind_control -i on`` switches counting on once it is listening. The
difference of the two instruction
totals, divided by the difference of the message counts, is what one
echoed message costs the server in user space: connection set-up and
shut-down are the same in both runs and cancel. The count does not
depend on the machine's speed or load, so two servers compare to within a
fraction of a percent where wall-clock runs scatter by 10-20 %.

callgrind sees user space only: the kernel's share of a message (the TCP
work, most of the wall-clock cost) is not in these figures. System calls per
message (``--syscalls``) and the wall-clock runs show that side.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import netpoll
from netpoll.benchmark import runner

BASELINE = "uvloop-protocols"
DEFAULT_MESSAGES = (2000, 10000)
DEFAULT_CONNS = 16
# Under callgrind a Python server starts 20-50 times slower than natively.
READY_TIMEOUT = 180.0
EXIT_TIMEOUT = 120.0
RESEND = 30.0  # seconds between SIGTERMs while a server has not exited


class Unavailable(RuntimeError):
    """valgrind (or callgrind_annotate) is not installed here."""


def valgrind() -> str:
    exe = shutil.which("valgrind")
    if exe is None:
        raise Unavailable("valgrind is not installed (e.g. apt-get install valgrind): "
                          "--instructions counts with callgrind")
    return exe


def check() -> None:
    """Raise Unavailable, saying what to install, unless valgrind and
    callgrind_control are here."""
    valgrind()
    _tool("callgrind_control")


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise Unavailable(f"{name} is not on PATH (it comes with valgrind)")
    return exe


def servers(backend: Optional[str] = None, bufsize: int = 65536) -> list[runner.Server]:
    """The servers counted, in table order, with a skip reason where a
    library is missing."""
    b = backend or netpoll.BACKEND
    known = {s.name: s for s in runner.all_servers(bufsize)}
    out = [
        runner.Server("netpoll-echo", "netpoll, `python -m netpoll echo`",
                      runner._py("netpoll-echo", "--backend", b, "--bufsize", str(bufsize)), backend=b),
        runner.Server("netpoll", "netpoll, the benchmark's server",
                      runner._py("netpoll", "--backend", b, "--bufsize", str(bufsize)), backend=b),
    ]
    for name in ("uvloop-protocols", "uvloop-streams", "asyncio-protocols", "asyncio-buffered",
                 "asyncio-streams", "selectors", "trio", "gevent"):
        s = known[name]
        out.append(runner.Server(s.name, s.label, s.argv, skip=s.skip))
    return out


def parse_messages(spec: str) -> tuple[int, int]:
    """'2000,10000' -> (2000, 10000): two counts, the second larger."""
    try:
        a, b = (int(x) for x in spec.split(","))
    except ValueError:
        raise ValueError(f"--messages wants two counts, e.g. 2000,10000, not {spec!r}") from None
    if not 0 < a < b:
        raise ValueError(f"--messages wants two counts 0 < A < B, not {spec!r}")
    return a, b


def totals(path: str) -> int:
    """The instruction total (Ir) of one callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no summary line (did the server exit cleanly?)")


def stop_under_valgrind(proc: subprocess.Popen, name: str) -> None:
    """SIGTERM, then again every RESEND seconds until EXIT_TIMEOUT: on a
    loaded host a server idle in a wait with no timeout (the selectors loop)
    was seen, now and then, to sit out a single SIGTERM under valgrind; a
    second one ends the wait. A server that exits cleanly on the first is
    never sent another."""
    end = time.monotonic() + EXIT_TIMEOUT
    while True:
        proc.terminate()
        try:
            proc.wait(min(RESEND, max(0.0, end - time.monotonic())))
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                raise RuntimeError(f"{name} did not exit within {EXIT_TIMEOUT:.0f} s of SIGTERM") from None


def count_one(server: runner.Server, messages: int, conns: int, size: int, outdir: str) -> dict:
    """One run under callgrind: {"instructions", "messages", "file"}."""
    out = os.path.join(outdir, f"callgrind.{server.name}.{messages}")
    vg = [valgrind(), "-q", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    # A fixed hash seed: str hashes decide dict probe lengths, and so a few
    # instructions per lookup.
    wrapped = runner.Server(server.name, server.label, lambda: vg + server.argv(),
                            env={**server.env, "PYTHONHASHSEED": "0"})
    srv = runner.Running(wrapped, timeout=READY_TIMEOUT)
    try:
        on = subprocess.run([_tool("callgrind_control"), "--instr=on", str(srv.pid)], capture_output=True,
                            text=True, timeout=60)
        if on.returncode != 0 or "OK" not in on.stdout:
            raise RuntimeError(f"callgrind_control --instr=on failed: {(on.stderr or on.stdout).strip()[-300:]}")
        argv = [str(runner.build.loadgen()), "--host", srv.host, "--port", str(srv.port), "--conns", str(conns),
                "--size", str(size), "--messages", str(messages)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        r = runner._parse(p.stdout, p.stderr, p.returncode)
        if "error" in r:
            raise RuntimeError(r["error"])
        if r.get("messages") != messages:
            raise RuntimeError(f"{r.get('messages')} of {messages} messages echoed")
        stop_under_valgrind(srv.proc, server.name)
        if srv.proc.returncode != 0:
            raise RuntimeError(f"{server.name} exited {srv.proc.returncode}: {srv.stderr()}")
    finally:
        srv.stop()
    return {"instructions": totals(out), "messages": messages, "file": out}


def measure(server: runner.Server, counts: tuple[int, int], conns: int, size: int, outdir: str) -> dict:
    small = count_one(server, counts[0], conns, size, outdir)
    big = count_one(server, counts[1], conns, size, outdir)
    dm = big["messages"] - small["messages"]
    return {"runs": [small, big], "per_msg": (big["instructions"] - small["instructions"]) / dm}


def run_instructions(servers: list[runner.Server], counts: tuple[int, int] = DEFAULT_MESSAGES,
                     conns: int = DEFAULT_CONNS, size: int = 64, keep: Optional[str] = None,
                     top: int = 0, progress: Optional[bool] = None) -> dict:
    check()
    runnable = [s for s in servers if s.skip is None]
    prog = runner.Progress(len(runnable), progress)
    rows: list[dict[str, Any]] = []
    tmp = None
    if keep:
        os.makedirs(keep, exist_ok=True)
        outdir = keep
    else:
        tmp = tempfile.TemporaryDirectory(prefix="netpoll-callgrind-")
        outdir = tmp.name
    try:
        for s in runnable:
            prog.show(f"callgrind: {s.name}")
            row: dict[str, Any] = {"server": s.name, "label": s.label}
            try:
                row.update(measure(s, counts, conns, size, outdir))
                if top:
                    row["functions"] = per_function(row["runs"][0]["file"], row["runs"][1]["file"],
                                                    counts[1] - counts[0], top)
            except Exception as e:
                row["failed"] = str(e)
            rows.append(row)
            prog.step()
    finally:
        prog.clear()
        if tmp is not None:
            tmp.cleanup()
    base = next((r["per_msg"] for r in rows if r["server"] == BASELINE and "per_msg" in r), None)
    for r in rows:
        if base and "per_msg" in r:
            r["x_uvloop_protocols"] = r["per_msg"] / base
        for run in r.get("runs", []):
            if not keep:
                run.pop("file", None)
    return {"machine": runner.machine(), "conns": conns, "size": size, "messages": list(counts),
            "rows": rows, "skipped": {s.name: s.skip for s in servers if s.skip}}


# -- any program: a workload at two sizes ------------------------------------


def gate() -> None:
    """A counted program calls this when its set-up is done: it says READY
    and waits for a line on stdin, sent once counting is on."""
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    sys.stdin.readline()


def count_program(argv: list[str], outdir: str, tag: str, timeout: float = 600.0) -> int:
    """Run ``argv`` (a program that calls gate()) under callgrind, counting
    from its gate to its exit; the instruction total."""
    out = os.path.join(outdir, f"callgrind.{tag}")
    vg = [valgrind(), "-q", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    p = subprocess.Popen(vg + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    try:
        line = runner.readline(p.stdout, READY_TIMEOUT)
        if line.strip() != "READY":
            raise RuntimeError(f"{tag}: no READY from {' '.join(argv)}: {line.strip()}")
        on = subprocess.run([_tool("callgrind_control"), "--instr=on", str(p.pid)], capture_output=True,
                            text=True, timeout=60)
        if on.returncode != 0 or "OK" not in on.stdout:
            raise RuntimeError(f"callgrind_control --instr=on failed: {(on.stderr or on.stdout).strip()[-300:]}")
        _, err = p.communicate(b"go\n", timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{tag} exited {p.returncode}: {err.decode(errors='replace').strip()[-500:]}")
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return totals(out)


def per_unit(argv_for, counts: tuple[int, int], outdir: str, tag: str) -> dict:
    """Instructions per unit of work: ``argv_for(n)`` runs n units; the
    difference of the runs at the two counts, divided by their difference."""
    a = count_program(argv_for(counts[0]), outdir, f"{tag}.{counts[0]}")
    b = count_program(argv_for(counts[1]), outdir, f"{tag}.{counts[1]}")
    return {"runs": [{"n": counts[0], "instructions": a}, {"n": counts[1], "instructions": b}],
            "per_unit": (b - a) / (counts[1] - counts[0])}


_ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s*$")


def _short(fn: str) -> str:
    # "/long/build/path/Objects/abstract.c:PyIter_Send [/lib/libpython.so]" -> "abstract.c:PyIter_Send"
    fn = re.sub(r"\s+\[[^\]]*\]$", "", fn)
    where, _, name = fn.rpartition(":")
    return f"{os.path.basename(where)}:{name}" if where else name


def _self_costs(path: str) -> dict[str, int]:
    # callgrind_annotate's per-function table: "  1,234 (0.5%)  file:function [object]",
    # from the header line to the first blank line.
    p = subprocess.run([_tool("callgrind_annotate"), "--threshold=100", "--inclusive=no", "--auto=no", path],
                       capture_output=True, text=True, check=True)
    out: dict[str, int] = {}
    started = False
    for line in p.stdout.splitlines():
        if not started:
            started = line.strip().startswith("Ir") and "file:function" in line
            continue
        if not line.strip():
            if out:
                break
            continue
        m = _ANNOTATE_LINE.match(line)
        if m and not set(m.group(1)) <= {","}:
            fn = _short(m.group(2))
            out[fn] = out.get(fn, 0) + int(m.group(1).replace(",", ""))
    return out


def per_function(small: str, big: str, dm: int, top: int) -> list[tuple[str, float]]:
    """The functions that cost most per message: self instructions, by the
    same two-run difference as the total."""
    a, b = _self_costs(small), _self_costs(big)
    diff = {fn: (b.get(fn, 0) - a.get(fn, 0)) / dm for fn in set(a) | set(b)}
    return sorted(((fn, v) for fn, v in diff.items() if v > 0), key=lambda x: -x[1])[:top]


def instructions_table(result: dict, markdown: bool = False) -> str:
    a, b = result["messages"]
    head = (f"user-space instructions per echoed message (callgrind; {result['conns']} connections, "
            f"{result['size']}-byte messages; the difference of a {a:,}- and a {b:,}-message run, "
            f"counted from the moment the server listens; Python {result['machine']['python']})")
    headers = ["server", "instructions/msg", "× uvloop-p", f"run of {a:,}", f"run of {b:,}"]
    rows = []
    notes = []
    for r in result["rows"]:
        if "failed" in r:
            rows.append([r["label"], "failed: " + r["failed"][:80], "", "", ""])
            continue
        rows.append([r["label"], f"{r['per_msg']:,.0f}", runner._fmt(r.get("x_uvloop_protocols"), ".2f"),
                     f"{r['runs'][0]['instructions']:,}", f"{r['runs'][1]['instructions']:,}"])
    for name, why in result["skipped"].items():
        notes.append(f"{'- ' if markdown else ''}{name}: {why}")
    text = head + "\n\n" + runner.render(headers, rows, markdown, right={1, 2, 3, 4})
    text += ("\n\ncallgrind counts user space only; the kernel's share of each message (most of its "
             "wall-clock cost) shows in --syscalls and the wall-clock runs.")
    for r in result["rows"]:
        if r.get("functions"):
            text += f"\n\n{r['label']}: self instructions per message, by function\n"
            text += runner.render(["instructions/msg", "function"],
                                  [[f"{v:,.0f}", fn] for fn, v in r["functions"]], markdown, right={0})
    if notes:
        text += "\n\n" + "\n".join(notes)
    return text
