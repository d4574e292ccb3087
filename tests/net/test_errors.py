"""Bad input and the error model: every failure is a clear error (its type
and a message naming the bad value) that leaves no descriptor open, and
OpError carries op/net/source/addr/err as Go's table (GO_NETPOLL.md 4.7) says."""

from __future__ import annotations

import errno

import pytest

import netpoll
from netpoll import net
from netpoll.socktest import Switch

from support import read_full, run
from support.net import conn_pair, refused_port, stream_pair


def check_operror(e: BaseException, op: str, network: str, source, addr) -> None:
    assert isinstance(e, net.OpError), repr(e)
    assert isinstance(e, OSError)
    assert (e.op, e.net) == (op, network), (e.op, e.net)
    assert e.source == source, (e.source, source)
    assert e.addr == addr, (e.addr, addr)
    assert e.err is not None and isinstance(e, type(e.err))


# -- unknown networks -----------------------------------------------------------------

@pytest.mark.parametrize("network", ["tcpx", "", "TCP", "ip", None, 5])
def test_unknown_network(backend_name, network):
    async def main():
        with Switch() as sw:
            calls = [("listen", lambda: net.listen(network, "127.0.0.1:0")),
                     ("listen", lambda: net.listen_packet(network, "127.0.0.1:0"))]
            for op, call in calls:
                with pytest.raises(net.OpError) as ei:
                    call()
                check_operror(ei.value, op, str(network), None, None)
                assert isinstance(ei.value, net.UnknownNetworkError)
                assert f"unknown network {str(network)!r}" in str(ei.value)
            with pytest.raises(net.UnknownNetworkError) as ei:
                await net.dial(network, "127.0.0.1:1")
            check_operror(ei.value, "dial", str(network), None, None)
        assert sw.total("opened") == 0

    run(backend_name, main)


def test_stream_and_packet_networks_do_not_mix(backend_name):
    async def main():
        with pytest.raises(net.UnknownNetworkError, match="'udp'"):
            net.listen("udp", "127.0.0.1:0")
        with pytest.raises(net.UnknownNetworkError, match="'tcp'"):
            net.listen_packet("tcp", "127.0.0.1:0")
        with pytest.raises(net.UnknownNetworkError, match="'unixgram'"):
            net.listen("unixgram", "/nonexistent/x")

    run(backend_name, main)


# -- malformed addresses ----------------------------------------------------------------

BAD_ADDRESSES = [
    ("127.0.0.1", "missing port"),
    ("1.2.3.4:x", "unknown port 'x'"),
    ("[::1", "missing ']'"),
    ("", "missing address"),
    ("127.0.0.1:70000", "out of range"),
    ("127.0.0.1:-1", "unknown port"),
    ("::1:80", "too many colons"),
    ("[::1]80", "missing port"),
    (("127.0.0.1", 65536), "out of range"),
    (("127.0.0.1", -1), "out of range"),
    (("127.0.0.1", 1.5), "port must be an int"),
    (("127.0.0.1", True), "invalid port"),
    (("127.0.0.1",), "(host, port)"),
    (("127.0.0.1", 1, 2), "(host, port)"),
    ((1, 80), "host must be a str"),
    (5, "not int"),
    (None, "not NoneType"),
]


@pytest.mark.parametrize("bad,why", BAD_ADDRESSES, ids=[repr(b) for b, _ in BAD_ADDRESSES])
def test_malformed_address(backend_name, bad, why):
    async def main():
        with Switch() as sw:
            calls = [("listen", "tcp", lambda: net.listen("tcp", bad)),
                     ("listen", "udp", lambda: net.listen_packet("udp", bad))]
            for op, network, call in calls:
                with pytest.raises(net.OpError) as ei:
                    call()
                e = ei.value
                check_operror(e, op, network, None, None)
                assert isinstance(e, net.AddrError) and isinstance(e, ValueError)
                assert why in str(e), str(e)
                assert repr(bad) in str(e), str(e)  # names the bad value
            with pytest.raises(net.AddrError) as ei:
                await net.dial("tcp", bad)
            check_operror(ei.value, "dial", "tcp", None, None)
            assert why in str(ei.value) and repr(bad) in str(ei.value)
            if bad is not None:  # local_addr=None means "any"
                with pytest.raises(net.AddrError):
                    await net.dial("tcp", "127.0.0.1:1", local_addr=bad)
        assert sw.total("opened") == 0

    run(backend_name, main)


def test_unresolvable_host_is_addr_error(backend_name):
    async def main():
        with pytest.raises(net.AddrError, match="no such host") as ei:
            net.listen("tcp", "no-such-host.invalid:0")
        assert "no-such-host.invalid" in str(ei.value)

    run(backend_name, main)


@pytest.mark.parametrize("backlog", [-1, -100, 1.5, "5", True])
def test_bad_backlog(backend_name, backlog):
    async def main():
        with Switch() as sw:
            with pytest.raises(net.OpError) as ei:
                net.listen("tcp", "127.0.0.1:0", backlog=backlog)
            e = ei.value
            assert isinstance(e, ValueError)
            assert e.op == "listen"
            assert "backlog" in str(e) and repr(backlog) in str(e)
        assert sw.total("opened") == 0

    run(backend_name, main)


