"""Pipes, FIFOs, ttys, sockets and subprocess pipes on the poller
(netpoll.pipe, netpoll.open_file, netpoll.File)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys

import pytest

import netpoll
from netpoll import net

SLACK = 2.0


def run(backend_name, main, *args):
    return netpoll.run(main(*args), backend=backend_name)


async def read_all(f, bufsize=65536) -> bytes:
    out = bytearray()
    buf = bytearray(bufsize)
    while n := await f.read(buf):
        out += buf[:n]
    return bytes(out)


# -- pipe() ----------------------------------------------------------------------------

def test_pipe_is_non_blocking_and_close_on_exec(backend_name):
    async def main():
        r, w = netpoll.pipe()
        try:
            for f in (r, w):
                assert isinstance(f, netpoll.File)
                assert not os.get_blocking(f.fileno())
                assert fcntl.fcntl(f.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
                assert f.kind == "pipe"
            assert (r.name, w.name) == ("|0", "|1")
        finally:
            r.close()
            w.close()
        assert r.closed and w.closed
        r.close()  # twice: a no-op

    run(backend_name, main)


def test_pipe_between_goroutines_and_eof(backend_name):
    data = os.urandom(1 << 20)  # more than a pipe holds: the writer parks

    async def writer(w):
        with w:
            assert await w.write(data) == len(data)

    async def main():
        r, w = netpoll.pipe()
        with r:
            g = netpoll.go(writer(w))
            got = await read_all(r)
            await g
        assert got == data  # then EOF: the writer closed

    run(backend_name, main)


def test_write_to_a_pipe_whose_reader_closed_is_epipe(backend_name):
    async def main():
        r, w = netpoll.pipe()
        r.close()
        with w:
            with pytest.raises(BrokenPipeError) as ei:
                await w.write(b"x")
        e = ei.value
        assert isinstance(e, net.OpError) and e.op == "write" and e.net == "pipe"
        assert e.errno == errno.EPIPE

    run(backend_name, main)


def test_a_blocked_writer_gets_epipe_when_the_reader_goes(backend_name):
    async def main():
        r, w = netpoll.pipe()
        with w:
            g = netpoll.go(w.write(b"x" * (4 << 20)))
            await netpoll.sleep(0.05)  # the pipe is full, the writer parked
            r.close()
            with pytest.raises(BrokenPipeError):
                await g

    run(backend_name, main)


def test_deadlines_and_close(backend_name):
    async def main():
        r, w = netpoll.pipe()
        try:
            t0 = netpoll.now()
            r.set_read_deadline(t0 + 0.1)
            with pytest.raises(TimeoutError) as ei:
                await r.read(bytearray(8))
            assert isinstance(ei.value, netpoll.DeadlineExceededError) and ei.value.op == "read"
            assert 0.1 <= netpoll.now() - t0 < 0.1 + SLACK
            r.set_read_deadline(None)
            # A full pipe: the write deadline ends the write.
            w.set_write_deadline(netpoll.now() + 0.1)
            with pytest.raises(TimeoutError):
                await w.write(b"y" * (4 << 20))
            w.set_deadline(None)
            with pytest.raises(TypeError, match="deadline"):
                w.set_deadline("1")
            # Close wakes a blocked read with ClosedError.
            r2, w2 = netpoll.pipe()
            g = netpoll.go(r2.read(bytearray(8)))
            await netpoll.sleep(0.02)
            r2.close()
            with pytest.raises(netpoll.ClosedError):
                await g
            w2.close()
        finally:
            r.close()
            w.close()

    run(backend_name, main)


# -- subprocess pipes -------------------------------------------------------------------

def test_popen_stdin_stdout_driven_from_goroutines(backend_name):
    cat = shutil.which("cat")
    argv = [cat] if cat else [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"]
    data = os.urandom(3 << 20)

    async def feed(stdin):
        with stdin:
            await stdin.write(data)

    async def main():
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            stdin = netpoll.open_file(proc.stdin)
            stdout = netpoll.open_file(proc.stdout)
            assert (stdin.kind, stdout.kind) == ("pipe", "pipe")
            with stdout:
                g = netpoll.go(feed(stdin))
                got = await read_all(stdout)
                await g
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            assert proc.stdin.closed and proc.stdout.closed  # the File closed them
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        assert proc.returncode == 0

    run(backend_name, main)


def test_child_exit_is_eof(backend_name):
    async def main():
        proc = subprocess.Popen([sys.executable, "-c", "print('bye')"], stdout=subprocess.PIPE)
        try:
            with netpoll.open_file(proc.stdout) as out:
                assert await read_all(out) == b"bye\n"
        finally:
            proc.wait(10)

    run(backend_name, main)


# -- ttys, FIFOs, sockets -------------------------------------------------------------------

def test_tty_blocking_mode_restored_after_close(backend_name):
    async def main():
        master, slave = os.openpty()
        watch = os.dup(slave)  # the same open file description: sees its flags
        try:
            assert os.get_blocking(slave)
            f = netpoll.open_file(slave)
            assert f.kind == "tty" and not os.get_blocking(watch)
            os.write(master, b"hello\n")
            buf = bytearray(64)
            n = await f.read(buf)
            assert bytes(buf[:n]) == b"hello\n"
            # A read parks until the other side writes.
            g = netpoll.go(f.read(buf))
            await netpoll.sleep(0.02)
            os.write(master, b"again\n")
            n = await g
            assert bytes(buf[:n]) == b"again\n"
            f.close()
            assert os.get_blocking(watch)  # back as it came
            with pytest.raises(OSError):
                os.fstat(slave)  # and the File closed its descriptor
        finally:
            os.close(watch)
            os.close(master)

    run(backend_name, main)


def test_non_blocking_descriptor_stays_non_blocking(backend_name):
    async def main():
        r, w = os.pipe()
        os.set_blocking(r, False)
        watch = os.dup(r)
        try:
            netpoll.open_file(r).close()
            assert not os.get_blocking(watch)
        finally:
            os.close(watch)
            os.close(w)

    run(backend_name, main)


def test_fifo(backend_name, tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)

    async def main():
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(path, os.O_WRONLY)
        r, w = netpoll.open_file(rfd), netpoll.open_file(wfd)
        assert (r.kind, w.kind) == ("fifo", "fifo")
        with r:
            g = netpoll.go(read_all(r))
            with w:
                await w.write(b"through the fifo")
            assert await g == b"through the fifo"

    run(backend_name, main)


@pytest.mark.parametrize("family,type_", [(socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_DGRAM),
                                          (socket.AF_INET, socket.SOCK_STREAM)])
def test_sockets_of_any_family(backend_name, family, type_):
    async def main():
        if family == socket.AF_INET:
            ln = socket.create_server(("127.0.0.1", 0))
            a = socket.create_connection(ln.getsockname())
            b, _ = ln.accept()
            ln.close()
        else:
            a, b = socket.socketpair(family, type_)
        fa, fb = netpoll.open_file(a), netpoll.open_file(b)
        assert fa.kind == "socket"
        with fa, fb:
            g = netpoll.go(fb.read(bytearray(16)))
            await netpoll.sleep(0.01)
            await fa.write(b"sock")
            assert await g == 4
        assert a.fileno() == -1 and b.fileno() == -1  # closed through the socket objects

    run(backend_name, main)


# -- what is refused ----------------------------------------------------------------------------

def test_regular_file_and_directory_are_not_pollable(backend_name, tmp_path):
    p = tmp_path / "plain"
    p.write_bytes(b"data")

    async def main():
        fd = os.open(str(p), os.O_RDONLY)
        dfd = os.open(str(tmp_path), os.O_RDONLY)
        try:
            for d, what in ((fd, "regular file"), (dfd, "directory")):
                with pytest.raises(netpoll.NotPollableError, match=what) as ei:
                    netpoll.open_file(d)
                assert ei.value.fd == d and f"fd {d}" in str(ei.value)
                assert os.get_blocking(d)  # untouched, still open
                os.fstat(d)
            with open(str(p), "rb") as fo:
                with pytest.raises(netpoll.NotPollableError):
                    netpoll.open_file(fo)
                assert not fo.closed
        finally:
            os.close(fd)
            os.close(dfd)

    run(backend_name, main)


def test_bad_arguments(backend_name):
    async def main():
        for bad in ("3", 1.5, None, True):
            with pytest.raises(TypeError, match="descriptor number"):
                netpoll.open_file(bad)
        with pytest.raises(ValueError, match="not an open descriptor"):
            netpoll.open_file(-1)
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with pytest.raises(OSError) as ei:
            netpoll.open_file(r)
        assert ei.value.errno == errno.EBADF

    run(backend_name, main)


def test_failed_registration_restores_blocking_mode_and_keeps_the_fd():
    # Outside a runtime there is no poller to register with.
    r, w = os.pipe()
    try:
        assert os.get_blocking(r)
        with pytest.raises(RuntimeError, match="no netpoll runtime"):
            netpoll.open_file(r)
        assert os.get_blocking(r)
        os.fstat(r)  # still open, still the caller's
        with pytest.raises(RuntimeError):
            netpoll.pipe()
    finally:
        os.close(r)
        os.close(w)


def test_a_device_the_poller_refuses_is_not_pollable_with_mode_restored(backend_name):
    # epoll refuses /dev/null (EPERM); poll and select take it. Either way
    # the descriptor comes back as it was when refused.
    async def main():
        fd = os.open(os.devnull, os.O_RDWR)
        try:
            try:
                f = netpoll.open_file(fd)
            except netpoll.NotPollableError as e:
                assert "refuses" in str(e)
                assert os.get_blocking(fd)
                os.fstat(fd)
                return
            assert f.kind == "chardev"
            assert await f.write(b"gone") == 4
            f.close()
            fd = -1
        finally:
            if fd >= 0:
                os.close(fd)

    run(backend_name, main)
