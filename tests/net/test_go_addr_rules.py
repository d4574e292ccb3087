"""Go's address rules (net/ipsock.go, net/unixsock.go): IPv4-mapped
addresses are IPv4, one string form per address, a local address must fit
the remote family unless it is a wildcard, IPv6 zones are scope ids,
abstract unix names, write_to on a connected datagram conn, the peer name
as remote_addr, and dial(timeout=0)."""

from __future__ import annotations

import os
import pickle
import socket

import pytest

import netpoll
from netpoll import net

from support import read_full, run
from support.net import ipv6_loopback, stream_pair

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this host")
linux_only = pytest.mark.skipif(os.uname().sysname != "Linux", reason="the abstract unix namespace is Linux's")

MAPPED = "[::ffff:127.0.0.1]"


# -- IPv4-mapped addresses are IPv4 --------------------------------------------------

@pytest.mark.parametrize("network", ["tcp", "tcp4"])
def test_listen_mapped_is_an_ipv4_listener(backend_name, network):
    async def main():
        ln = net.listen(network, f"{MAPPED}:0")
        try:
            assert str(ln.addr) == f"127.0.0.1:{ln.addr.port}"
            c = await net.dial("tcp4", ln.addr)
            s = await ln.accept()
            assert str(s.local_addr) == str(ln.addr)
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


@pytest.mark.parametrize("network", ["udp", "udp4"])
def test_listen_packet_mapped_is_ipv4(backend_name, network):
    async def main():
        pc = net.listen_packet(network, f"{MAPPED}:0")
        try:
            assert str(pc.local_addr) == f"127.0.0.1:{pc.local_addr.port}"
        finally:
            pc.close()

    run(backend_name, main)


@pytest.mark.parametrize("network", ["tcp6", "udp6"])
def test_ipv6_only_networks_refuse_a_mapped_address(backend_name, network):
    async def main():
        ln = net.listen("tcp4", "127.0.0.1:0")
        try:
            target = f"{MAPPED}:{ln.addr.port}"
            listen = net.listen if network == "tcp6" else net.listen_packet
            with pytest.raises(net.OpError, match="no suitable address") as ei:
                listen(network, target)
            assert isinstance(ei.value.err, net.AddrError)
            with pytest.raises(net.OpError, match="no suitable address"):
                await net.dial(network, target)
        finally:
            ln.close()

    run(backend_name, main)


def test_one_string_form_per_address():
    parsed = net.resolve_addr("tcp", "[::ffff:7f00:1]:80")
    assert str(parsed) == "127.0.0.1:80"
    assert parsed == net.resolve_addr("tcp", "127.0.0.1:80") == net.resolve_addr("tcp", "[::ffff:127.0.0.1]:80")
    # IPv6 forms are canonical too.
    assert str(net.resolve_addr("tcp", "[0:0::0:1]:80")) == "[::1]:80"


@needs_ipv6
def test_kernel_and_parsed_forms_compare_equal(backend_name):
    # A dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d; netpoll
    # reports it as the IPv4 address the client has.
    async def main():
        ln = net.listen("tcp", "[::]:0")
        try:
            c = await net.dial("tcp4", f"127.0.0.1:{ln.addr.port}")
            s = await ln.accept()
            assert s.remote_addr == c.local_addr
            assert str(s.remote_addr) == f"127.0.0.1:{c.local_addr.port}"
            assert s.remote_addr == net.resolve_addr("tcp", f"{MAPPED}:{c.local_addr.port}")
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


# -- local addresses -----------------------------------------------------------------

@needs_ipv6
def test_dial_local_addr_of_the_other_family_is_an_operror(backend_name):
    async def main():
        ln = net.listen("tcp4", "127.0.0.1:0")
        ln6 = net.listen("tcp6", "[::1]:0")
        try:
            with pytest.raises(net.OpError, match="no suitable address") as ei:
                await net.dial("tcp", ln.addr, local_addr="[::1]:0")
            assert ei.value.op == "dial" and isinstance(ei.value.err, net.AddrError)
            with pytest.raises(net.OpError, match="no suitable address"):
                await net.dial("tcp", ln6.addr, local_addr="127.0.0.1:0")
        finally:
            ln.close()
            ln6.close()

    run(backend_name, main)


