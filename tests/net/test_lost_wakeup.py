"""No lost wakeup when a read comes back short with more data queued.

A short read does not prove a stream socket's receive queue empty: a TCP
read stops at the urgent mark once it has copied anything (any peer can send
MSG_OOB), and a unix stream read stops after a message that carried
descriptors (SCM_RIGHTS). On an edge-triggered poller no new edge comes for
the data behind that point, so the next read or wait_readable must look
before it parks. The peer here is a plain socket (the kernel's own TCP and
unix stream code); each case lets the poller take the edge first.
"""

from __future__ import annotations

import array
import os
import socket

import netpoll
from netpoll import net

from support import SLACK, run


async def _settle() -> None:
    # Let the scheduler poll (and so take the edge for everything queued)
    # while nobody waits on the descriptor.
    for _ in range(3):
        await netpoll.sleep(0.01)


async def _tcp_server_and_peer():
    ln = net.listen("tcp", "127.0.0.1:0")
    g = netpoll.go(ln.accept())
    peer = socket.create_connection((ln.addr.host, ln.addr.port))
    s = await g
    return ln, s, peer


def _send_urgent(peer: socket.socket) -> None:
    peer.sendall(b"AAAA")
    peer.send(b"!", socket.MSG_OOB)
    peer.sendall(b"CCCC")


async def _read_rest(s, how: str) -> bytes:
    # One read returns what precedes the stop; the rest must come without
    # the peer sending anything more, well before the deadline.
    buf = bytearray(64)
    n = await s.read(buf)
    first = bytes(buf[:n])
    s.set_read_deadline(netpoll.now() + SLACK)
    if how == "wait_readable":
        await s.wait_readable()
    n = await s.read(buf)
    return first + bytes(buf[:n])


def _check_tcp_urgent(backend_name: str, how: str) -> None:
    async def main():
        ln, s, peer = await _tcp_server_and_peer()
        try:
            _send_urgent(peer)
            await _settle()
            got = await _read_rest(s, how)
            # Without SO_OOBINLINE the urgent byte is out of band: the
            # stream is AAAA then CCCC.
            assert got == b"AAAACCCC", got
        finally:
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_read_after_a_read_stopped_at_the_urgent_mark(backend_name):
    _check_tcp_urgent(backend_name, "read")


def test_wait_readable_after_a_read_stopped_at_the_urgent_mark(backend_name):
    _check_tcp_urgent(backend_name, "wait_readable")


def _check_scm_rights(backend_name: str, how: str, tmp_path) -> None:
    path = str(tmp_path / "s")

    async def main():
        ln = net.listen("unix", path)
        g = netpoll.go(ln.accept())
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.connect(path)
        s = await g
        r, w = os.pipe()
        try:
            peer.sendmsg([b"HEAD"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
            peer.sendall(b"BODY")
            await _settle()
            got = await _read_rest(s, how)
            assert got == b"HEADBODY", got
        finally:
            os.close(r)
            os.close(w)
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_read_after_a_message_with_descriptors(backend_name, tmp_path):
    _check_scm_rights(backend_name, "read", tmp_path)


def test_wait_readable_after_a_message_with_descriptors(backend_name, tmp_path):
    _check_scm_rights(backend_name, "wait_readable", tmp_path)


def test_wait_readable_still_parks_on_an_empty_stream(backend_name):
    # The look before parking must not turn wait_readable into a busy
    # return: with nothing queued it parks until the peer sends.
    async def main():
        ln, s, peer = await _tcp_server_and_peer()
        try:
            woke = []

            async def waiter():
                await s.wait_readable()
                woke.append(netpoll.now())

            g = netpoll.go(waiter())
            await _settle()
            assert not woke, "wait_readable returned with nothing queued"
            peer.sendall(b"x")
            await g
            assert len(woke) == 1
            assert await s.read(bytearray(4)) == 1
        finally:
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)
