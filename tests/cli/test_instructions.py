"""python -m netpoll bench --instructions: callgrind counts, run as a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

CMD = [sys.executable, "-m", "netpoll", "bench", "--instructions"]
HAVE_VALGRIND = shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None
# A Python server under callgrind is slow to start on a busy machine: the
# subprocess timeouts below bound these tests, not the suite's usual limit.
LIMIT = 600


@pytest.fixture(autouse=True)
def hang_guard():
    # Overrides the suite's 20 s guard for this module only.
    def on_alarm(signum, frame):
        raise TimeoutError(f"test still running after {LIMIT} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def bench(*args, env=None, timeout=LIMIT - 30):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(CMD + list(args), capture_output=True, text=True, env=e, timeout=timeout)


@pytest.mark.skipif(not HAVE_VALGRIND, reason="valgrind (with callgrind_control) is not installed")
def test_counts_are_positive_and_the_two_runs_differ(backend_name, tmp_path):
    out = tmp_path / "i.json"
    p = bench("--servers", "netpoll-echo,selectors", "--messages", "100,400", "--conns", "4",
              "--json", str(out), env={"NETPOLL_BACKEND": backend_name})
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["messages"] == [100, 400] and res["conns"] == 4 and res["size"] == 64
    rows = {r["server"]: r for r in res["rows"]}
    assert set(rows) == {"netpoll-echo", "selectors"}
    for name, r in rows.items():
        small, big = r["runs"]
        assert (small["messages"], big["messages"]) == (100, 400)
        assert 0 < small["instructions"] < big["instructions"], r
        assert r["per_msg"] == pytest.approx((big["instructions"] - small["instructions"]) / 300)
        # An echo costs a Python server thousands of instructions, not tens
        # and not millions: the count is per message.
        assert 500 < r["per_msg"] < 500_000, r
    # The table: a header, one row per server with its count as printed.
    assert "user-space instructions per echoed message" in p.stdout
    for r in rows.values():
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(r["label"]))
        assert f"{r['per_msg']:,.0f}" in line
        assert f"{r['runs'][1]['instructions']:,}" in line
    assert "user space only" in p.stdout and "--syscalls" in p.stdout
    # No uvloop row among the chosen servers: no ratio to it either.
    assert all("x_uvloop_protocols" not in r for r in rows.values())


def test_without_valgrind_it_says_so_in_one_line(tmp_path):
    # A PATH with neither valgrind nor anything else on it.
    p = bench(env={"PATH": str(tmp_path)}, timeout=60)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "valgrind is not installed" in lines[0], p.stderr


@pytest.mark.parametrize("spec", ["400,100", "100", "a,b", "0,10"])
def test_bad_message_counts_are_named(spec):
    p = bench("--messages", spec, timeout=60)
    assert p.returncode == 2
    assert "--messages" in p.stderr and spec in p.stderr, p.stderr


def test_one_connection_count_at_a_time():
    p = bench("--conns", "4,8", timeout=60)
    assert p.returncode == 2
    assert "one --conns count" in p.stderr, p.stderr


IGNORES_FIRST = ("import signal, sys, time\n"
                 "n = []\n"
                 "signal.signal(signal.SIGTERM, lambda *a: n.append(1) if len(n) < {k} else sys.exit(0))\n"
                 "print('up', flush=True)\n"
                 "while True: time.sleep(0.01)\n")


def _sleeper(k: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", IGNORES_FIRST.format(k=k)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "up\n"
    return p


def test_stop_sends_sigterm_again_to_a_server_that_sat_one_out(monkeypatch):
    from netpoll.benchmark import instructions
    monkeypatch.setattr(instructions, "RESEND", 0.2)
    p = _sleeper(1)
    try:
        instructions.stop_under_valgrind(p, "sleeper")
        assert p.returncode == 0
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_stop_gives_up_with_a_clear_error(monkeypatch):
    from netpoll.benchmark import instructions
    monkeypatch.setattr(instructions, "RESEND", 0.1)
    monkeypatch.setattr(instructions, "EXIT_TIMEOUT", 0.5)
    p = _sleeper(10**6)
    try:
        with pytest.raises(RuntimeError, match="sleeper did not exit within 0 s of SIGTERM"):
            instructions.stop_under_valgrind(p, "sleeper")
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
