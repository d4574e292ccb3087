"""Every descriptor the net layer creates is non-blocking and close-on-exec,
and a child process inherits none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netpoll import net

from support import run
from support.net import conn_pair, fd_flags, stream_pair


async def open_everything(tmp_path):
    """One of each kind of descriptor: name -> object with fileno()."""
    fds = {}
    ln, c, s = await stream_pair()
    fds.update(listener=ln, dialed=c, accepted=s)
    fds["udp"] = net.listen_packet("udp", "127.0.0.1:0")
    fds["udp_dialed"] = await net.dial("udp", fds["udp"].local_addr)
    path = str(tmp_path / "u")
    uln, uc, us = await stream_pair("unix", path)
    fds.update(unix_listener=uln, unix_dialed=uc, unix_accepted=us)
    fds["unixgram"] = net.listen_packet("unixgram", str(tmp_path / "g"))
    return fds


def close_everything(fds) -> None:
    for fd in fds.values():
        fd.close()


def test_all_descriptors_nonblocking_and_cloexec(backend_name, tmp_path):
    async def main():
        fds = await open_everything(tmp_path)
        try:
            for name, fd in fds.items():
                nonblock, cloexec = fd_flags(fd.fileno())
                assert nonblock, f"{name} is blocking"
                assert cloexec, f"{name} is inheritable"
        finally:
            close_everything(fds)

    run(backend_name, main)


CHILD = r"""
import json, os
links = {}
for n in os.listdir("/proc/self/fd"):
    try:
        links[n] = os.readlink("/proc/self/fd/" + n)
    except OSError:
        pass
print(json.dumps(links))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_child_process_inherits_no_descriptor(backend_name, tmp_path):
    async def main():
        fds = await open_everything(tmp_path)
        try:
            ours = {os.readlink(f"/proc/self/fd/{fd.fileno()}"): name for name, fd in fds.items()}
            assert all(k.startswith("socket:") for k in ours), ours
            # A control: an inheritable descriptor does reach the child.
            r, w = os.pipe()
            os.set_inheritable(r, True)
            try:
                out = subprocess.run([sys.executable, "-c", CHILD], close_fds=False,
                                     capture_output=True, text=True, timeout=20, check=True).stdout
            finally:
                os.close(r)
                os.close(w)
            child = set(json.loads(out).values())
            assert any(link.startswith("pipe:") for link in child), "control pipe not inherited"
            leaked = {ours[k] for k in ours if k in child}
            assert not leaked, f"inherited by the child: {sorted(leaked)}"
        finally:
            close_everything(fds)

    run(backend_name, main)


def test_fileno_matches_a_live_socket(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            import socket as _socket

            for fd in (ln, c, s):
                with _socket.socket(fileno=os.dup(fd.fileno())) as dup:
                    assert dup.type == _socket.SOCK_STREAM
            assert len({ln.fileno(), c.fileno(), s.fileno()}) == 3

    run(backend_name, main)
