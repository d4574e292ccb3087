"""Unix-domain sockets: stream echo over a path, the socket file's removal
on close, sun_path limits, unixgram round trips."""

from __future__ import annotations

import os
import stat

import pytest

import netpoll
from netpoll import net

from support import SLACK, read_full, run
from support.net import conn_pair


@pytest.fixture
def sock_dir(tmp_path):
    # Unix socket paths are short (sun_path); keep the names short too.
    if len(os.fsencode(str(tmp_path))) > net.SUN_PATH_MAX - 16:
        pytest.skip(f"temporary directory too long for a unix socket path: {tmp_path}")
    return tmp_path


def test_unix_listen_dial_echo(backend_name, sock_dir):
    path = str(sock_dir / "s")

    async def echo(conn):
        buf = bytearray(4096)
        while n := await conn.read(buf):
            await conn.write(buf[:n])
        conn.close()

    async def main():
        ln = net.listen("unix", path)
        try:
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            assert isinstance(ln.addr, net.UnixAddr) and ln.addr.path == path
            assert str(ln.addr) == path
            srv = netpoll.go(ln.accept())
            c = await net.dial("unix", path)
            s = await srv
            h = netpoll.go(echo(s))
            try:
                for size in (1, 100, 100_000):
                    msg = os.urandom(size)
                    await c.write(msg)
                    assert await read_full(c, size) == msg
                assert c.remote_addr == ln.addr
                c.close_write()
                assert await c.read(bytearray(1)) == 0
                await h
            finally:
                c.close()
                s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_unix_addresses_accepted_as_str_pathlike_and_addr(backend_name, sock_dir):
    p = sock_dir / "a"

    async def main():
        ln = net.listen("unix", p)  # a PathLike
        try:
            for addr in (str(p), p, ln.addr):
                c = await net.dial("unix", addr)
                s = await ln.accept()
                c.close()
                s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_unix_socket_file_removed_on_listener_close(backend_name, sock_dir):
    path = str(sock_dir / "gone")

    async def main():
        ln = net.listen("unix", path)
        assert os.path.exists(path)
        ln.close()
        assert not os.path.exists(path)
        ln.close()  # twice: still fine, nothing else removed
        # The path can be listened on again.
        ln2 = net.listen("unix", path)
        ln2.close()
        assert not os.path.exists(path)

    run(backend_name, main)


def test_unix_listen_on_existing_path_fails(backend_name, sock_dir):
    path = sock_dir / "taken"
    path.write_text("not a socket")

    async def main():
        with pytest.raises(net.OpError) as ei:
            net.listen("unix", str(path))
        e = ei.value
        assert isinstance(e, FileExistsError) or "in use" in str(e), repr(e)
        assert e.op == "listen" and e.net == "unix" and str(path) in str(e)
        assert path.read_text() == "not a socket"  # not removed by the failure

    run(backend_name, main)


@pytest.mark.parametrize("extra", [0, 1, 50])
def test_unix_path_longer_than_sun_path_is_an_error_naming_it(backend_name, sock_dir, extra):
    name = "p" * (net.SUN_PATH_MAX + extra - len(os.fsencode(str(sock_dir))) - 1)
    path = str(sock_dir / name)
    assert len(os.fsencode(path)) >= net.SUN_PATH_MAX

    async def main():
        for call in (lambda: net.listen("unix", path),
                     lambda: net.listen_packet("unixgram", path)):
            with pytest.raises(net.OpError) as ei:
                call()
            assert isinstance(ei.value, ValueError)
            assert path in str(ei.value)
            assert "sun_path" in str(ei.value)
        with pytest.raises(net.OpError) as ei:
            await net.dial("unix", path)
        assert path in str(ei.value) and ei.value.op == "dial"
        # Never truncated: no file appeared under a shortened name.
        assert os.listdir(sock_dir) == []

    run(backend_name, main)


def test_unix_longest_path_that_fits_works(backend_name, sock_dir):
    name = "q" * (net.SUN_PATH_MAX - 1 - len(os.fsencode(str(sock_dir))) - 1)
    path = str(sock_dir / name)
    assert len(os.fsencode(path)) == net.SUN_PATH_MAX - 1

    async def main():
        ln = net.listen("unix", path)
        try:
            assert ln.addr.path == path
            c = await net.dial("unix", path)
            s = await ln.accept()
            c.close()
            s.close()
        finally:
            ln.close()

    run(backend_name, main)


def test_unix_dial_missing_path(backend_name, sock_dir):
    path = str(sock_dir / "nobody")

    async def main():
        with pytest.raises(net.OpError) as ei:
            await net.dial("unix", path)
        e = ei.value
        assert isinstance(e, FileNotFoundError), repr(e)
        assert e.op == "dial" and str(e).startswith(f"dial unix {path}: ")

    run(backend_name, main)


def test_unixgram_round_trip(backend_name, sock_dir):
    pa, pb = str(sock_dir / "ga"), str(sock_dir / "gb")

    async def main():
        a = net.listen_packet("unixgram", pa)
        b = net.listen_packet("unixgram", pb)
        try:
            a.set_read_deadline(netpoll.now() + SLACK)
            b.set_read_deadline(netpoll.now() + SLACK)
            assert await a.write_to(b"hello", pb) == 5
            buf = bytearray(16)
            n, addr = await b.read_from(buf)
            assert bytes(buf[:n]) == b"hello"
            assert isinstance(addr, net.UnixAddr) and addr.path == pa
            await b.write_to(b"", addr)  # zero-byte datagram, the returned address
            await b.write_to(b"back", a.local_addr)
            assert await a.read_from(buf) == (0, b.local_addr)
            n, _ = await a.read_from(buf)
            assert bytes(buf[:n]) == b"back"
        finally:
            a.close()
            b.close()
            for p in (pa, pb):
                if os.path.exists(p):
                    os.unlink(p)

    run(backend_name, main)


def test_unix_abstract_socket(backend_name):
    if os.uname().sysname != "Linux":
        pytest.skip("abstract unix sockets are Linux-only")
    name = f"\0netpoll-test-{os.getpid()}-{backend_name}"

    async def main():
        async with conn_pair("unix", name) as (ln, c, s):
            await c.write(b"abs")
            assert await read_full(s, 3) == b"abs"

    run(backend_name, main)
