"""Fault injection through the hook table (Go's net/internal/socktest): an
error injected at every hooked call, before and after the real call, reaches
the caller as an OpError and leaks no socket (``sw.sockets()`` is empty after
cleanup). Go's TestDialError, TestListenError,
TestAcceptIgnoreAbortedConnRequest, TestDialTimeoutFDLeak."""

from __future__ import annotations

import errno
import os

import pytest

import netpoll
from netpoll import hooks, net
from netpoll.socktest import Switch, fail

from support import read_full, run
from support.net import stream_pair

ERRNOS = [errno.EMFILE, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EACCES,
          errno.ENOBUFS, errno.ENFILE, errno.EADDRNOTAVAIL]
WHEN = ["before", "after"]


class Once:
    """A filter that fails the first ``times`` calls with ``code``, before or
    after the real call, and counts every call it sees."""

    def __init__(self, code: int, when: str = "before", times: int = 1) -> None:
        self.code, self.when, self.left, self.calls = code, when, times, 0
        self.statuses = []

    def __call__(self, st):
        self.calls += 1
        self.statuses.append(st)
        if self.left <= 0:
            return None
        self.left -= 1
        if self.when == "before":
            fail(self.code)

        def after(st):
            assert st.err is None, st.err  # the real call succeeded
            fail(self.code)

        return after


def expected_class(code: int) -> type:
    return type(OSError(code, os.strerror(code)))


def check_injected(e: BaseException, code: int, op: str, network: str) -> None:
    assert isinstance(e, net.OpError), repr(e)
    assert isinstance(e, expected_class(code)), repr(e)
    assert e.errno == code, repr(e)
    assert (e.op, e.net) == (op, network)
    assert os.strerror(code) in str(e)


@pytest.fixture
def sw():
    s = Switch()
    s.install()
    try:
        yield s
    finally:
        s.uninstall()
    assert hooks.socket is hooks.DEFAULTS["socket"]


def test_switch_installs_and_restores_every_hook():
    sw = Switch()
    with sw:
        for name in hooks.NAMES:
            assert getattr(hooks, name) == getattr(sw, name)
        with pytest.raises(RuntimeError):
            sw.install()
    for name in hooks.NAMES:
        assert getattr(hooks, name) is hooks.DEFAULTS[name]
    with pytest.raises(ValueError, match="unknown hooked call"):
        sw.set("bind", None)


# -- socket ------------------------------------------------------------------------

@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("code", ERRNOS)
def test_inject_socket(backend_name, sw, when, code):
    async def main():
        f = Once(code, when, times=3)
        sw.set("socket", f)
        with pytest.raises(net.OpError) as ei:
            net.listen("tcp", "127.0.0.1:0")
        check_injected(ei.value, code, "listen", "tcp")
        with pytest.raises(net.OpError) as ei:
            await net.dial("tcp", "127.0.0.1:9")
        check_injected(ei.value, code, "dial", "tcp")
        assert ei.value.addr == net.TCPAddr("127.0.0.1", 9)
        with pytest.raises(net.OpError) as ei:
            net.listen_packet("udp", "127.0.0.1:0")
        check_injected(ei.value, code, "listen", "udp")
        assert f.calls == 3
        assert not sw.sockets()
        assert sw.total("opened") == 0 and sw.total("open_failed") == 3
        # With the filter spent, the same calls work.
        ln, c, s = await stream_pair()
        for x in (c, s, ln):
            x.close()

    run(backend_name, main)
    assert not sw.sockets()


# -- connect -----------------------------------------------------------------------

@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("code", ERRNOS)
def test_inject_connect(backend_name, sw, when, code):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            f = Once(code, when)
            sw.set("connect", f)
            with pytest.raises(net.OpError) as ei:
                await net.dial("tcp", ln.addr)
            check_injected(ei.value, code, "dial", "tcp")
            assert ei.value.addr == ln.addr
            assert f.calls == 1
            assert list(sw.sockets()) == [ln.fileno()]
            assert sw.total("connect_failed") == 1
            # Unused: the next dial connects.
            c = await net.dial("tcp", ln.addr)
            s = await ln.accept()
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


