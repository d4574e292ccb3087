"""conn.sendfile: sendfile(2) in the FD layer's write loop, its read+write
fallback, deadlines and close as for write."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import tempfile

import pytest

import netpoll
from netpoll import net

SLACK = 2.0
MiB = 1 << 20


def run(backend_name, main, *args):
    return netpoll.run(main(*args), backend=backend_name)


@pytest.fixture(scope="module")
def big_file():
    """64 MiB of pseudo-random bytes (repeated 1 MiB blocks differ by an index) and its sha256."""
    f = tempfile.TemporaryFile()
    h = hashlib.sha256()
    block = os.urandom(MiB)
    for i in range(64):
        chunk = i.to_bytes(4, "big") + block[4:]
        f.write(chunk)
        h.update(chunk)
    f.flush()
    yield f, h.hexdigest()
    f.close()


async def pair(network="tcp"):
    if network == "unix":
        path = tempfile.mktemp(prefix="np-sf-")
        ln = net.listen("unix", path)
    else:
        ln = net.listen("tcp", "127.0.0.1:0")
    g = netpoll.go(ln.accept())
    c = await net.dial(network, ln.addr)
    s = await g
    ln.close()
    return c, s


async def digest(conn):
    h = hashlib.sha256()
    buf = bytearray(1 << 18)
    total = 0
    while n := await conn.read(buf):
        h.update(memoryview(buf)[:n])
        total += n
    return h.hexdigest(), total


@pytest.mark.parametrize("network", ["tcp", "unix"])
def test_64_mib_with_checksum(backend_name, big_file, network, monkeypatch):
    f, want = big_file
    calls = []
    real = os.sendfile

    def counting(*a):
        calls.append(a[3])
        return real(*a)

    monkeypatch.setattr(os, "sendfile", counting)

    async def main():
        c, s = await pair(network)
        with s:
            r = netpoll.go(digest(s))
            with c:
                assert await c.sendfile(f) == 64 * MiB
            assert await r == (want, 64 * MiB)
        assert f.tell() == 64 * MiB  # as socket.sendfile leaves it
        assert calls and max(calls) <= 4 * MiB  # Go's maxSendfileSize per call

    run(backend_name, main)


def test_offset_and_count(backend_name, big_file):
    f, _ = big_file

    async def main():
        c, s = await pair()
        with s:
            r = netpoll.go(digest(s))
            with c:
                assert await c.sendfile(f, offset=3 * MiB + 5, count=MiB + 7) == MiB + 7
                assert await c.sendfile(f, offset=10, count=0) == 0
                # Past the end: nothing to send.
                assert await c.sendfile(f, offset=65 * MiB) == 0
            f.seek(3 * MiB + 5)
            assert await r == (hashlib.sha256(f.read(MiB + 7)).hexdigest(), MiB + 7)

    run(backend_name, main)


def test_write_deadline_ends_a_sendfile_nobody_reads(backend_name, big_file):
    f, _ = big_file

    async def main():
        c, s = await pair()
        with c, s:
            t0 = netpoll.now()
            c.set_write_deadline(t0 + 0.2)
            with pytest.raises(TimeoutError) as ei:
                await c.sendfile(f)
            e = ei.value
            assert isinstance(e, netpoll.DeadlineExceededError) and isinstance(e, net.OpError)
            assert e.op == "sendfile" and e.timeout()
            assert 0.2 <= netpoll.now() - t0 < 0.2 + SLACK
            # A past deadline fails at once, before any byte.
            with pytest.raises(TimeoutError):
                await c.sendfile(f)

    run(backend_name, main)


def test_close_wakes_a_parked_sendfile(backend_name, big_file):
    f, _ = big_file

    async def main():
        c, s = await pair()
        with s:
            g = netpoll.go(c.sendfile(f))
            await netpoll.sleep(0.05)  # the socket buffers are full: parked
            c.close()
            with pytest.raises(netpoll.ClosedError):
                await g

    run(backend_name, main)


def test_sendfile_and_write_share_the_write_lock(backend_name, big_file):
    # A write issued while sendfile is parked waits for it: the bytes do not interleave.
    f, _ = big_file

    async def main():
        c, s = await pair()
        with s:
            r = netpoll.go(digest(s))
            with c:
                g = netpoll.go(c.sendfile(f, count=8 * MiB))
                await netpoll.sleep(0)
                await c.write(b"tail")
                assert await g == 8 * MiB
            f.seek(0)
            assert await r == (hashlib.sha256(f.read(8 * MiB) + b"tail").hexdigest(), 8 * MiB + 4)

    run(backend_name, main)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP])
def test_fallback_when_the_kernel_cannot_sendfile(backend_name, big_file, monkeypatch, code):
    f, want = big_file
    calls = []

    def refuse(*a):
        calls.append(a)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "sendfile", refuse)

    async def main():
        c, s = await pair()
        with s:
            r = netpoll.go(digest(s))
            with c:
                assert await c.sendfile(f) == 64 * MiB
            assert await r == (want, 64 * MiB)
        assert len(calls) == 1  # asked once, then read+write

    run(backend_name, main)


def test_error_after_progress_is_not_a_fallback(backend_name, big_file, monkeypatch):
    # Go: handled once a byte went; the error is the caller's.
    f, _ = big_file
    real = os.sendfile
    calls = []

    def once_then_einval(out, fd, off, n):
        calls.append(off)
        if len(calls) == 1:
            return real(out, fd, off, 1000)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", once_then_einval)

    async def main():
        c, s = await pair()
        with c, s:
            r = netpoll.go(digest(s))
            with pytest.raises(net.OpError) as ei:
                await c.sendfile(f)
            assert ei.value.errno == errno.EINVAL and ei.value.op == "sendfile"
            c.close_write()
            assert (await r)[1] == 1000

    run(backend_name, main)


def test_a_source_without_a_descriptor_is_copied(backend_name):
    data = os.urandom(3 * MiB + 11)

    async def main():
        c, s = await pair()
        with s:
            r = netpoll.go(digest(s))
            src = io.BytesIO(data)
            with c:
                assert await c.sendfile(src, offset=11) == len(data) - 11
            assert src.tell() == len(data)
            assert await r == (hashlib.sha256(data[11:]).hexdigest(), len(data) - 11)

    run(backend_name, main)


def test_a_source_that_is_not_a_regular_file_is_copied(backend_name):
    # sendfile(2) reads only files it can map; a socket is read in order.
    async def main():
        a, b = socket.socketpair()
        with a, b:
            a.sendall(b"from a socket")
            a.shutdown(socket.SHUT_WR)
            c, s = await pair()
            with s:
                r = netpoll.go(digest(s))
                with c:
                    with b.makefile("rb", buffering=0) as src:
                        assert await c.sendfile(src) == 13
                assert await r == (hashlib.sha256(b"from a socket").hexdigest(), 13)
                with b.makefile("rb", buffering=0) as src:
                    with pytest.raises(io.UnsupportedOperation):  # an offset needs a seekable file
                        await c.sendfile(src, offset=3)

    run(backend_name, main)


def test_bad_arguments(backend_name, big_file):
    f, _ = big_file

    async def main():
        c, s = await pair()
        with c, s:
            for kw, why in (({"offset": -1}, "offset"), ({"offset": 1.5}, "offset"),
                            ({"count": -1}, "count"), ({"count": True}, "count")):
                with pytest.raises(ValueError, match=why):
                    await c.sendfile(f, **kw)
            with pytest.raises(TypeError, match="binary file object"):
                await c.sendfile(b"bytes")
        with pytest.raises(netpoll.ClosedError):
            await c.sendfile(f)

    run(backend_name, main)


def test_sendfile_to_a_plain_socket_reader(backend_name, big_file):
    # The reader is the stdlib's blocking socket in a thread, not netpoll.
    import threading

    f, want = big_file

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        peer = socket.create_connection(ln.addr.sockaddr())
        c = await ln.accept()
        ln.close()
        result = []

        def reader():
            h, total = hashlib.sha256(), 0
            with peer:
                while chunk := peer.recv(1 << 20):
                    h.update(chunk)
                    total += len(chunk)
            result.append((h.hexdigest(), total))

        t = threading.Thread(target=reader)
        t.start()
        with c:
            assert await c.sendfile(f) == 64 * MiB
        while t.is_alive():  # keep the runtime alive (and not deadlocked) meanwhile
            await netpoll.sleep(0.005)
        t.join()
        assert result == [(want, 64 * MiB)]

    run(backend_name, main)
