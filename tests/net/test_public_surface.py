"""The public surface: Go's net names and Python's conventions.

Conn, Listener and PacketConn show Go's methods (and DESIGN.md's) only, not
the FD layer's insides; OpError pickles; one spelling starts a goroutine
from another thread; a deadline of 0 is a time long past.
"""

from __future__ import annotations

import errno
import pickle

import pytest

import netpoll
from netpoll import net

from support import run
from support.net import refused_port, stream_pair

CONN = {"read", "write", "writev", "wait_readable", "close", "closed", "fileno",
        "local_addr", "remote_addr", "set_deadline", "set_read_deadline", "set_write_deadline",
        "close_write", "close_read", "set_no_delay", "set_keep_alive", "set_linger", "sendfile"}
LISTENER = {"accept", "addr", "close", "closed", "fileno", "set_deadline"}
PACKET = {"read", "write", "writev", "wait_readable", "read_from", "write_to", "close", "closed",
          "fileno", "local_addr", "remote_addr", "set_deadline", "set_read_deadline",
          "set_write_deadline"}


def _public(obj) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_public_names(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            assert _public(c) == CONN, _public(c) ^ CONN
            assert _public(s) == CONN
            assert _public(ln) == LISTENER, _public(ln) ^ LISTENER
            assert _public(pc) == PACKET, _public(pc) ^ PACKET
            for name in ("sock", "sysfd", "wrap_error", "accept", "recvfrom", "sendto",
                         "wait_write", "control", "shutdown", "stream", "net"):
                assert not hasattr(c, name), name
            for name in ("read", "write", "writev", "wait_readable", "sock", "sysfd"):
                assert not hasattr(ln, name), name
            # One deadline per call: no mode argument.
            with pytest.raises(TypeError):
                c.set_deadline(None, "r")  # type: ignore[call-arg]
        finally:
            pc.close()
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_one_spelling_for_go_threadsafe():
    assert not hasattr(netpoll, "go_threadsafe")
    assert "go_threadsafe" not in netpoll.__all__


def _roundtrip(e: BaseException) -> None:
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e)
    assert e2 == e and str(e2) == str(e)
    assert (e2.op, e2.net, e2.source, e2.addr) == (e.op, e.net, e.source, e.addr)
    assert type(e2.err) is type(e.err) and str(e2.err) == str(e.err)
    assert e2.errno == e.errno
    assert e2.timeout() == e.timeout() and e2.temporary() == e.temporary()


def test_operror_pickles(backend_name):
    async def main():
        errors = []
        hold, port = refused_port()
        try:
            try:
                await net.dial("tcp", f"127.0.0.1:{port}")
            except net.OpError as e:
                assert isinstance(e, ConnectionRefusedError)
                errors.append(e)
        finally:
            hold.close()
        ln, c, s = await stream_pair()
        try:
            s.set_read_deadline(0)
            try:
                await s.read(bytearray(1))
            except net.OpError as e:
                assert isinstance(e, TimeoutError)
                errors.append(e)
            c.close()
            try:
                await c.write(b"x")
            except net.OpError as e:
                assert isinstance(e, netpoll.ClosedError)
                errors.append(e)
        finally:
            s.close()
            ln.close()
        for bad in (lambda: net.listen("tcp", "nonsense"), lambda: net.listen("tcpx", ":0")):
            try:
                bad()
            except net.OpError as e:
                errors.append(e)
        pc = net.listen_packet("udp", "127.0.0.1:0")
        d = await net.dial("udp", pc.local_addr)
        try:
            await d.write_to(b"x", pc.local_addr)
        except net.OpError as e:
            errors.append(e)
        finally:
            d.close()
            pc.close()
        assert len(errors) == 6
        for e in errors:
            _roundtrip(e)

    run(backend_name, main)


def test_operror_equality_is_by_fields():
    a = net.operror("read", "tcp", None, None, OSError(errno.EIO, "boom"))
    b = net.operror("read", "tcp", None, None, OSError(errno.EIO, "boom"))
    c = net.operror("write", "tcp", None, None, OSError(errno.EIO, "boom"))
    assert a == b and a != c and hash(a) == hash(b)


@pytest.mark.parametrize("t", [0, 0.0, 1e-9])
def test_deadline_zero_is_long_past(backend_name, t):
    # None is the only "no deadline": 0 is a time (long past), so the next
    # operation fails at once.
    async def main():
        ln, c, s = await stream_pair()
        try:
            await c.write(b"data")  # even with data queued
            s.set_read_deadline(t)
            with pytest.raises(TimeoutError):
                await s.read(bytearray(8))
            ln.set_deadline(t)
            with pytest.raises(TimeoutError):
                await ln.accept()
            s.set_read_deadline(None)
            assert await s.read(bytearray(8)) == 4
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_docstrings_state_the_deadline_rule():
    for f in (net.Conn.set_deadline, net.Listener.set_deadline):
        doc = f.__doc__ or ""
        assert "None" in doc and "0" in doc, f
    assert "no timeout" in (net.dial.__doc__ or "")
