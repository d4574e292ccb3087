"""Data paths: many concurrent echo clients, large writes to a slow reader,
writev of more buffers than one writev(2) call takes, ping-pong (TCPStress)."""

from __future__ import annotations

import hashlib
import random

import pytest

import netpoll
from netpoll import net

from support import read_all, read_full, run
from support.net import conn_pair, stream_pair


async def echo(conn) -> None:
    buf = bytearray(32 * 1024)
    try:
        while True:
            n = await conn.read(buf)
            if n == 0:
                return
            await conn.write(memoryview(buf)[:n])
    finally:
        conn.close()


def test_echo_many_concurrent_clients(backend_name):
    clients, messages = 50, 20

    async def client(addr, seed):
        rng = random.Random(seed)
        conn = await net.dial("tcp", addr)
        try:
            for _ in range(messages):
                msg = rng.randbytes(rng.randint(1, 16384))
                await conn.write(msg)
                got = await read_full(conn, len(msg))
                assert got == msg
            conn.close_write()
            assert await conn.read(bytearray(1)) == 0  # the server closed after EOF
            return messages
        finally:
            conn.close()

    async def server(ln):
        handlers = []
        for _ in range(clients):
            handlers.append(netpoll.go(echo(await ln.accept())))
        for h in handlers:
            await h

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            srv = netpoll.go(server(ln))
            gs = [netpoll.go(client(ln.addr, i)) for i in range(clients)]
            results = [await g for g in gs]
            await srv
            return results
        finally:
            ln.close()

    assert run(backend_name, main) == [messages] * clients


def test_large_write_to_slow_reader(backend_name):
    size = 6 * 1024 * 1024 + 7
    data = random.Random(1).randbytes(size)

    async def slow_reader(conn):
        out = bytearray()
        buf = bytearray(256 * 1024)
        reads = 0
        while True:
            n = await conn.read(buf)
            if n == 0:
                return bytes(out), reads
            out += buf[:n]
            reads += 1
            assert reads < 100_000
            await netpoll.sleep(0.001)

    async def main():
        async with conn_pair() as (ln, c, s):
            reader = netpoll.go(slow_reader(c))
            assert await s.write(data) == size
            s.close_write()
            got, reads = await reader
            assert len(got) == size
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            # The writer had to wait for the reader: many reads, not one.
            assert reads > 1

    run(backend_name, main)


def test_writev_many_buffers_in_order(backend_name):
    rng = random.Random(2)
    # More than 1024 buffers (IOV_MAX) of mixed types and sizes, some empty.
    bufs = []
    for i in range(3000):
        b = rng.randbytes(rng.choice((0, 1, 7, 100, 1000, 4000)))
        bufs.append((bytes, bytearray, memoryview)[i % 3](b))
    want = b"".join(bytes(b) for b in bufs)

    async def main():
        async with conn_pair() as (ln, c, s):
            reader = netpoll.go(read_all(s))
            assert await c.writev(bufs) == len(want)
            c.close_write()
            assert await reader == want

    run(backend_name, main)


def test_writev_to_slow_reader_partial_writes(backend_name):
    # Large buffers: writev(2) writes part of a batch and the rest follows
    # after a wait, resuming inside a buffer.
    bufs = [bytes([i]) * (64 * 1024 + i) for i in range(40)]
    want = b"".join(bufs)

    async def slow(conn):
        out = bytearray()
        buf = bytearray(100_000)
        for _ in range(100_000):
            n = await conn.read(buf)
            if n == 0:
                return bytes(out)
            out += buf[:n]
            await netpoll.sleep(0.0005)
        raise AssertionError("reader did not finish")

    async def main():
        async with conn_pair() as (ln, c, s):
            reader = netpoll.go(slow(s))
            assert await c.writev(bufs) == len(want)
            c.close_write()
            assert await reader == want

    run(backend_name, main)


def test_writev_empty_and_no_buffers(backend_name):
    async def main():
        async with conn_pair() as (ln, c, s):
            assert await c.writev([]) == 0
            assert await c.writev([b"", bytearray(), b"ok"]) == 2
            assert await read_full(s, 2) == b"ok"

    run(backend_name, main)


def test_tcp_ping_pong_stress(backend_name):
    # Go's TestTCPStress (short mode): conns exchange 512-byte messages.
    rounds = 300

    async def pinger(c):
        msg = bytes(range(256)) * 2
        for i in range(rounds):
            await c.write(msg)
            assert await read_full(c, 512) == msg
        return rounds

    async def main():
        pairs = [await stream_pair() for _ in range(2)]
        try:
            servers = [netpoll.go(echo(s)) for _, _, s in pairs]
            pings = [netpoll.go(pinger(c)) for _, c, _ in pairs]
            assert [await g for g in pings] == [rounds, rounds]
            for _, c, _ in pairs:
                c.close_write()
            for g in servers:
                await g
        finally:
            for ln, c, s in pairs:
                c.close()
                s.close()
                ln.close()

    run(backend_name, main)


def test_writev_to_closed_peer_fails(backend_name):
    # Go's TestWritevError, scaled: a large writev to a conn whose peer
    # closed must end in an error, not hang or report success.
    async def main():
        async with conn_pair() as (ln, c, s):
            s.close()
            chunk = bytes(1 << 20)
            with pytest.raises(net.OpError) as ei:
                for _ in range(64):
                    await c.writev([chunk] * 16)
            e = ei.value
            assert isinstance(e, (BrokenPipeError, ConnectionResetError)), repr(e)
            assert e.op == "writev"

    run(backend_name, main)


def test_peer_reset_during_blocked_write(backend_name):
    from support.net import fill_conn, linger_reset, small_buffers

    async def main():
        async with conn_pair() as (ln, c, s):
            small_buffers(c, s)
            await fill_conn(c)
            g = netpoll.go(c.write(bytes(1 << 20)))
            await netpoll.sleep(0.02)
            assert not g.done
            linger_reset(s)
            with pytest.raises(net.OpError) as ei:
                await g
            assert isinstance(ei.value, (ConnectionResetError, BrokenPipeError)), repr(ei.value)
            assert ei.value.op == "write"

    run(backend_name, main)


def test_every_successful_dial_can_write(backend_name):
    # Go's TestTCPSpuriousConnSetupCompletion, scaled: many concurrent dials
    # with a short timeout; every dial that succeeds is really connected.
    async def acceptor(ln, got):
        while True:
            try:
                conn = await ln.accept()
            except netpoll.ClosedError:
                return
            got.append(conn)

    async def dialer(addr):
        try:
            c = await net.dial("tcp", addr, timeout=0.5)
        except TimeoutError:
            return "timeout"
        try:
            await c.write(b"x")  # ENOTCONN here would be a spurious completion
            return "ok"
        finally:
            c.close()

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0", backlog=16)
        got: list = []
        acc = netpoll.go(acceptor(ln, got))
        try:
            results = []
            for _ in range(2):
                gs = [netpoll.go(dialer(ln.addr)) for _ in range(50)]
                results += [await g for g in gs]
            assert set(results) <= {"ok", "timeout"}
            assert results.count("ok") > 0
        finally:
            ln.close()
            await acc
            for conn in got:
                conn.close()

    run(backend_name, main)
