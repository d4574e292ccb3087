"""`netpoll bench --tls` end to end, briefly (figures are not checked:
only that every measurement produced one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import netpoll


def test_bench_tls_netpoll_only(backend_name, tmp_path):
    if not shutil.which("go"):
        pytest.skip("netpoll bench --tls needs go on PATH for its load generator (apt-get install golang-go)")
    root = os.path.dirname(os.path.dirname(netpoll.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               NETPOLL_BACKEND=backend_name)
    out = tmp_path / "tls.json"
    p = subprocess.run([sys.executable, "-m", "netpoll", "bench", "--tls", "--servers", "netpoll",
                        "--warmup", "0.1", "--duration", "0.3", "--idle", "50",
                        "--json", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert "netpoll.tls" in p.stdout and "handshakes/s" in p.stdout
    res = json.loads(out.read_text())
    (row,) = res["servers"]
    assert row["what"] == f"netpoll.tls ({backend_name})"
    for k in ("echo_64", "echo_16384", "handshake"):
        assert "error" not in row[k], row[k]
        assert row[k]["events"] > 0 and row[k]["errors"] == 0
    assert row["idle"]["idle"] == 50 and row["idle"]["rss_after_kb"] > 0