# -- bad buffers and data -----------------------------------------------------------

def test_read_into_read_only_buffer_is_type_error(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"data")
            for ro in (b"0123", memoryview(b"0123")):
                with pytest.raises(TypeError):
                    await c.read(ro)

    run(backend_name, main)


def test_read_into_read_only_buffer_fails_and_conn_stays_usable(backend_name):
    # Whatever the exception type, the failed read takes no data and leaves
    # the read lock free.
    async def main():
        async with conn_pair() as (ln, c, s):
            await s.write(b"data")
            with pytest.raises((TypeError, BufferError)):
                await c.read(b"0123")
            with pytest.raises(TypeError):
                await c.read("text")
            with pytest.raises(TypeError):
                await c.read(None)
            assert await read_full(c, 4) == b"data"

    run(backend_name, main)


def test_writing_str_is_type_error(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            with pytest.raises(TypeError, match="str"):
                await c.write("text")
            with pytest.raises(TypeError, match="str"):
                await c.writev([b"ok", "text"])
            with pytest.raises(TypeError):
                await c.write(None)
            with pytest.raises(TypeError):
                await c.write(12)
            # Nothing was written by the failed calls; the conn still works.
            await c.write(b"fine")
            assert await read_full(s, 4) == b"fine"

    run(backend_name, main)


def test_zero_length_read_and_write(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            c.set_read_deadline(netpoll.now() + 5)
            assert await c.read(bytearray(0)) == 0  # no wait, no EOF implied
            assert await c.write(b"") == 0
            await s.write(b"x")
            assert await read_full(c, 1) == b"x"

    run(backend_name, main)


# -- OpError fields and text (Go's table) ------------------------------------------

def test_dial_refused_operror(backend_name):
    async def main():
        blocker, port = refused_port()
        try:
            with pytest.raises(net.OpError) as ei:
                await net.dial("tcp", f"127.0.0.1:{port}")
            e = ei.value
            assert isinstance(e, ConnectionRefusedError)
            assert e.errno == errno.ECONNREFUSED
            check_operror(e, "dial", "tcp", None, net.TCPAddr("127.0.0.1", port))
            assert str(e).startswith(f"dial tcp 127.0.0.1:{port}: ")
            assert "refused" in str(e).lower()
            assert not e.timeout()
            # With a local address, it is the source.
            with pytest.raises(ConnectionRefusedError) as ei:
                await net.dial("tcp", ("127.0.0.1", port), local_addr="127.0.0.1:0")
            e = ei.value
            check_operror(e, "dial", "tcp", net.TCPAddr("127.0.0.1", 0), net.TCPAddr("127.0.0.1", port))
            assert str(e).startswith(f"dial tcp 127.0.0.1:0->127.0.0.1:{port}: ")
        finally:
            blocker.close()

    run(backend_name, main)


def test_operror_fields_for_conn_operations(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        la, ra = c.local_addr, c.remote_addr
        try:
            c.set_read_deadline(netpoll.now() - 1)
            with pytest.raises(net.OpError) as ei:
                await c.read(bytearray(1))
            check_operror(ei.value, "read", "tcp", la, ra)
            assert str(ei.value) == f"read tcp {la}->{ra}: i/o timeout"

            c.set_write_deadline(netpoll.now() - 1)
            with pytest.raises(net.OpError) as ei:
                await c.write(b"x")
            check_operror(ei.value, "write", "tcp", la, ra)
            assert str(ei.value) == f"write tcp {la}->{ra}: i/o timeout"
            with pytest.raises(net.OpError) as ei:
                await c.writev([b"x"])
            check_operror(ei.value, "writev", "tcp", la, ra)

            ln.set_deadline(netpoll.now() - 1)
            with pytest.raises(net.OpError) as ei:
                await ln.accept()
            check_operror(ei.value, "accept", "tcp", None, ln.addr)
            assert str(ei.value) == f"accept tcp {ln.addr}: i/o timeout"

            c.close()
            with pytest.raises(net.OpError) as ei:
                c.set_deadline(None)
            check_operror(ei.value, "set", "tcp", None, la)
            with pytest.raises(net.OpError) as ei:
                c.close_write()
            check_operror(ei.value, "close", "tcp", la, ra)
            with pytest.raises(net.OpError) as ei:
                c.set_linger(0)
            check_operror(ei.value, "set", "tcp", la, ra)
        finally:
            c.close()
            s.close()
            ln.close()

    run(backend_name, main)


def test_operror_fields_for_listen(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            with pytest.raises(net.OpError) as ei:
                net.listen("tcp", ln.addr)
            check_operror(ei.value, "listen", "tcp", None, ln.addr)
            assert ei.value.errno == errno.EADDRINUSE
        finally:
            ln.close()

    run(backend_name, main)


def test_operror_fields_for_udp(backend_name):
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            pc.set_read_deadline(netpoll.now() - 1)
            with pytest.raises(net.OpError) as ei:
                await pc.read_from(bytearray(1))
            check_operror(ei.value, "read", "udp", pc.local_addr, None)
            assert str(ei.value) == f"read udp {pc.local_addr}: i/o timeout"
            pc.set_write_deadline(netpoll.now() - 1)
            dst = net.UDPAddr("127.0.0.1", 9)
            with pytest.raises(net.OpError) as ei:
                await pc.write_to(b"x", dst)
            check_operror(ei.value, "write", "udp", pc.local_addr, dst)
            assert str(ei.value) == f"write udp {pc.local_addr}->{dst}: i/o timeout"
        finally:
            pc.close()

    run(backend_name, main)


def test_operror_timeout_and_temporary(backend_name):
    e = net.operror("read", "tcp", None, None, netpoll.DeadlineExceededError())
    assert e.timeout() and e.temporary()
    e = net.operror("read", "tcp", None, None, ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not e.timeout() and not e.temporary()
    e = net.operror("accept", "tcp", None, None, ConnectionAbortedError(errno.ECONNABORTED, "aborted"))
    assert e.temporary()
    e = net.operror("accept", "tcp", None, None, OSError(errno.EMFILE, "too many"))
    assert e.temporary() and not e.timeout()
    assert e.errno == errno.EMFILE
    e = net.operror("read", "tcp", None, None, netpoll.ClosedError())
    assert not e.timeout() and not e.temporary()
    assert str(e) == "read tcp: use of closed network connection"


# -- failures while registering with the poller -----------------------------------

def test_listen_outside_a_runtime_leaks_nothing():
    # Needs no backend: no runtime is running, so nothing can register.
    with Switch() as sw:
        for call in (lambda: net.listen("tcp", "127.0.0.1:0"),
                     lambda: net.listen_packet("udp", "127.0.0.1:0")):
            with pytest.raises(RuntimeError, match="netpoll.run"):
                call()
        assert not sw.sockets()
    assert sw.total("opened") == sw.total("closed") == 2


class _LowFds:
    """Occupy every descriptor number below ``limit`` (and a few above), so
    the next socket gets a number the backend cannot watch."""

    def __init__(self, limit: int) -> None:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < limit + 64:
            if hard != resource.RLIM_INFINITY and hard < limit + 64:
                pytest.skip(f"RLIMIT_NOFILE {hard} too low to reach fd {limit}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit + 64, hard))
        self.fds: list[int] = []
        import os

        try:
            while not self.fds or self.fds[-1] < limit:
                self.fds.append(os.open(os.devnull, os.O_RDONLY))
        except BaseException:
            self.close()
            raise

    def free_one_low(self) -> None:
        import os

        os.close(self.fds.pop(0))

    def close(self) -> None:
        import os

        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _max_fd(backend_name):
    limit = getattr(netpoll.backend_class(backend_name), "max_fd", None)
    if not limit:
        pytest.skip(f"backend {backend_name} has no descriptor limit")
    return limit


def test_fd_beyond_backend_limit_is_an_operror_and_leaks_nothing(backend_name):
    limit = _max_fd(backend_name)

    async def main():
        low = _LowFds(limit)
        try:
            with Switch() as sw:
                for op, network, call in (("listen", "tcp", lambda: net.listen("tcp", "127.0.0.1:0")),
                                          ("listen", "udp", lambda: net.listen_packet("udp", "127.0.0.1:0"))):
                    with pytest.raises(net.OpError) as ei:
                        call()
                    assert (ei.value.op, ei.value.net) == (op, network)
                    assert str(limit) in str(ei.value), str(ei.value)
                    assert not sw.sockets()
                low.free_one_low()
                ln = net.listen("tcp", "127.0.0.1:0")  # takes the free low number
                try:
                    assert ln.fileno() < limit
                    # An accepted connection that cannot be registered fails
                    # the accept (and is closed); the listener stays usable.
                    import socket as _socket

                    with _socket.create_connection(ln.addr.sockaddr(), timeout=5) as plain:
                        await netpoll.sleep(0.01)
                        with pytest.raises(net.OpError) as ei:
                            await ln.accept()
                        assert ei.value.op == "accept" and str(limit) in str(ei.value)
                        assert list(sw.sockets()) == [ln.fileno()]
                        try:
                            assert plain.recv(1) == b""
                        except ConnectionResetError:
                            pass
                    # dial connects before it registers (as Go does), so its
                    # socket is closed after the failure.
                    with pytest.raises(net.OpError) as ei:
                        await net.dial("tcp", ln.addr)
                    assert ei.value.op == "dial" and str(limit) in str(ei.value)
                    assert list(sw.sockets()) == [ln.fileno()]
                    low.close()
                    c = await net.dial("tcp", ln.addr)
                    s = await ln.accept()
                    c.close()
                    s.close()
                finally:
                    ln.close()
                assert not sw.sockets()
        finally:
            low.close()

    run(backend_name, main)
