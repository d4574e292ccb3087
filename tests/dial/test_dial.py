"""Dialing as Go dials: every address in turn with its share of the
deadline, Happy Eyeballs for dual-stack names, the Dialer's options, and
Go's host:port rules. Names come from a getaddrinfo stand-in, addresses are
real sockets on loopback."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading

import pytest

import netpoll
from netpoll import _dial, net
from netpoll.socktest import Switch

from dialutil import SLACK, FakeGAI, has_ipv6_loopback, refused_port, run, ticker


async def echo_once(ln):
    s = await ln.accept()
    buf = bytearray(16)
    n = await s.read(buf)
    await s.write(bytes(buf[:n]))
    s.close()


async def check_echo(c):
    await c.write(b"ping")
    buf = bytearray(16)
    n = await c.read(buf)
    assert bytes(buf[:n]) == b"ping"


@contextlib.contextmanager
def black_hole(family: int, host: str, port: int = 0):
    """A listener whose accept queue is full and never drained: the kernel
    drops further SYNs, so a connect to it never completes (a black hole,
    on loopback only)."""
    ln = socket.socket(family)
    fillers = []
    try:
        if family == socket.AF_INET6:
            ln.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ln.bind((host, port))
        ln.listen(0)
        for _ in range(16):
            s = socket.socket(family)
            s.setblocking(False)
            fillers.append(s)
            s.connect_ex(ln.getsockname()[:2])
        yield ln.getsockname()[1]
    finally:
        for s in fillers:
            s.close()
        ln.close()


# -- every address in turn ------------------------------------------------------------

def test_dead_then_live_address_connects_to_the_second(backend_name, monkeypatch):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        port = ln.addr.port
        # 127.0.0.2 is loopback too, and nothing listens on it: refused.
        fake = FakeGAI({"twice.test": ["127.0.0.2", "127.0.0.1"]})
        monkeypatch.setattr(socket, "getaddrinfo", fake)
        seen = []
        d = net.Dialer(control=lambda nw, addr, s: seen.append(addr))
        try:
            with Switch() as sw:
                g = netpoll.go(echo_once(ln))
                c = await d.dial("tcp", f"twice.test:{port}")
                assert c.remote_addr == net.TCPAddr("127.0.0.1", port)
                await check_echo(c)
                await g
                c.close()
            assert seen == [f"127.0.0.2:{port}", f"127.0.0.1:{port}"]
            assert sw.total("opened") == 2 and not sw.sockets()  # the refused one was closed
        finally:
            ln.close()

    run(backend_name, main)


def test_all_addresses_failing_returns_the_first_error(backend_name, monkeypatch):
    s1, p = refused_port()

    async def main():
        monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"dead.test": ["127.0.0.1", "127.0.0.3"]}))
        with Switch() as sw:
            with pytest.raises(ConnectionRefusedError) as ei:
                await net.dial("tcp", f"dead.test:{p}")
        e = ei.value
        assert isinstance(e, net.OpError) and e.op == "dial"
        assert e.addr == net.TCPAddr("127.0.0.1", p)  # the first, not the last
        assert sw.total("opened") == 2 and not sw.sockets()

    try:
        run(backend_name, main)
    finally:
        s1.close()


def test_partial_deadline_is_gos():
    pd = _dial._partial_deadline
    assert pd(10.0, None, 3) is None
    assert pd(0.0, 30.0, 3) == 10.0          # an equal share
    assert pd(0.0, 3.0, 3) == 2.0            # but at least 2 s (saneMinimum)
    assert pd(0.0, 1.0, 3) == 1.0            # unless less than that is left
    with pytest.raises(netpoll.DeadlineExceededError):
        pd(5.0, 5.0, 1)


def test_serial_dial_gives_each_address_a_share_of_the_timeout(backend_name, monkeypatch):
    # Two black holes: with a 5 s timeout the first gets 2.5 s, not all 5.
    async def main():
        with black_hole(socket.AF_INET, "127.0.0.1") as port:
            ln = net.listen("tcp", "127.0.0.1:0")
            try:
                monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"hole.test": ["127.0.0.1"]}))
                t0 = netpoll.now()
                with pytest.raises(TimeoutError) as ei:
                    await net.Dialer(timeout=0.3).dial("tcp", f"hole.test:{port}")
                assert ei.value.op == "dial" and ei.value.timeout()
                assert 0.3 <= netpoll.now() - t0 < 0.3 + SLACK
            finally:
                ln.close()

    with Switch() as sw:
        run(backend_name, main)
    assert not sw.sockets()


# -- Happy Eyeballs ---------------------------------------------------------------------

needs_v6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 on loopback")


@contextlib.contextmanager
def v6_hole_v4_listener():
    """(port, listener): [::1]:port is a black hole, 127.0.0.1:port listens."""
    for _ in range(20):  # a v6 port whose number is free on v4 too
        with black_hole(socket.AF_INET6, "::1") as port:
            try:
                ln = net.listen("tcp4", f"127.0.0.1:{port}")
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    continue
                raise
            try:
                yield port, ln
            finally:
                ln.close()
            return
    pytest.skip("no port free on both families")


@needs_v6
def test_dual_stack_with_black_holed_ipv6_connects_over_ipv4_after_fallback_delay(backend_name, monkeypatch):
    delay = 0.3

    async def main():
        with v6_hole_v4_listener() as (port, ln):
            monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"dual.test": ["::1", "127.0.0.1"]}))
            families = []
            d = net.Dialer(fallback_delay=delay, control=lambda nw, a, s: families.append(nw))
            with Switch() as sw:
                g = netpoll.go(echo_once(ln))
                t0 = netpoll.now()
                c = await d.dial("tcp", f"dual.test:{port}")
                took = netpoll.now() - t0
                assert c.remote_addr == net.TCPAddr("127.0.0.1", port)
                await check_echo(c)
                await g
                # The IPv6 attempt lost and was closed; only c is open.
                assert list(sw.sockets()) == [c.fileno()]
                c.close()
            assert families == ["tcp6", "tcp4"]
            assert delay * 0.9 <= took < delay + SLACK, took

    run(backend_name, main)


@needs_v6
def test_negative_fallback_delay_disables_the_race(backend_name, monkeypatch):
    # Serially, the black-holed first address takes all of a short timeout
    # (partialDeadline gives it at least 2 s): IPv4 is never tried.
    async def main():
        with v6_hole_v4_listener() as (port, ln):
            monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"dual.test": ["::1", "127.0.0.1"]}))
            families = []
            d = net.Dialer(timeout=0.5, fallback_delay=-1, control=lambda nw, a, s: families.append(nw))
            with Switch() as sw:
                with pytest.raises(TimeoutError) as ei:
                    await d.dial("tcp", f"dual.test:{port}")
            assert ei.value.addr == net.TCPAddr("::1", port)
            assert families == ["tcp6"]
            assert not sw.sockets()

    run(backend_name, main)


@needs_v6
def test_fallback_starts_at_once_when_the_primary_fails(backend_name, monkeypatch):
    held, port = refused_port("::1", socket.AF_INET6)

    async def main():
        try:
            ln = net.listen("tcp4", f"127.0.0.1:{port}")
        except OSError:
            pytest.skip("port taken on IPv4")
        try:
            monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"dual.test": ["::1", "127.0.0.1"]}))
            g = netpoll.go(echo_once(ln))
            t0 = netpoll.now()
            c = await net.Dialer(fallback_delay=30).dial("tcp", f"dual.test:{port}")
            assert netpoll.now() - t0 < SLACK  # not after 30 s
            await check_echo(c)
            await g
            c.close()
        finally:
            ln.close()

    try:
        run(backend_name, main)
    finally:
        held.close()


@needs_v6
def test_both_families_failing_reports_the_primarys_error(backend_name, monkeypatch):
    h6, port = refused_port("::1", socket.AF_INET6)

    async def main():
        monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"dual.test": ["::1", "127.0.0.1"]}))
        with Switch() as sw:
            with pytest.raises(ConnectionRefusedError) as ei:
                await net.Dialer(fallback_delay=0).dial("tcp", f"dual.test:{port}")
        assert ei.value.addr == net.TCPAddr("::1", port)
        assert not sw.sockets()

    try:
        h4 = socket.socket()
        try:
            h4.bind(("127.0.0.1", port))
        except OSError:
            pytest.skip("port taken on IPv4")
        run(backend_name, main)
    finally:
        h6.close()
        h4.close()


# -- resolving while others run ----------------------------------------------------------

def test_dialing_through_a_slow_resolver_does_not_stop_others(backend_name, monkeypatch):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"slow.test": ["127.0.0.1"]}, delay=0.5))
            ticks: list[float] = []
            stop = netpoll.Event()
            tk = netpoll.go(ticker(0.02, ticks, stop))
            g = netpoll.go(echo_once(ln))
            t0 = netpoll.now()
            c = await net.dial("tcp", f"slow.test:{ln.addr.port}")
            t1 = netpoll.now()
            stop.set()
            await tk
            await check_echo(c)
            await g
            c.close()
            assert len([t for t in ticks if t0 <= t <= t1]) >= 8
        finally:
            ln.close()

    run(backend_name, main)


def test_timeout_covers_the_lookup(backend_name, monkeypatch):
    release = threading.Event()

    def stuck(*a, **k):
        release.wait(10)
        raise socket.gaierror(socket.EAI_NONAME, "gone")

    monkeypatch.setattr(socket, "getaddrinfo", stuck)

    async def main():
        t0 = netpoll.now()
        with pytest.raises(TimeoutError) as ei:
            await net.dial("tcp", "stuck.test:80", timeout=0.2)
        e = ei.value
        assert isinstance(e, net.OpError) and e.op == "dial" and e.timeout()
        assert isinstance(e, net.DNSError) and e.is_timeout
        assert "i/o timeout" in str(e)
        assert 0.2 <= netpoll.now() - t0 < 0.2 + SLACK

    try:
        with Switch() as sw:
            run(backend_name, main)
        assert sw.total("opened") == 0
    finally:
        release.set()


def test_unknown_host_is_an_operror_with_a_dns_error(backend_name, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"gone.test": socket.EAI_NONAME}))

    async def main():
        with Switch() as sw:
            with pytest.raises(socket.gaierror) as ei:
                await net.dial("tcp", "gone.test:80")
        e = ei.value
        assert isinstance(e, net.OpError) and e.op == "dial" and e.net == "tcp"
        assert isinstance(e.err, net.DNSError) and e.is_not_found and e.name == "gone.test"
        assert str(e) == "dial tcp: lookup gone.test: no such host"
        assert sw.total("opened") == 0

    run(backend_name, main)


# -- the Dialer's options ------------------------------------------------------------------

def test_control_sees_the_socket_before_connect_and_can_fail_it(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            calls = []

            def control(nw, address, sock):
                calls.append((nw, address, sock.type, sock.family))
                with pytest.raises(OSError):
                    sock.getpeername()  # not connected yet
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

            c = await net.Dialer(control=control).dial("tcp", ln.addr)
            s = await ln.accept()
            assert calls == [("tcp4", str(ln.addr), socket.SOCK_STREAM, socket.AF_INET)]
            c.close()
            s.close()

            def refuse(nw, address, sock):
                raise PermissionError(errno.EPERM, "control says no")

            with Switch() as sw:
                with pytest.raises(PermissionError) as ei:
                    await net.Dialer(control=refuse).dial("tcp", ln.addr)
            assert isinstance(ei.value, net.OpError) and ei.value.op == "dial"
            assert "control says no" in str(ei.value)
            assert sw.total("opened") == 1 and not sw.sockets()
        finally:
            ln.close()

    run(backend_name, main)


@pytest.mark.parametrize("keep_alive,want", [(15.0, 15), (0, 15), (30, 30), (2.5, 3), (-1, None)])
def test_keep_alive(backend_name, keep_alive, want):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            c = await net.Dialer(keep_alive=keep_alive).dial("tcp", ln.addr)
            s = await ln.accept()
            on = c._control(lambda k: k.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
            assert bool(on) == (want is not None)
            if want is not None and hasattr(socket, "TCP_KEEPIDLE"):
                assert c._control(lambda k: k.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)) == want
            assert c._control(lambda k: k.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


@needs_v6
def test_local_addr_picks_the_family(backend_name, monkeypatch):
    async def main():
        ln = net.listen("tcp4", "127.0.0.1:0")
        try:
            monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"dual.test": ["::1", "127.0.0.1"]}))
            c = await net.Dialer(local_addr="127.0.0.1:0").dial("tcp", f"dual.test:{ln.addr.port}")
            s = await ln.accept()
            assert c.local_addr.host == "127.0.0.1"
            c.close()
            s.close()
            with Switch() as sw:
                with pytest.raises(net.AddrError, match="no suitable address found"):
                    await net.Dialer(local_addr="[::1]:0").dial("tcp", f"127.0.0.1:{ln.addr.port}")
            assert sw.total("opened") == 0
        finally:
            ln.close()

    run(backend_name, main)


def test_deadline_and_ctx(backend_name):
    class Ctx:
        def __init__(self, deadline=None, err=None):
            self._d, self._e = deadline, err

        def deadline(self):
            return (self._d, self._d is not None)

        def err(self):
            return self._e

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            with Switch() as sw:
                for d, ctx in ((net.Dialer(deadline=netpoll.now() - 1), None),
                               (net.Dialer(), Ctx(deadline=netpoll.now() - 1)),
                               (net.Dialer(timeout=10, deadline=0), None)):
                    with pytest.raises(TimeoutError) as ei:
                        await d.dial("tcp", ln.addr, ctx=ctx)
                    assert ei.value.op == "dial"

                class Canceled(Exception):
                    pass

                with pytest.raises(net.OpError) as ei:
                    await net.Dialer().dial("tcp", ln.addr, ctx=Ctx(err=Canceled("context canceled")))
                assert isinstance(ei.value.err, Canceled)
            assert sw.total("opened") == 0
            # A future deadline lets the dial through, and stays off the conn.
            c = await net.Dialer().dial("tcp", ln.addr, ctx=Ctx(deadline=netpoll.now() + 30))
            s = await ln.accept()
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_dials_a_peer_nobody_here_wrote(backend_name):
    # A plain blocking socketserver in a thread: the stdlib's, not netpoll's.
    import socketserver

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(self.request.recv(64))

    srv = socketserver.TCPServer(("127.0.0.1", 0), Echo)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()

    async def main():
        c = await net.Dialer(timeout=5).dial("tcp", f"localhost:{srv.server_address[1]}")
        await check_echo(c)
        c.close()

    try:
        run(backend_name, main)
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("address,why", [
    ("127.0.0.1:65536", "out of range"),
    ("localhost:99999", "out of range"),
    (("localhost", 70000), "out of range"),
    ("localhost:no-such-service", "unknown port 'no-such-service'"),
    ("127.0.0.1:no-such-service", "unknown port 'no-such-service'"),
    ("localhost", "missing port"),
    ("loc\0alhost:80", "NUL"),
])
def test_bad_addresses(backend_name, address, why, monkeypatch):
    def no_lookup(*a, **k):
        raise AssertionError("a bad port must fail before the host is looked up")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)

    async def main():
        with Switch() as sw:
            with pytest.raises(net.OpError, match=why) as ei:
                await net.Dialer().dial("tcp", address)
        assert ei.value.op == "dial" and isinstance(ei.value, ValueError)
        assert sw.total("opened") == 0

    run(backend_name, main)


def test_empty_host_means_the_local_system(backend_name, monkeypatch):
    async def main():
        ln = net.listen("tcp4", "127.0.0.1:0")
        try:
            # A named port with an empty host: the resolver gives the port.
            monkeypatch.setattr(socket, "getservbyname", lambda name, proto: ln.addr.port)
            c = await net.dial("tcp4", ":myservice")
            s = await ln.accept()
            c.close()
            s.close()
        finally:
            ln.close()
        with pytest.raises(net.DNSError, match="no such host"):
            await net.lookup_host("")

    run(backend_name, main)


@pytest.mark.parametrize("kw,why", [
    ({"fallback_delay": float("nan")}, "fallback_delay"),
    ({"keep_alive": float("inf")}, "keep_alive"),
    ({"timeout": float("nan")}, "NaN"),
    ({"timeout": "1"}, "timeout must be a number"),
    ({"control": 5}, "control must be callable"),
    ({"local_addr": "127.0.0.1"}, "missing port"),
])
def test_bad_dialer_options(backend_name, kw, why):
    async def main():
        with Switch() as sw:
            with pytest.raises(net.OpError, match=why) as ei:
                await net.Dialer(**kw).dial("tcp", "127.0.0.1:1")
        assert ei.value.op == "dial" and isinstance(ei.value, (ValueError, TypeError))
        assert sw.total("opened") == 0

    run(backend_name, main)


# -- host:port -------------------------------------------------------------------------------

@pytest.mark.parametrize("hostport,host,port", [
    ("localhost:http", "localhost", "http"),
    ("127.0.0.1:80", "127.0.0.1", "80"),
    ("[::1]:80", "::1", "80"),
    ("[fe80::1%lo0]:80", "fe80::1%lo0", "80"),
    (":80", "", "80"),
    ("localhost:", "localhost", ""),
    ("[]:80", "", "80"),
    ("[::1]:", "::1", ""),
])
def test_split_host_port(hostport, host, port):
    assert net.split_host_port(hostport) == (host, port)
    assert net.split_host_port(net.join_host_port(host, port)) == (host, port)


@pytest.mark.parametrize("hostport,why", [
    ("golang.org", "missing port"),
    ("127.0.0.1", "missing port"),
    ("[::1]", "missing port"),
    ("[fe80::1%lo0]", "missing port"),
    ("[localhost]", "missing port"),
    ("localhost", "missing port"),
    ("::1", "too many colons"),
    ("fe80::1%lo0", "too many colons"),
    ("fe80::1%lo0:80", "too many colons"),
    ("[::1]:80:90", "too many colons"),
    ("[::1", "missing ']'"),
    ("[::1]80", "missing port"),
    ("[foo:bar]baz", "missing port"),
    ("[foo]bar:baz", "missing port"),
    ("[foo]:[bar]baz", "unexpected '['"),
    ("]foo:80", "unexpected ']'"),
    ("foo[:80", "unexpected '['"),
])
def test_split_host_port_errors(hostport, why):
    with pytest.raises(net.AddrError, match=why.replace("[", r"\[")) as ei:
        net.split_host_port(hostport)
    assert ei.value.addr == hostport


def test_join_host_port():
    assert net.join_host_port("::1", 80) == "[::1]:80"
    assert net.join_host_port("fe80::1%lo0", "http") == "[fe80::1%lo0]:http"
    assert net.join_host_port("example.com", 443) == "example.com:443"
    assert net.join_host_port("", 80) == ":80"


def test_dial_cancelled_by_its_context_while_connecting(backend_name):
    # Go's connect: a context cancelled mid-connect ends the dial at once,
    # with the context's error, and leaves nothing open.
    from netpoll import context

    async def main():
        with black_hole(socket.AF_INET, "127.0.0.1") as port:
            ctx, cancel = context.with_cancel(context.background())

            async def cancel_soon():
                await netpoll.sleep(0.1)
                cancel()

            netpoll.go(cancel_soon())
            t0 = netpoll.now()
            with pytest.raises(net.OpError) as ei:
                await net.Dialer(timeout=10).dial("tcp", f"127.0.0.1:{port}", ctx=ctx)
            assert isinstance(ei.value.err, context.Canceled), ei.value
            assert ei.value.op == "dial"
            assert 0.05 < netpoll.now() - t0 < 0.1 + SLACK

    run(backend_name, main)


def test_dial_ended_by_its_context_deadline_while_connecting(backend_name):
    from netpoll import context

    async def main():
        with black_hole(socket.AF_INET, "127.0.0.1") as port:
            ctx, cancel = context.with_timeout(context.background(), 0.1)
            try:
                t0 = netpoll.now()
                with pytest.raises(net.OpError) as ei:
                    await net.Dialer().dial("tcp", f"127.0.0.1:{port}", ctx=ctx)
                assert isinstance(ei.value, TimeoutError)
                assert netpoll.now() - t0 < 0.1 + SLACK
            finally:
                cancel()

    run(backend_name, main)
