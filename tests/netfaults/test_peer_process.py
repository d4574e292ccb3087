"""Faults of the peer process: the peer is CPython's own blocking sockets in
a process of its own, in the client namespace, talking to a netpoll server
across the path.

- SIGKILL in the middle of a transfer: the kernel closes the peer's socket
  (a FIN when its receive queue is empty, a RST when it held unread data);
  the netpoll side's read sees an EOF or a reset, its write a reset or a
  broken pipe, never a hang (a SAFETY deadline no step should reach turns
  a hang into a failure).
- SIGSTOP, then SIGCONT: while the peer is stopped, a read with a deadline
  fails at the deadline; after SIGCONT a new read with a new deadline gets
  the peer's answer.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import netpoll
from netpoll import net

from nfutil import SLACK, addr, listen, read_full, run, start_peer, stop_peer

SAFETY = 10.0
PATTERN = bytes(range(256)) * 256  # what a sending peer sends, over and over


async def accept_peer(path, mode):
    ln = listen(path)
    p = start_peer(path, addr(path, ln), mode)
    try:
        # The kernel completes the handshake without accept(); the line
        # says the peer is connected (or is empty if it died).
        line = p.stdout.readline()
        assert line == b"connected\n", f"peer: {line!r} {p.stderr.read()!r}"
        ln.set_deadline(netpoll.now() + SAFETY)
        conn = await ln.accept()
    except BaseException:
        ln.close()
        stop_peer(p)
        raise
    return ln, conn, p


def wait_state(pid: int, state: str) -> None:
    """Until /proc says the process is in ``state`` (T: stopped)."""
    limit = time.monotonic() + SAFETY
    while time.monotonic() < limit:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == state:
                return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never reached state {state}")


@pytest.mark.parametrize("direction", ["peer sends", "peer receives"])
def test_sigkill_of_the_peer_mid_transfer_is_an_error_or_eof(backend_name, path, direction):
    async def main():
        ln, conn, p = await accept_peer(path, "send" if direction == "peer sends" else "recv")
        try:
            conn.set_deadline(netpoll.now() + SAFETY)
            moved = 0
            killed_at = None
            buf = bytearray(65536)
            chunk = b"k" * 65536
            outcome = None
            while outcome is None:
                if killed_at is None and moved >= 1 << 20:
                    # Let the peer fill the socket buffers first: the kill
                    # then comes with data in flight.
                    await netpoll.sleep(0.05)
                    p.kill()
                    p.wait(timeout=SAFETY)
                    killed_at = netpoll.now()
                    moved_at_kill = moved
                try:
                    if direction == "peer sends":
                        n = await conn.read(buf)
                        if n == 0:
                            outcome = "EOF"
                        assert buf[:n] == (PATTERN * 2)[moved % len(PATTERN):][:n], f"corrupt at byte {moved}"
                    else:
                        n = await conn.write(chunk)
                    moved += n
                except (ConnectionResetError, BrokenPipeError) as e:
                    assert isinstance(e, net.OpError), repr(e)
                    outcome = type(e.err).__name__
                    assert e.op == ("read" if direction == "peer sends" else "write"), repr(e)
                    allowed = (ConnectionResetError,) if direction == "peer sends" else (
                        ConnectionResetError, BrokenPipeError)
                    assert isinstance(e, allowed), repr(e)
            assert killed_at is not None, f"{outcome} before the peer was killed"
            took = netpoll.now() - killed_at
            assert took < SAFETY / 2, f"{outcome} came {took:.2f} s after the kill"
            print(f"{direction}: {outcome} {took * 1000:.1f} ms after SIGKILL, {moved:,} bytes moved, "
                  f"{moved_at_kill:,} before it")
        finally:
            conn.close()
            ln.close()
            stop_peer(p)

    run(path, backend_name, main)


def test_sigstop_then_sigcont_of_the_peer(backend_name, path):
    async def main():
        ln, conn, p = await accept_peer(path, "echo")
        stopped = False
        try:
            conn.set_read_deadline(netpoll.now() + SAFETY)
            await conn.write(b"hello\n")
            assert await read_full(conn, 6) == b"hello\n"

            os.kill(p.pid, signal.SIGSTOP)
            stopped = True
            wait_state(p.pid, "T")
            await conn.write(b"while stopped\n")  # the kernel takes it; nobody answers
            conn.set_read_deadline(netpoll.now() + 0.5)
            t0 = netpoll.now()
            with pytest.raises(netpoll.DeadlineExceededError):
                await conn.read(bytearray(64))
            took = netpoll.now() - t0
            assert 0.49 <= took <= 0.5 + SLACK, f"the read deadline fired after {took:.3f} s"

            os.kill(p.pid, signal.SIGCONT)
            stopped = False
            conn.set_read_deadline(netpoll.now() + SAFETY)
            assert await read_full(conn, 14) == b"while stopped\n"
            await conn.write(b"again\n")
            assert await read_full(conn, 6) == b"again\n"
        finally:
            if stopped:
                os.kill(p.pid, signal.SIGCONT)
            conn.close()
            ln.close()
            stop_peer(p)

    run(path, backend_name, main)
