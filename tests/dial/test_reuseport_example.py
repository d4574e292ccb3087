"""examples/reuseport_workers.py run as a user would: N processes, each with
its own runtime and SO_REUSEPORT listener on one port, against plain
blocking socket clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import netpoll

from support import readline

EXAMPLE = Path(__file__).parents[2] / "examples" / "reuseport_workers.py"


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_workers_share_one_port(backend_name):
    # The example imports the netpoll these tests import, wherever it is.
    pkg_root = str(Path(netpoll.__file__).parents[1])
    env = dict(os.environ, NETPOLL_BACKEND=backend_name,
               PYTHONPATH=os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--workers", "2", "--port", "0",
                             "--backend", backend_name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = readline(proc, 15)
        m = re.search(r"serving 127\.0\.0\.1:(\d+) with 2 workers \(backend (\w+)\)", line)
        if not m:
            proc.kill()
            pytest.fail(f"no address from the example: {line!r}, stderr {proc.communicate()[1]!r}")
        port = int(m.group(1))
        assert m.group(2) == backend_name
        pids = set()
        for i in range(64):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                f = s.makefile("rb")
                hello = f.readline()
                mm = re.fullmatch(rb"worker (\d+)\n", hello)
                assert mm, hello
                pids.add(int(mm.group(1)))
                s.sendall(b"echo %d" % i)
                assert f.read(len(b"echo %d" % i)) == b"echo %d" % i
                f.close()
        # 64 connections, each with its own source port: 2**-63 that the
        # kernel sent them all to one worker.
        assert len(pids) == 2 and proc.pid not in pids, pids
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        for pid in pids:  # every worker is gone
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        else:
            proc.stdout.close()
            proc.stderr.close()
