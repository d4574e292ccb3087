"""Listeners and addresses: listen-close-listen (SO_REUSEADDR), concurrent
accepts, the forms an address may take, tcp6, backlog."""

from __future__ import annotations

import socket

import pytest

import netpoll
from netpoll import net

from support import read_full, run
from support.net import conn_pair, ipv6_loopback, stream_pair

NEEDS_V6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback ([::1]) on this host")


def test_listen_close_listen_same_address(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        addr = ln.addr
        # The server side closes first, so its end sits in TIME_WAIT.
        s.close()
        await netpoll.sleep(0.01)
        c.close()
        ln.close()
        for _ in range(3):
            ln = net.listen("tcp", addr)
            try:
                assert ln.addr == addr
                c = await net.dial("tcp", addr)
                s = await ln.accept()
                s.close()
                c.close()
            finally:
                ln.close()

    run(backend_name, main)


def test_listen_on_address_in_use_fails(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            with pytest.raises(net.OpError) as ei:
                net.listen("tcp", ln.addr)
            e = ei.value
            assert e.op == "listen" and e.net == "tcp" and e.addr == ln.addr
            assert e.errno == 98 or "in use" in str(e)  # EADDRINUSE
            assert str(e).startswith(f"listen tcp {ln.addr}: ")
        finally:
            ln.close()

    run(backend_name, main)


def test_concurrent_accepts_on_one_listener(backend_name):
    acceptors, clients = 4, 40

    async def acceptor(ln, served):
        while True:
            try:
                conn = await ln.accept()
            except netpoll.ClosedError:
                return
            try:
                msg = await read_full(conn, 4)
                await conn.write(msg)
                served.append(msg)
            finally:
                conn.close()

    async def client(addr, i):
        c = await net.dial("tcp", addr)
        try:
            msg = i.to_bytes(4, "big")
            await c.write(msg)
            assert await read_full(c, 4) == msg
            return i
        finally:
            c.close()

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        served: list[bytes] = []
        try:
            accs = [netpoll.go(acceptor(ln, served)) for _ in range(acceptors)]
            cs = [netpoll.go(client(ln.addr, i)) for i in range(clients)]
            assert sorted([await g for g in cs]) == list(range(clients))
        finally:
            ln.close()
        for g in accs:
            await g  # each acceptor left through ClosedError
        assert sorted(served) == [i.to_bytes(4, "big") for i in range(clients)]

    run(backend_name, main)


# -- addresses ------------------------------------------------------------------

def test_listener_addr_forms(backend_name):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            port = ln.addr.port
            assert 0 < port < 65536
            assert ln.addr.host == "127.0.0.1"
            assert str(ln.addr) == f"127.0.0.1:{port}"
            assert isinstance(ln.addr, net.TCPAddr)
            host, p = ln.addr  # unpacks like a tuple
            assert (host, p) == ("127.0.0.1", port)
            assert ln.addr == net.TCPAddr("127.0.0.1", port)
            assert hash(ln.addr) == hash(net.TCPAddr("127.0.0.1", port))
        finally:
            ln.close()

    run(backend_name, main)


def test_every_address_form_is_accepted(backend_name):
    async def main():
        ln = net.listen("tcp", ("127.0.0.1", 0))  # a tuple for listen
        try:
            port = ln.addr.port
            forms = [
                f"127.0.0.1:{port}",
                ("127.0.0.1", port),
                ("127.0.0.1", str(port)),
                ln.addr,
                net.TCPAddr("127.0.0.1", port),
            ]
            for addr in forms:
                c = await net.dial("tcp", addr)
                s = await ln.accept()
                assert c.remote_addr == ln.addr, addr
                assert s.remote_addr == c.local_addr
                assert s.local_addr == ln.addr
                # Addresses netpoll returns are accepted back.
                c2 = await net.dial("tcp", c.remote_addr, local_addr=("127.0.0.1", 0))
                s2 = await ln.accept()
                for x in (c, s, c2, s2):
                    x.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_dial_with_local_addr(backend_name):
    async def main():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        lport = probe.getsockname()[1]
        probe.close()
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            c = await net.dial("tcp", ln.addr, local_addr=f"127.0.0.1:{lport}")
            s = await ln.accept()
            assert c.local_addr == net.TCPAddr("127.0.0.1", lport)
            assert s.remote_addr == c.local_addr
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_wildcard_listen_reachable_on_loopback(backend_name):
    async def main():
        for addr in (":0", ("", 0)):
            ln = net.listen("tcp4", addr)
            try:
                assert ln.addr.host == "0.0.0.0"
                c = await net.dial("tcp", ("127.0.0.1", ln.addr.port))
                s = await ln.accept()
                c.close()
                s.close()
            finally:
                ln.close()

    run(backend_name, main)


@NEEDS_V6
def test_tcp6_addresses(backend_name):
    async def main():
        ln = net.listen("tcp6", "[::1]:0")
        try:
            port = ln.addr.port
            assert ln.addr.host == "::1"
            assert str(ln.addr) == f"[::1]:{port}"
            for addr in (f"[::1]:{port}", ("::1", port), ln.addr):
                c = await net.dial("tcp6", addr)
                s = await ln.accept()
                assert str(c.remote_addr) == f"[::1]:{port}"
                assert str(s.remote_addr).startswith("[::1]:")
                await c.write(b"v6")
                assert await read_full(s, 2) == b"v6"
                c.close()
                s.close()
            # tcp4 will not take an IPv6 address, nor tcp6 an IPv4 one.
            with pytest.raises(net.OpError, match="IPv4"):
                await net.dial("tcp4", ln.addr)
            with pytest.raises(net.OpError, match="IPv6"):
                net.listen("tcp6", "127.0.0.1:0")
        finally:
            ln.close()

    run(backend_name, main)


@pytest.mark.parametrize("backlog", [0, 1, 5, None])
def test_backlog_values(backend_name, backlog):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0", backlog=backlog)
        try:
            c = await net.dial("tcp", ln.addr)
            s = await ln.accept()
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_default_backlog_is_somaxconn():
    n = net.listener_backlog()
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            want = min(int(f.read()), 65535)
    except OSError:
        want = socket.SOMAXCONN
    assert n == want


def test_tcp_defaults_on_conns(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            for conn in (c, s):
                nodelay = conn._control(lambda so: so.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                keepalive = conn._control(lambda so: so.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
                assert nodelay and keepalive
            c.set_no_delay(False)
            assert not c._control(lambda so: so.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            c.set_keep_alive(False)
            assert not c._control(lambda so: so.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    run(backend_name, main)
