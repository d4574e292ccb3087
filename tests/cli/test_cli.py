"""python -m netpoll: info, echo and bench, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

import netpoll
from netpoll.benchmark import build

from support import readline

CMD = [sys.executable, "-m", "netpoll"]


def run(*args, env=None, timeout=15):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(CMD + list(args), capture_output=True, text=True, env=e, timeout=timeout)


def test_info_is_the_default_and_names_the_backend():
    for argv in ((), ("info",)):
        p = run(*argv)
        assert p.returncode == 0, p.stderr
        assert f"backend: {netpoll.BACKEND}" in p.stdout
        assert f"netpoll {netpoll.__version__}" in p.stdout
        for name in ("epoll", "kqueue", "poll", "select"):
            assert re.search(rf"^{name}\*?\s+(yes|no)\b", p.stdout, re.M), p.stdout


@pytest.mark.skipif("select" not in netpoll.available_backends(), reason="select is not available here")
def test_netpoll_backend_variable_chooses_select():
    p = run(env={"NETPOLL_BACKEND": "select"})
    assert p.returncode == 0, p.stderr
    assert "backend: select" in p.stdout


def test_an_unknown_backend_fails_naming_the_variable_and_the_value():
    p = run(env={"NETPOLL_BACKEND": "nope"})
    assert p.returncode != 0
    assert "NETPOLL_BACKEND" in p.stderr and "nope" in p.stderr


@pytest.mark.parametrize("argv", [(), ("info",), ("echo",), ("bench",)])
def test_every_command_has_help(argv):
    p = run(*argv, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: python -m netpoll")


def test_echo_backend_must_exist():
    p = run("echo", "--port", "0", "--backend", "nope")
    assert p.returncode == 2
    assert "nope" in p.stderr


def test_echo_serves_until_sigterm():
    proc = subprocess.Popen(CMD + ["echo", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = readline(proc, 10)
        m = re.search(r"listening on (\S+):(\d+) \(backend (\w+)\)", line)
        assert m, line
        host, port, backend = m.group(1), int(m.group(2)), m.group(3)
        assert backend == netpoll.BACKEND
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"hello, netpoll")
            got = b""
            while len(got) < 14:
                chunk = s.recv(100)
                assert chunk
                got += chunk
            assert got == b"hello, netpoll"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert b"stopped" in out
        # The listener is closed: nothing accepts on the port any more.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


needs_cc = pytest.mark.skipif(not sys.platform.startswith("linux") or build.c_compiler() is None,
                              reason="the benchmark needs Linux and a C compiler")


@needs_cc
def test_bench_against_the_netpoll_server(tmp_path):
    out = tmp_path / "bench.json"
    p = run("bench", "--servers", f"netpoll-{netpoll.BACKEND}", "--conns", "1", "--warmup", "0.2",
            "--duration", "0.5", "--rounds", "1", "--json", str(out), env={"NETPOLL_CACHE": str(tmp_path)},
            timeout=18)
    assert p.returncode == 0, p.stderr
    assert "msgs/s" in p.stdout and "netpoll" in p.stdout
    result = json.loads(out.read_text())
    rows = [r for r in result["summary"] if r["server"] == f"netpoll-{netpoll.BACKEND}"]
    assert len(rows) == 1, result
    row = rows[0]
    for key in ("msgs_per_s", "p50_us", "p99_us", "server_us_per_msg"):
        assert row[key] > 0, (key, row)
    assert row["conns"] == 1
    assert not result["errors"]


@needs_cc
def test_bench_idle_connections(tmp_path):
    out = tmp_path / "idle.json"
    p = run("bench", "--idle", "20", "--active", "2", "--servers", f"netpoll-{netpoll.BACKEND}",
            "--warmup", "0.1", "--duration", "0.3", "--json", str(out), env={"NETPOLL_CACHE": str(tmp_path)},
            timeout=18)
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["idle"]["summary"][0]
    assert row["idle"] == 20, row
    assert row["msgs_per_s"] > 0 and row["msgs_per_s_no_idle"] > 0, row
    assert row["rss_per_idle_conn_kb"] is not None


def test_bench_rejects_an_unknown_server():
    p = run("bench", "--servers", "nosuchserver", "--quick")
    assert p.returncode != 0
    assert "nosuchserver" in p.stderr
