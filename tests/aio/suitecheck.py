"""The parent side of the suite runners (cpython_suite.py, uvloop_suite.py):
run one module in a child, then judge it.

As CPython's own test runner does (``python -m test --rerun``), a test that
fails is run once more, alone in a fresh child: many of these tests time
real sockets and threads, and a loaded host can fail one that passes on its
own. A test that passes alone is reported as flaky and counted as a pass;
one that fails again fails the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
CONFORMANCE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "aio_conformance.md")


def run_child(argv: Sequence[str], module: str, tests: Sequence[str] = ()) -> tuple[list[dict], dict]:
    """The runner ``argv`` on ``module`` (only ``tests``, if given): its rows
    and the module's counts."""
    proc = subprocess.run(
        [sys.executable, *argv, module, *(a for t in tests for a in ("--test", t))],
        capture_output=True, text=True, timeout=850, cwd=HERE)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    hung = [r for r in rows if r.get("status") == "hang"]
    assert not hung, f"{hung[0]['test']} hung; child stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and rows and "summary" in rows[-1], (
        f"runner exited {proc.returncode}; stderr:\n{proc.stderr[-3000:]}")
    return rows[:-1], rows[-1]["summary"][module]


def check_module(argv: Sequence[str], module: str, backend: str, floor: int) -> None:
    """The module passes at least ``floor`` tests, hangs nowhere, and every
    test that fails, also when run again alone, is listed in
    docs/aio_conformance.md."""
    rows, counts = run_child(argv, module)
    documented = open(CONFORMANCE, encoding="utf-8").read()
    failed = [r for r in rows if r["status"] == "fail" and r["test"] not in documented]
    if failed:
        again, _ = run_child(argv, module, [r["test"] for r in failed])
        passed = {r["test"] for r in again if r["status"] == "pass"}
        for r in failed:
            if r["test"] in passed:
                print(f"flaky: {r['test']} failed in the module's run ({r['why']}) and passed alone")
                r["status"] = "pass"
                counts["pass"] += 1
                counts["fail"] -= 1
    undocumented = [r["test"] for r in rows if r["status"] == "fail" and r["test"] not in documented]
    assert not undocumented, f"failing and not listed in docs/aio_conformance.md: {undocumented}"
    assert counts["pass"] >= floor, (
        f"{module} on {backend}: {counts} (floor {floor} passes); failures: "
        + "; ".join(f"{r['test']}: {r['why']}" for r in rows if r["status"] == "fail"))
