"""uvloop's own test suite (from its sdist), its asyncio classes run on netpoll.aio.

The sdist matching the installed uvloop is found in NETPOLL_UVLOOP_SDIST (a
folder holding its ``tests``), or in a cache folder, or fetched once into
that cache with ``pip download``; without it the tests skip and say why.
Each module must pass at least its floor, hang nowhere, and every failure
(run again alone first: suitecheck.py) must be listed in
docs/aio_conformance.md.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile

import pytest

from suitecheck import HERE, check_module
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
    argv = [os.path.join(HERE, "uvloop_suite.py"), "--tests", uvloop_tests,
            "--backend", backend_name, "--timeout", "120"]
    check_module(argv, module, backend_name, FLOORS[module])
