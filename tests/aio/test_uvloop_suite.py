"""uvloop's own test suite (from its sdist), its asyncio classes run on netpoll.aio.

The sdist matching the installed uvloop is found in NETPOLL_UVLOOP_SDIST (a
folder holding its ``tests``), or in a cache folder, or fetched once into
that cache with ``pip download``; without it the tests skip and say why.
Each module must pass at least its floor, hang nowhere, and every failure
must be listed in docs/aio_conformance.md.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFORMANCE = os.path.join(ROOT, "docs", "aio_conformance.md")
CACHE = os.environ.get("NETPOLL_TEST_CACHE",
                       os.path.join(os.path.expanduser("~"), ".cache", "netpoll-tests"))

FLOORS = {
    "test_base": 39,
    "test_dns": 28,
    "test_executors": 2,
    "test_signals": 10,
    "test_tcp": 29,
    "test_unix": 16,
    "test_sockets": 9,
    "test_udp": 8,
    "test_pipes": 6,
    # 3.13 skips one of uvloop's process tests that 3.11 and 3.12 run.
    "test_process": 39 if sys.version_info < (3, 13) else 38,
    "test_context": 12,
}


def _sdist_tests() -> str:
    uvloop = pytest.importorskip("uvloop")
    pytest.importorskip("OpenSSL", reason="uvloop's test_tcp needs pyOpenSSL")
    pytest.importorskip("psutil", reason="uvloop's test_process needs psutil")
    env = os.environ.get("NETPOLL_UVLOOP_SDIST")
    if env:
        return os.path.join(env, "tests")
    ver = uvloop.__version__
    root = os.path.join(CACHE, f"uvloop-{ver}")
    if not os.path.isdir(os.path.join(root, "tests")):
        os.makedirs(CACHE, exist_ok=True)
        if not glob.glob(os.path.join(CACHE, f"uvloop-{ver}.tar.gz")):
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-binary", "uvloop",
                 "--no-deps", "--no-build-isolation", "-d", CACHE, f"uvloop=={ver}"],
                capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                pytest.skip(f"uvloop {ver} sdist not available: {proc.stderr.strip()[-300:]}")
        with tarfile.open(os.path.join(CACHE, f"uvloop-{ver}.tar.gz")) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(f"uvloop-{ver}/tests/")]
            tf.extractall(CACHE, members=members, filter="data")
    return os.path.join(root, "tests")


@pytest.fixture(scope="module")
def uvloop_tests():
    return _sdist_tests()


@pytest.mark.suite
@pytest.mark.parametrize("module", sorted(FLOORS))
def test_uvloop_module(module, backend_name, uvloop_tests):
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "uvloop_suite.py"), "--tests", uvloop_tests,
         "--backend", backend_name, "--timeout", "120", module],
        capture_output=True, text=True, timeout=850, cwd=HERE)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    hung = [r for r in rows if r.get("status") == "hang"]
    assert not hung, f"{hung[0]['test']} hung; child stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and rows and "summary" in rows[-1], (
        f"runner exited {proc.returncode}; stderr:\n{proc.stderr[-3000:]}")
    counts = rows[-1]["summary"][module]
    documented = open(CONFORMANCE, encoding="utf-8").read()
    undocumented = [r["test"] for r in rows[:-1]
                    if r["status"] == "fail" and r["test"] not in documented]
    assert not undocumented, f"failing and not listed in docs/aio_conformance.md: {undocumented}"
    assert counts["pass"] >= FLOORS[module], (
        f"{module} on {backend_name}: {counts} (floor {FLOORS[module]} passes); failures: "
        + "; ".join(f"{r['test']}: {r['why']}" for r in rows[:-1] if r["status"] == "fail"))
