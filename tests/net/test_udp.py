"""Datagrams: round trips with addresses, zero-byte datagrams, truncation,
connected UDP, udp4/udp6, and write_to with bad addresses."""

from __future__ import annotations

import pytest

import netpoll
from netpoll import net

from support import SLACK, run
from support.net import ipv6_loopback

NEEDS_V6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback ([::1]) on this host")


async def pair(network: str, host: str):
    a = net.listen_packet(network, f"{host}:0")
    try:
        b = net.listen_packet(network, f"{host}:0")
    except BaseException:
        a.close()
        raise
    for pc in (a, b):
        pc.set_read_deadline(netpoll.now() + SLACK)
    return a, b


@pytest.mark.parametrize("network,host", [
    ("udp", "127.0.0.1"),
    ("udp4", "127.0.0.1"),
    pytest.param("udp6", "[::1]", marks=NEEDS_V6),
    pytest.param("udp", "[::1]", marks=NEEDS_V6),
])
def test_udp_round_trip_with_addresses(backend_name, network, host):
    async def main():
        a, b = await pair(network, host)
        try:
            assert a.local_addr.port != 0
            assert str(a.local_addr) == f"{host}:{a.local_addr.port}"
            assert await b.write_to(b"ping", a.local_addr) == 4
            buf = bytearray(100)
            n, addr = await a.read_from(buf)
            assert bytes(buf[:n]) == b"ping"
            assert addr == b.local_addr
            assert isinstance(addr, net.UDPAddr)
            # The returned address is accepted as a destination.
            assert await a.write_to(b"pong", addr) == 4
            n, addr2 = await b.read_from(buf)
            assert (bytes(buf[:n]), addr2) == (b"pong", a.local_addr)
            # So are strings and tuples.
            await a.write_to(b"s", str(b.local_addr))
            await a.write_to(b"t", (b.local_addr.host, b.local_addr.port))
            got = set()
            for _ in range(2):
                n, _ = await b.read_from(buf)
                got.add(bytes(buf[:n]))
            assert got == {b"s", b"t"}
        finally:
            a.close()
            b.close()

    run(backend_name, main)


def test_udp_zero_byte_datagram_is_not_eof(backend_name):
    async def main():
        a, b = await pair("udp", "127.0.0.1")
        try:
            assert await b.write_to(b"", a.local_addr) == 0
            await b.write_to(b"after", a.local_addr)
            buf = bytearray(16)
            assert await a.read_from(buf) == (0, b.local_addr)
            n, addr = await a.read_from(buf)
            assert (bytes(buf[:n]), addr) == (b"after", b.local_addr)
        finally:
            a.close()
            b.close()

    run(backend_name, main)


def test_udp_datagram_larger_than_buffer_is_truncated(backend_name):
    async def main():
        a, b = await pair("udp", "127.0.0.1")
        try:
            big = bytes(range(256)) * 4
            await b.write_to(big, a.local_addr)
            await b.write_to(b"next", a.local_addr)
            buf = bytearray(10)
            n, addr = await a.read_from(buf)
            assert n == len(buf) and addr == b.local_addr
            assert bytes(buf) == big[:10]
            # The rest of the datagram is gone; the next one is whole.
            n, _ = await a.read_from(buf)
            assert bytes(buf[:n]) == b"next"
        finally:
            a.close()
            b.close()

    run(backend_name, main)


def test_udp_many_datagrams_in_order(backend_name):
    async def sender(pc, addr, k):
        for i in range(k):
            await pc.write_to(i.to_bytes(4, "big") * 8, addr)
            if i % 16 == 15:
                await netpoll.sleep(0.001)  # do not overrun the receive buffer

    async def main():
        a, b = await pair("udp", "127.0.0.1")
        try:
            k = 200
            g = netpoll.go(sender(b, a.local_addr, k))
            buf = bytearray(64)
            for i in range(k):
                n, _ = await a.read_from(buf)
                assert bytes(buf[:n]) == i.to_bytes(4, "big") * 8
            await g
        finally:
            a.close()
            b.close()

    run(backend_name, main)