def test_injected_connect_timeout_leaks_nothing(backend_name, sw):
    # Go's TestDialTimeoutFDLeak: the connect "times out" in the kernel.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            before = sw.sockets()
            sw.set("connect", Once(errno.ETIMEDOUT, "after", times=5))
            for _ in range(5):
                with pytest.raises(TimeoutError) as ei:
                    await net.dial("tcp", ln.addr, timeout=1)
                assert isinstance(ei.value, net.OpError) and ei.value.op == "dial"
            assert sw.sockets() == before
        finally:
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


# -- getsockopt (SO_ERROR after an asynchronous connect) --------------------------

@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("code", ERRNOS)
def test_inject_getsockopt(backend_name, sw, when, code):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            f = Once(code, when)
            sw.set("getsockopt", f)
            try:
                c = await net.dial("tcp", ln.addr)
            except net.OpError as e:
                check_injected(e, code, "dial", "tcp")
                assert f.calls == 1
            else:
                c.close()
                s = await ln.accept()
                s.close()
                assert f.calls == 0
                pytest.skip("connect completed at once: no SO_ERROR check to fail")
            assert list(sw.sockets()) == [ln.fileno()]
        finally:
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


# -- listen ------------------------------------------------------------------------

@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("code", ERRNOS)
def test_inject_listen(backend_name, sw, when, code, tmp_path):
    async def main():
        f = Once(code, when, times=2)
        sw.set("listen", f)
        with pytest.raises(net.OpError) as ei:
            net.listen("tcp", "127.0.0.1:0")
        check_injected(ei.value, code, "listen", "tcp")
        assert ei.value.addr is not None and ei.value.addr.host == "127.0.0.1"
        path = str(tmp_path / "l")
        with pytest.raises(net.OpError) as ei:
            net.listen("unix", path)
        check_injected(ei.value, code, "listen", "unix")
        assert f.calls == 2
        assert not sw.sockets()
        assert sw.total("listen_failed") == 2
        ln = net.listen("tcp", "127.0.0.1:0")
        ln.close()

    run(backend_name, main)
    assert not sw.sockets()


# -- accept ------------------------------------------------------------------------

async def _pending(ln, n: int = 1):
    conns = [await net.dial("tcp", ln.addr) for _ in range(n)]
    await netpoll.sleep(0.01)
    return conns


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("code", [c for c in ERRNOS if c != errno.ECONNABORTED])
def test_inject_accept_leaves_listener_usable(backend_name, sw, when, code):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        conns = []
        try:
            conns = await _pending(ln, 2)
            f = Once(code, when)
            sw.set("accept", f)
            with pytest.raises(net.OpError) as ei:
                await ln.accept()
            check_injected(ei.value, code, "accept", "tcp")
            assert ei.value.source is None and ei.value.addr == ln.addr
            if code in (errno.EMFILE, errno.ENFILE):
                assert ei.value.temporary()
            # The listener is still usable: the queued connections come out.
            remaining = conns[1:] if when == "after" else conns
            for c in remaining:
                s = await ln.accept()
                assert s.remote_addr == c.local_addr
                await c.write(b"ok")
                assert await read_full(s, 2) == b"ok"
                s.close()
            if when == "after":
                # The connection taken by the failed accept was closed.
                conns[0].set_read_deadline(netpoll.now() + 2)
                try:
                    assert await conns[0].read(bytearray(1)) == 0
                except ConnectionResetError:
                    pass
            assert sw.total("accept_failed") == 1
        finally:
            for c in conns:
                c.close()
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


@pytest.mark.parametrize("when", WHEN)
def test_accept_ignores_aborted_connection(backend_name, sw, when):
    # Go's TestAcceptIgnoreAbortedConnRequest: ECONNABORTED is retried
    # silently and the following real connection is accepted.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        conns = []
        try:
            conns = await _pending(ln, 2)
            f = Once(errno.ECONNABORTED, when, times=1)
            sw.set("accept", f)
            s = await ln.accept()
            want = conns[1] if when == "after" else conns[0]
            assert s.remote_addr == want.local_addr
            await want.write(b"hi")
            assert await read_full(s, 2) == b"hi"
            s.close()
            assert f.calls >= 2  # the aborted attempt and the retry
        finally:
            for c in conns:
                c.close()
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


def test_accept_retries_many_aborted_connections(backend_name, sw):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        conns = []
        try:
            conns = await _pending(ln, 1)
            sw.set("accept", Once(errno.ECONNABORTED, "before", times=50))
            s = await ln.accept()
            assert s.remote_addr == conns[0].local_addr
            s.close()
        finally:
            for c in conns:
                c.close()
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


