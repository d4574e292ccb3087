"""netpoll.aio's compiled socket stream transport (TCP and unix): asyncio's
transport semantics and its error paths, against plain sockets as the peer,
on every backend."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import tempfile

import pytest

from netpoll import aio
from netpoll.aio._transport import SocketTransport

FAMILIES = ["tcp", "unix"]


class Recorder(asyncio.Protocol):
    """Records every callback; ``done`` resolves at connection_lost."""

    def __init__(self, keep_open=False):
        self.events = []
        self.data = bytearray()
        self.keep_open = keep_open
        self.transport = None
        self.done = asyncio.get_running_loop().create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data
        self.got.set()

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)

    async def wait_for(self, n):
        while len(self.data) < n:
            self.got.clear()
            await self.got.wait()


async def pair(family, factory, tmpdir):
    """(transport, protocol, peer): the transport from create_connection,
    the peer a plain non-blocking socket accepted from a listener."""
    loop = asyncio.get_running_loop()
    if family == "tcp":
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
    else:
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(os.path.join(tmpdir, "s"))
    with lsock:
        lsock.listen(1)
        lsock.setblocking(False)
        if family == "tcp":
            conn = loop.create_connection(factory, *lsock.getsockname())
        else:
            conn = loop.create_unix_connection(factory, lsock.getsockname())
        (tr, pr), (peer, _) = await asyncio.gather(conn, loop.sock_accept(lsock))
    peer.setblocking(False)
    return tr, pr, peer


async def drain_peer(peer, n):
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(peer, 1 << 20)
        assert chunk, f"peer saw EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


def reset(peer):
    # close() with SO_LINGER 0 sends a reset instead of a FIN.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


@pytest.fixture
def tmpdir_short():
    with tempfile.TemporaryDirectory() as d:
        yield d


def run(main, backend_name):
    return aio.run(main(), backend=backend_name)


@pytest.mark.parametrize("family", FAMILIES)
def test_transport_class_and_extra_info(backend_name, family, tmpdir_short):
    async def main():
        tr, pr, peer = await pair(family, Recorder, tmpdir_short)
        with peer:
            assert type(tr) is SocketTransport
            assert isinstance(tr, asyncio.Transport)
            assert isinstance(tr, asyncio.transports._FlowControlMixin)
            sock = tr.get_extra_info("socket")
            assert sock.fileno() == tr._sock_fd
            assert tr.get_extra_info("sockname") == sock.getsockname()
            assert tr.get_extra_info("peername") == peer.getsockname()
            assert tr.get_extra_info("nothing", "dflt") == "dflt"
            assert tr.get_protocol() is pr and pr.transport is tr
            assert tr.is_reading() and not tr.is_closing() and tr.can_write_eof()
            assert "fd=" in repr(tr) and "read=polling" in repr(tr)
            tr.close()
            assert tr.is_closing() and not tr.is_reading()
            assert await pr.done is None
            assert pr.events == ["made", "lost"]
            assert "closed" in repr(tr)

    run(main, backend_name)


@pytest.mark.parametrize("family", FAMILIES)
def test_echo_both_ways_and_writelines(backend_name, family, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair(family, Recorder, tmpdir_short)
        with peer:
            tr.write(b"ab")
            tr.write(bytearray(b"cd"))
            tr.write(memoryview(b"xxefxx")[2:4])
            tr.writelines([b"g", memoryview(b"h"), bytearray(b"i")])
            tr.write(b"")
            assert await drain_peer(peer, 9) == b"abcdefghi"
            await loop.sock_sendall(peer, b"from peer")
            await pr.wait_for(9)
            assert bytes(pr.data) == b"from peer"
            tr.close()
            await pr.done

    run(main, backend_name)


def test_write_refuses_what_is_not_bytes(backend_name, tmpdir_short):
    async def main():
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        with peer:
            with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
                tr.write("text")
            with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\)"):
                tr.set_write_buffer_limits(high=1, low=2)
            tr.close()
            await pr.done

    run(main, backend_name)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, size=7):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.sizes = []
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.sizes.append(nbytes)
        self.data += self.buf[:nbytes]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.done.set_result(exc)


@pytest.mark.parametrize("family", FAMILIES)
def test_buffered_protocol_reads_into_its_buffer(backend_name, family, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair(family, Buffered, tmpdir_short)
        payload = bytes(range(256)) * 40
        await loop.sock_sendall(peer, payload)
        peer.close()
        assert await pr.done is None   # EOF closes (eof_received returned False)
        assert bytes(pr.data) == payload
        assert max(pr.sizes) <= 7

    run(main, backend_name)


class EmptyBuffer(Buffered):
    def get_buffer(self, sizehint):
        return bytearray()


def test_get_buffer_failure_is_fatal(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, pr, peer = await pair("tcp", EmptyBuffer, tmpdir_short)
        with peer:
            await loop.sock_sendall(peer, b"x")
            exc = await pr.done
        assert isinstance(exc, RuntimeError) and "empty buffer" in str(exc)
        assert errors[0]["message"] == "Fatal error: protocol.get_buffer() call failed."
        assert errors[0]["transport"] is tr

    run(main, backend_name)


class Raising(Recorder):
    def data_received(self, data):
        raise ZeroDivisionError("in data_received")


def test_data_received_failure_goes_to_the_handler_and_closes(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, pr, peer = await pair("tcp", Raising, tmpdir_short)
        with peer:
            await loop.sock_sendall(peer, b"boom")
            exc = await pr.done
            assert isinstance(exc, ZeroDivisionError)
            assert tr.is_closing()
            assert await loop.sock_recv(peer, 10) == b""   # the transport closed its socket
        assert [e["message"] for e in errors] == ["Fatal error: protocol.data_received() call failed."]
        assert errors[0]["protocol"] is pr

    run(main, backend_name)


class OnceInterrupted(Recorder):
    raised = False

    def data_received(self, data):
        if not self.raised:
            self.raised = True
            raise KeyboardInterrupt
        super().data_received(data)


def test_keyboard_interrupt_in_a_callback_leaves_the_loop_and_reading_goes_on(backend_name, tmpdir_short):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        tr, pr, peer = loop.run_until_complete(pair("tcp", OnceInterrupted, tmpdir_short))
        with peer:
            peer.sendall(b"first")
            with pytest.raises(KeyboardInterrupt):
                loop.run_until_complete(asyncio.sleep(5))
            peer.sendall(b"second")
            loop.run_until_complete(asyncio.wait_for(pr.wait_for(6), 5))
            assert bytes(pr.data) == b"second"
            tr.close()
            loop.run_until_complete(pr.done)
    finally:
        loop.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_pause_and_resume_reading(backend_name, family, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair(family, Recorder, tmpdir_short)
        with peer:
            tr.pause_reading()
            tr.pause_reading()  # twice: no-op
            assert not tr.is_reading() and "read=idle" in repr(tr)
            await loop.sock_sendall(peer, b"while paused")
            for _ in range(20):
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            assert pr.data == b""
            tr.resume_reading()
            tr.resume_reading()
            assert tr.is_reading()
            await pr.wait_for(12)
            assert bytes(pr.data) == b"while paused"
            # Paused and resumed again with nothing in between: still one reader.
            tr.pause_reading()
            tr.resume_reading()
            await loop.sock_sendall(peer, b"!")
            await pr.wait_for(13)
            assert bytes(pr.data) == b"while paused!"
            tr.close()
            tr.resume_reading()   # closing: no-op
            assert not tr.is_reading()
            await pr.done

    run(main, backend_name)


@pytest.mark.parametrize("family", FAMILIES)
def test_write_buffer_limits_pause_and_resume_the_protocol(backend_name, family, tmpdir_short):
    async def main():
        tr, pr, peer = await pair(family, Recorder, tmpdir_short)
        with peer:
            tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            chunk = os.urandom(256 * 1024)
            sent = 0
            while "pause" not in pr.events:
                tr.write(chunk)
                sent += len(chunk)
                assert sent < 256 << 20, "the peer never stopped reading, but pause_writing never came"
            assert tr.get_write_buffer_size() > 64 * 1024
            assert "polling" in repr(tr).split("write=")[1]
            got = await drain_peer(peer, sent)
            assert got == chunk * (sent // len(chunk))
            assert pr.events == ["made", "pause", "resume"]
            assert tr.get_write_buffer_size() == 0
            # Limits lowered under what is buffered pause at once.
            tr.pause_reading()
            while tr.get_write_buffer_size() == 0:
                tr.write(chunk)
                sent += len(chunk)
            tr.set_write_buffer_limits(high=0)
            assert pr.events[-1] == "pause"
            tr.close()
            assert tr.is_closing() and not pr.done.done()   # the buffer is sent first
            rest = sent - len(got)
            assert await drain_peer(peer, rest) == chunk * (rest // len(chunk))
            assert await pr.done is None
            assert pr.events[-2:] == ["resume", "lost"]

    run(main, backend_name)


@pytest.mark.parametrize("family", FAMILIES)
def test_write_eof_and_keeping_a_half_closed_connection(backend_name, family, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair(family, lambda: Recorder(keep_open=True), tmpdir_short)
        with peer:
            tr.write(b"last words")
            tr.write_eof()
            tr.write_eof()  # twice: no-op
            with pytest.raises(RuntimeError, match="after write_eof"):
                tr.write(b"more")
            assert await drain_peer(peer, 10) == b"last words"
            assert await loop.sock_recv(peer, 10) == b""   # the FIN
            await loop.sock_sendall(peer, b"reply")
            await pr.wait_for(5)
            peer.shutdown(socket.SHUT_WR)
            while "eof" not in pr.events:
                await asyncio.sleep(0.01)
            assert not tr.is_closing()   # eof_received returned True: kept open
            tr.close()
            assert await pr.done is None
            assert pr.events == ["made", "eof", "lost"]

    run(main, backend_name)


def test_write_eof_with_a_buffer_shuts_down_after_it(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        with peer:
            chunk = b"z" * (1 << 20)
            while tr.get_write_buffer_size() == 0:
                tr.write(chunk)
            tr.write_eof()
            total = 0
            while data := await loop.sock_recv(peer, 1 << 20):
                total += len(data)
            assert total % len(chunk) == 0 and total > 0
            tr.close()
            await pr.done

    run(main, backend_name)


@pytest.mark.parametrize("family", FAMILIES)
def test_eof_from_the_peer_closes(backend_name, family, tmpdir_short):
    async def main():
        tr, pr, peer = await pair(family, Recorder, tmpdir_short)
        peer.close()
        assert await pr.done is None
        assert pr.events == ["made", "eof", "lost"]
        assert tr.is_closing()

    run(main, backend_name)


def test_write_after_close_is_dropped_and_then_logged(backend_name, tmpdir_short, caplog):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        with peer:
            tr.close()
            await pr.done
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES + 1):
                    tr.write(b"late")
            assert "socket.send() raised exception." in caplog.text
            assert await loop.sock_recv(peer, 10) == b""

    run(main, backend_name)


def test_peer_reset_while_reading(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        tr.write(b"unread")   # unread data at close makes the reset certain
        await asyncio.sleep(0.05)
        reset(peer)
        exc = await pr.done
        assert isinstance(exc, ConnectionResetError)
        assert errors == []   # an OSError is not reported to the handler

    run(main, backend_name)


def test_peer_reset_during_a_buffered_write(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        tr.pause_reading()   # the writer, not the reader, must meet the reset
        chunk = b"w" * (1 << 20)
        while tr.get_write_buffer_size() == 0:
            tr.write(chunk)
        reset(peer)
        exc = await asyncio.wait_for(pr.done, 10)
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
        assert tr.get_write_buffer_size() == 0
        assert errors == []

    run(main, backend_name)


def test_peer_reset_before_a_write(backend_name, tmpdir_short):
    async def main():
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        tr.pause_reading()
        reset(peer)
        await asyncio.sleep(0.05)
        tr.write(b"into a reset connection")
        exc = await asyncio.wait_for(pr.done, 10)
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
        tr.write(b"after")   # dropped, no error

    run(main, backend_name)


def test_abort_drops_the_buffer(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        with peer:
            chunk = b"a" * (1 << 20)
            while tr.get_write_buffer_size() == 0:
                tr.write(chunk)
            tr.abort()
            assert tr.get_write_buffer_size() == 0 and tr.is_closing()
            assert await pr.done is None
            total = 0
            try:
                while data := await loop.sock_recv(peer, 1 << 20):
                    total += len(data)
            except ConnectionResetError:
                pass
            assert total < 64 << 20

    run(main, backend_name)


class PauseFails(Recorder):
    def pause_writing(self):
        raise ValueError("pause_writing broke")


def test_pause_writing_failure_goes_to_the_handler(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, pr, peer = await pair("tcp", PauseFails, tmpdir_short)
        with peer:
            tr.set_write_buffer_limits(high=1)
            while tr.get_write_buffer_size() == 0:
                tr.write(b"p" * (1 << 20))
            assert [e["message"] for e in errors] == ["protocol.pause_writing() failed"]
            assert isinstance(errors[0]["exception"], ValueError)
            tr.abort()
            await pr.done

    run(main, backend_name)


def test_server_side_transports_and_connect_accepted_socket(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []

        def factory():
            protos.append(Recorder())
            return protos[-1]

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        with socket.create_connection(srv.sockets[0].getsockname()) as c:
            c.setblocking(False)
            await loop.sock_sendall(c, b"hi")
            while not protos or len(protos[0].data) < 2:
                await asyncio.sleep(0.01)
            assert type(protos[0].transport) is SocketTransport
            protos[0].transport.write(b"ho")
            assert await drain_peer(c, 2) == b"ho"
        assert await protos[0].done is None
        srv.close()
        await srv.wait_closed()

        a, b = socket.socketpair()
        with b:
            tr, pr = await loop.connect_accepted_socket(Recorder, a)
            assert type(tr) is SocketTransport
            b.setblocking(False)
            tr.write(b"pair")
            assert await drain_peer(b, 4) == b"pair"
            tr.close()
            await pr.done

    run(main, backend_name)


def test_many_connections_reuse_descriptors(backend_name, tmpdir_short):
    # Each transport frees its poll descriptor before its socket closes, so
    # fds (and descriptors) handed out again work.
    async def main():
        for _ in range(30):
            tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
            with peer:
                tr.write(b"x")
                assert await drain_peer(peer, 1) == b"x"
                tr.close()
                await pr.done

    run(main, backend_name)


def test_sendfile_on_the_transport(backend_name, tmpdir_short):
    async def main():
        loop = asyncio.get_running_loop()
        path = os.path.join(tmpdir_short, "f")
        payload = os.urandom(3 << 20)
        with open(path, "wb") as f:
            f.write(payload)
        tr, pr, peer = await pair("tcp", Recorder, tmpdir_short)
        with peer, open(path, "rb") as f:
            recv = asyncio.ensure_future(drain_peer(peer, len(payload)))
            assert await loop.sendfile(tr, f) == len(payload)
            assert await recv == payload
            assert tr.is_reading()
            tr.write(b"after")
            assert await drain_peer(peer, 5) == b"after"
            tr.close()
            await pr.done

    run(main, backend_name)