def test_dialed_udp_reads_and_writes(backend_name):
    async def main():
        srv = net.listen_packet("udp", "127.0.0.1:0")
        c = None
        try:
            c = await net.dial("udp", srv.local_addr)
            assert isinstance(c, net.PacketConn)
            assert c.remote_addr == srv.local_addr
            assert await c.write(b"hi") == 2
            buf = bytearray(10)
            srv.set_read_deadline(netpoll.now() + SLACK)
            n, addr = await srv.read_from(buf)
            assert (bytes(buf[:n]), addr) == (b"hi", c.local_addr)
            await srv.write_to(b"", addr)
            await srv.write_to(b"yo", addr)
            c.set_read_deadline(netpoll.now() + SLACK)
            assert await c.read(buf) == 0  # a zero-byte datagram, not EOF
            assert await c.read(buf) == 2 and buf[:2] == b"yo"
        finally:
            srv.close()
            if c is not None:
                c.close()

    run(backend_name, main)


def test_dialed_udp_to_closed_port_reports_refused(backend_name):
    async def main():
        probe = net.listen_packet("udp", "127.0.0.1:0")
        addr = probe.local_addr
        probe.close()
        c = await net.dial("udp", addr)
        try:
            await c.write(b"anyone?")
            c.set_read_deadline(netpoll.now() + SLACK)
            with pytest.raises(ConnectionRefusedError) as ei:
                await c.read(bytearray(10))
            assert isinstance(ei.value, net.OpError) and ei.value.op == "read"
        finally:
            c.close()

    run(backend_name, main)


@pytest.mark.parametrize("bad,why", [
    ("1.2.3.4:x", "unknown port 'x'"),
    ("127.0.0.1", "missing port"),
    ("", "missing address"),
    ("[::1", "missing ']'"),
    (("127.0.0.1", 70000), "out of range"),
    (("127.0.0.1",), "(host, port)"),
    (42, "not int"),
])
def test_write_to_bad_address_is_a_clear_error(backend_name, bad, why):
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            with pytest.raises(net.OpError) as ei:
                await pc.write_to(b"x", bad)
            e = ei.value
            assert isinstance(e, ValueError), repr(e)
            assert e.op == "write" and e.net == "udp"
            assert why in str(e)
            assert repr(bad) in str(e) or str(bad) in str(e)
        finally:
            pc.close()

    run(backend_name, main)


@NEEDS_V6
@pytest.mark.parametrize("network,local,dst,why", [
    ("udp", "127.0.0.1:0", "[::1]:9", "non-IPv4 address"),
    ("udp4", "127.0.0.1:0", "[::1]:9", "needs an IPv4 address"),
    ("udp6", "[::1]:0", "127.0.0.1:9", "needs an IPv6 address"),
])
def test_write_to_wrong_family_is_a_clear_error(backend_name, network, local, dst, why):
    async def main():
        pc = net.listen_packet(network, local)
        try:
            with pytest.raises(net.OpError) as ei:
                await pc.write_to(b"x", dst)
            e = ei.value
            assert isinstance(e, ValueError), repr(e)
            assert e.op == "write" and e.net == network
            assert why in str(e) and dst in str(e)
        finally:
            pc.close()

    run(backend_name, main)


def test_write_to_error_names_the_destination(backend_name):
    # Go's table: UDP WriteTo errors carry Source = laddr, Addr = destination.
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            with pytest.raises(net.OpError) as ei:
                await pc.write_to(bytes(70_000), "127.0.0.1:9")  # EMSGSIZE
            e = ei.value
            assert e.op == "write" and e.source == pc.local_addr
            assert e.addr == net.UDPAddr("127.0.0.1", 9), repr(e.addr)
            assert str(e).startswith(f"write udp {pc.local_addr}->127.0.0.1:9: ")
        finally:
            pc.close()

    run(backend_name, main)


def test_read_from_into_read_only_buffer_is_type_error(backend_name):
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            with pytest.raises(TypeError):
                await pc.read_from(b"read-only")
            with pytest.raises(TypeError):
                await pc.write_to("text", "127.0.0.1:9")
        finally:
            pc.close()

    run(backend_name, main)