@needs_ipv6
@pytest.mark.parametrize("wild", ["0.0.0.0:0", "[::]:0", ":0"])
def test_wildcard_local_addr_fits_either_family(backend_name, wild):
    async def main():
        ln = net.listen("tcp4", "127.0.0.1:0")
        ln6 = net.listen("tcp6", "[::1]:0")
        try:
            for target, host in ((ln, "127.0.0.1"), (ln6, "::1")):
                c = await net.dial("tcp", target.addr, local_addr=wild)
                s = await target.accept()
                assert c.local_addr.host == host
                await c.write(b"hi")
                assert await read_full(s, 2) == b"hi"
                c.close()
                s.close()
        finally:
            ln.close()
            ln6.close()

    run(backend_name, main)


# -- IPv6 zones ----------------------------------------------------------------------

def test_numeric_zone_is_the_scope_id():
    lo = socket.if_nameindex()[0]
    a = net.resolve_addr("tcp", f"[fe80::1%{lo[1]}]:80")
    assert a.zone == lo[1] and a.sockaddr() == ("fe80::1", 80, 0, lo[0])
    b = net.resolve_addr("udp", f"[fe80::1%{lo[0]}]:80")
    assert b.sockaddr() == ("fe80::1", 80, 0, lo[0])
    assert str(a) == f"[fe80::1%{lo[1]}]:80"
    with pytest.raises(net.AddrError, match="zone"):
        net.resolve_addr("tcp", "[fe80::1%no-such-interface0]:80")
    with pytest.raises(net.AddrError, match="zone"):
        net.resolve_addr("tcp", "127.0.0.1%lo:80")


@needs_ipv6
def test_listen_with_a_zone(backend_name):
    async def main():
        name = socket.if_indextoname(1)
        ln = net.listen("tcp6", f"[::1%{name}]:0")
        try:
            c = await net.dial("tcp6", f"[::1%{name}]:{ln.addr.port}")
            s = await ln.accept()
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


# -- abstract unix names --------------------------------------------------------------

@linux_only
@pytest.mark.parametrize("network", ["unix", "unixgram"])
def test_abstract_unix_name(backend_name, network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"@netpoll-abstract-{os.getpid()}-{network}"

    async def main():
        if network == "unix":
            ln = net.listen("unix", name)
            try:
                assert os.listdir(tmp_path) == [], "an abstract name created a file"
                assert str(ln.addr) == name
                c = await net.dial("unix", name)
                s = await ln.accept()
                assert str(c.remote_addr) == name and str(s.local_addr) == name
                await c.write(b"abs")
                assert await read_full(s, 3) == b"abs"
                c.close()
                s.close()
            finally:
                ln.close()
        else:
            pc = net.listen_packet("unixgram", name)
            try:
                assert os.listdir(tmp_path) == [], "an abstract name created a file"
                assert str(pc.local_addr) == name
            finally:
                pc.close()
        assert os.listdir(tmp_path) == [], "an abstract name created a file"

    run(backend_name, main)


# -- datagram conns ------------------------------------------------------------------

def test_write_to_on_a_dialed_datagram_conn_fails_as_go(backend_name):
    async def main():
        pc = net.listen_packet("udp", "127.0.0.1:0")
        d = await net.dial("udp", pc.local_addr)
        try:
            with pytest.raises(net.OpError, match="use of WriteTo with pre-connected connection") as ei:
                await d.write_to(b"x", pc.local_addr)
            assert ei.value.op == "write" and isinstance(ei.value.err, net.WriteToConnectedError)
            await d.write(b"ok")  # the conn itself still works
            pc.set_deadline(netpoll.now() + 5)
            buf = bytearray(4)
            n, frm = await pc.read_from(buf)
            assert bytes(buf[:n]) == b"ok" and frm == d.local_addr
        finally:
            d.close()
            pc.close()

    run(backend_name, main)


# -- remote_addr and timeout=0 ----------------------------------------------------------

@pytest.mark.parametrize("form", [":{port}", "localhost:{port}", "127.0.0.1:{port}"])
def test_remote_addr_after_dial_is_the_peer_name(backend_name, form):
    async def main():
        ln = net.listen("tcp4", "127.0.0.1:0")
        try:
            c = await net.dial("tcp4", form.format(port=ln.addr.port))
            s = await ln.accept()
            assert str(c.remote_addr) == str(ln.addr)
            assert c.remote_addr == s.local_addr
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_dial_timeout_zero_means_no_timeout(backend_name):
    async def main():
        ln, c, s = await stream_pair()
        c.close()
        s.close()
        try:
            c = await net.dial("tcp", ln.addr, timeout=0)
            s = await ln.accept()
            await c.write(b"z")
            assert await read_full(s, 1) == b"z"
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_mapped_addresses_survive_pickling():
    a = net.resolve_addr("tcp", f"{MAPPED}:9")
    assert pickle.loads(pickle.dumps(a)) == a
