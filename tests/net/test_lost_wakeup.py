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


# After a short read on a TCP stream, the next read or wait_readable parks
# without a syscall where the poller reports whatever that read may have
# left behind: a level-triggered one (poll, select) always, epoll until the
# descriptor reports urgent data. kqueue always tries the syscall.
_SKIPS = {"epoll": True, "poll": True, "select": True, "kqueue": False}
_SKIPS_AFTER_URGENT = {"epoll": False, "poll": True, "select": True, "kqueue": False}
N = 20


async def _echo(s, peer, n: int, how: str) -> None:
    # The peer sends before the conn waits, so the conn parks (or looks)
    # before the poller has taken the edge; each read is short (8 of 64).
    buf = bytearray(64)
    s.set_read_deadline(netpoll.now() + SLACK)
    for i in range(n):
        msg = b"%08d" % i
        peer.sendall(msg)
        if how == "wait_readable":
            await s.wait_readable()
        got = await s.read(buf)
        assert bytes(buf[:got]) == msg
        await s.write(buf[:got])
        assert peer.recv(64) == msg


def _check_echo_skips(backend_name: str, how: str) -> None:
    async def main():
        ln, s, peer = await _tcp_server_and_peer()
        try:
            await _echo(s, peer, N, how)
            if _SKIPS[backend_name]:
                # Every message but the first follows a short read; a yield
                # of the I/O budget may let the poller take an edge first.
                assert s._rskips >= N // 2, s._rskips
            else:
                assert s._rskips == 0, s._rskips
        finally:
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_a_tcp_echo_parks_after_a_short_read_without_a_read(backend_name):
    _check_echo_skips(backend_name, "read")


def test_a_tcp_echo_parks_after_a_short_read_without_a_peek(backend_name):
    _check_echo_skips(backend_name, "wait_readable")


def test_a_unix_stream_never_skips(backend_name, tmp_path):
    path = str(tmp_path / "s")

    async def main():
        ln = net.listen("unix", path)
        g = netpoll.go(ln.accept())
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.connect(path)
        s = await g
        try:
            await _echo(s, peer, N, "wait_readable")
            assert s._rskips == 0, s._rskips
        finally:
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)


def _check_urgent_after_a_short_read(backend_name: str, how: str) -> None:
    # The urgent data is queued after a short read and before the poller
    # takes its edge, so on epoll the conn has parked without a syscall when
    # the urgent event comes: that event must wake it and end the skip.
    async def main():
        ln, s, peer = await _tcp_server_and_peer()
        try:
            await _echo(s, peer, 1, how)
            _send_urgent(peer)
            got = await _read_rest(s, how)
            assert got == b"AAAACCCC", got
            before = s._rskips
            await _echo(s, peer, N, how)
            if _SKIPS_AFTER_URGENT[backend_name]:
                assert s._rskips >= before + N // 2, (before, s._rskips)
            else:
                assert s._rskips == before, (before, s._rskips)
        finally:
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_read_after_urgent_data_following_a_short_read(backend_name):
    _check_urgent_after_a_short_read(backend_name, "read")


def test_wait_readable_after_urgent_data_following_a_short_read(backend_name):
    _check_urgent_after_a_short_read(backend_name, "wait_readable")


def _check_eof_after_a_short_read(backend_name: str, how: str) -> None:
    # A short read stops before the peer's FIN, so the EOF is still to come
    # with no new edge: the poller took the edge first, and a skip that did
    # not know about the hang-up would park for good.
    async def main():
        ln, s, peer = await _tcp_server_and_peer()
        try:
            peer.sendall(b"LAST")
            peer.shutdown(socket.SHUT_WR)
            await _settle()
            buf = bytearray(64)
            assert await s.read(buf) == 4
            s.set_read_deadline(netpoll.now() + SLACK)
            if how == "wait_readable":
                await s.wait_readable()
            assert await s.read(buf) == 0
        finally:
            peer.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_read_of_the_eof_after_a_short_read(backend_name):
    _check_eof_after_a_short_read(backend_name, "read")


def test_wait_readable_for_the_eof_after_a_short_read(backend_name):
    _check_eof_after_a_short_read(backend_name, "wait_readable")