def test_accept_emfile_while_blocked(backend_name, sw):
    # The accept is parked when the connection arrives; the retry after the
    # wakeup fails, and a later accept succeeds.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = None
        try:
            f = Once(errno.EMFILE, "before", times=1)
            g = netpoll.go(ln.accept())
            await netpoll.sleep(0.02)
            sw.set("accept", f)
            c = await net.dial("tcp", ln.addr)
            with pytest.raises(net.OpError) as ei:
                await g
            check_injected(ei.value, errno.EMFILE, "accept", "tcp")
            s = await ln.accept()
            s.close()
        finally:
            if c is not None:
                c.close()
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


# -- close -------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.EIO, errno.EINTR, errno.ENOSPC])
def test_inject_close_after(backend_name, sw, code):
    # The descriptor is closed, the error is reported as an OpError "close".
    async def main():
        ln, c, s = await stream_pair()
        la, ra = c.local_addr, c.remote_addr
        fd = c.fileno()
        sw.set("close", Once(code, "after"))
        with pytest.raises(net.OpError) as ei:
            c.close()
        check_injected(ei.value, code, "close", "tcp")
        assert (ei.value.source, ei.value.addr) == (la, ra)
        assert fd not in sw.sockets()
        c.close()  # closed already: a no-op
        s.close()
        ln.close()

    run(backend_name, main)
    assert not sw.sockets()
    assert sw.total("close_failed") == 1


@pytest.mark.parametrize("code", [errno.EIO, errno.EBADF])
def test_inject_close_before(backend_name, sw, code):
    # A close cancelled before the call keeps the descriptor (as in Go's
    # socktest); it is reported, and a real close through the hooks frees it.
    async def main():
        ln, c, s = await stream_pair()
        fd = c.fileno()
        sw.set("close", Once(code, "before"))
        with pytest.raises(net.OpError) as ei:
            c.close()
        check_injected(ei.value, code, "close", "tcp")
        assert c.closed
        assert fd in sw.sockets()
        with pytest.raises(netpoll.ClosedError):
            await c.read(bytearray(1))
        hooks.close(c._sock)
        assert fd not in sw.sockets()
        s.close()
        ln.close()

    run(backend_name, main)
    assert not sw.sockets()


def test_close_error_on_a_failed_dial_path_is_swallowed(backend_name, sw):
    # When dial fails and closing its socket fails too, the dial error wins.
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            sw.set("connect", Once(errno.ECONNREFUSED, "before"))
            sw.set("close", Once(errno.EIO, "after"))
            with pytest.raises(ConnectionRefusedError):
                await net.dial("tcp", ln.addr)
            assert list(sw.sockets()) == [ln.fileno()]
        finally:
            sw.set("close", None)
            ln.close()

    run(backend_name, main)
    assert not sw.sockets()


# -- bookkeeping ---------------------------------------------------------------------

def test_switch_counts_a_clean_session(backend_name, sw):
    async def main():
        ln, c, s = await stream_pair()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        assert len(sw.sockets()) == 4
        await c.write(b"x")
        assert await read_full(s, 1) == b"x"
        for x in (c, s, ln, pc):
            x.close()

    run(backend_name, main)
    assert not sw.sockets()
    assert sw.total("opened") == 3  # listener, dialer, packet conn
    assert sw.total("accepted") == 1
    assert sw.total("listened") == 1
    assert sw.total("connected") >= 1
    assert sw.total("closed") == 4
    failed = ("open_failed", "connect_failed", "listen_failed", "accept_failed", "close_failed")
    assert all(sw.total(k) == 0 for k in failed)


def test_dial_errors_leak_nothing_in_bulk(backend_name, sw):
    # Go's TestDialTimeoutFDLeak / TestDialerDualStackFDLeak shape: many
    # failing dials, the socket table is unchanged.
    from support.net import refused_port

    async def main():
        blocker, port = refused_port()
        try:
            before = sw.sockets()
            for _ in range(50):
                with pytest.raises(ConnectionRefusedError):
                    await net.dial("tcp", ("127.0.0.1", port), timeout=2)
            assert sw.sockets() == before
        finally:
            blocker.close()

    run(backend_name, main)
    assert not sw.sockets()
    assert sw.total("opened") == sw.total("closed") == 50
