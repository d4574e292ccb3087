"""ListenConfig: backlog, reuse_port (several listeners on one port, each
accepting), control before bind."""

from __future__ import annotations

import errno
import socket

import pytest

import netpoll
from netpoll import net
from netpoll.socktest import Switch

from dialutil import run

needs_reuseport = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")


@needs_reuseport
def test_two_reuse_port_listeners_on_one_port_both_accept(backend_name):
    lc = net.ListenConfig(reuse_port=True)

    async def serve(ln, name, counts):
        while True:
            try:
                c = await ln.accept()
            except netpoll.ClosedError:
                return
            counts[name] += 1
            await c.write(name.encode())
            c.close()

    async def main():
        a = lc.listen("tcp", "127.0.0.1:0")
        b = lc.listen("tcp", str(a.addr))
        assert a.addr == b.addr
        counts = {"a": 0, "b": 0}
        ga, gb = netpoll.go(serve(a, "a", counts)), netpoll.go(serve(b, "b", counts))
        try:
            # The kernel spreads connections by a hash of the 4-tuple; each
            # dial has its own source port. 2**-63 that all land on one.
            for _ in range(64):
                c = await net.dial("tcp", a.addr)
                buf = bytearray(1)
                assert await c.read(buf) == 1 and buf in (b"a", b"b")
                c.close()
        finally:
            a.close()
            b.close()
        await ga
        await gb
        assert counts["a"] > 0 and counts["b"] > 0, counts
        assert counts["a"] + counts["b"] == 64

    run(backend_name, main)


@needs_reuseport
def test_reuse_port_packet_conns_share_a_port(backend_name):
    async def main():
        lc = net.ListenConfig(reuse_port=True)
        a = lc.listen_packet("udp", "127.0.0.1:0")
        b = lc.listen_packet("udp", str(a.local_addr))
        assert a.local_addr == b.local_addr
        with pytest.raises(OSError) as ei:
            net.listen_packet("udp", str(a.local_addr))
        assert ei.value.errno == errno.EADDRINUSE
        a.close()
        b.close()

    run(backend_name, main)


def test_without_reuse_port_the_second_listen_fails(backend_name):
    async def main():
        a = net.ListenConfig().listen("tcp", "127.0.0.1:0")
        try:
            with Switch() as sw:
                with pytest.raises(net.OpError) as ei:
                    net.ListenConfig().listen("tcp", str(a.addr))
            assert ei.value.errno == errno.EADDRINUSE and ei.value.op == "listen"
            assert not sw.sockets()
            # reuse_port on one side only is not enough either.
            with pytest.raises(OSError):
                net.ListenConfig(reuse_port=True).listen("tcp", str(a.addr))
        finally:
            a.close()

    run(backend_name, main)


def test_control_runs_before_bind_and_can_fail_it(backend_name):
    async def main():
        seen = []

        def control(nw, address, sock):
            seen.append((nw, address, sock.getsockname()))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)

        ln = net.ListenConfig(control=control, backlog=7).listen("tcp", "127.0.0.1:0")
        assert seen == [("tcp4", "127.0.0.1:0", ("0.0.0.0", 0))]  # not bound yet
        c = await net.dial("tcp", ln.addr)
        s = await ln.accept()
        for x in (c, s, ln):
            x.close()

        pc = net.ListenConfig(control=control).listen_packet("udp", "127.0.0.1:0")
        assert seen[-1][0] == "udp4"
        pc.close()

        def refuse(nw, address, sock):
            raise PermissionError(errno.EACCES, "not here")

        with Switch() as sw:
            for call in (lambda: net.ListenConfig(control=refuse).listen("tcp", "127.0.0.1:0"),
                         lambda: net.ListenConfig(control=refuse).listen_packet("udp", "127.0.0.1:0")):
                with pytest.raises(PermissionError) as ei:
                    call()
                assert isinstance(ei.value, net.OpError) and ei.value.op == "listen"
        assert sw.total("opened") == 2 and not sw.sockets()

    run(backend_name, main)


def test_unix_listener_from_a_config(backend_name, tmp_path):
    async def main():
        path = str(tmp_path / "s")
        ln = net.ListenConfig(reuse_port=True).listen("unix", path)  # ignored for unix
        c = await net.dial("unix", path)
        s = await ln.accept()
        for x in (c, s, ln):
            x.close()
        assert not (tmp_path / "s").exists()  # unlinked on close, as net.listen's

    run(backend_name, main)


@pytest.mark.parametrize("kw,call,why", [
    ({"backlog": -1}, "listen", "backlog"),
    ({"backlog": "5"}, "listen", "backlog"),
    ({"control": 5}, "listen", "control must be callable"),
    ({"control": 5}, "listen_packet", "control must be callable"),
    ({}, "listen_udp", "unknown network 'udp'"),
    ({}, "listen_bad_addr", "missing port"),
])
def test_bad_config(backend_name, kw, call, why):
    async def main():
        lc = net.ListenConfig(**kw)
        calls = {"listen": lambda: lc.listen("tcp", "127.0.0.1:0"),
                 "listen_packet": lambda: lc.listen_packet("udp", "127.0.0.1:0"),
                 "listen_udp": lambda: lc.listen("udp", "127.0.0.1:0"),
                 "listen_bad_addr": lambda: lc.listen("tcp", "127.0.0.1")}
        with Switch() as sw:
            with pytest.raises(net.OpError, match=why) as ei:
                calls[call]()
        assert ei.value.op == "listen"
        assert sw.total("opened") == 0

    run(backend_name, main)


@needs_reuseport
def test_plain_socket_clients_reach_reuse_port_listeners(backend_name):
    # Clients nobody here wrote: blocking stdlib sockets in a thread.
    import threading

    async def main():
        lc = net.ListenConfig(reuse_port=True)
        a = lc.listen("tcp", "127.0.0.1:0")
        b = lc.listen("tcp", str(a.addr))
        got = []

        def clients():
            for i in range(8):
                with socket.create_connection(a.addr.sockaddr(), timeout=5) as s:
                    s.sendall(b"%d" % i)

        t = threading.Thread(target=clients)

        async def serve(ln):
            while True:
                try:
                    c = await ln.accept()
                except netpoll.ClosedError:
                    return
                buf = bytearray(4)
                n = await c.read(buf)
                got.append(bytes(buf[:n]))
                c.close()

        gs = [netpoll.go(serve(a)), netpoll.go(serve(b))]
        t.start()
        while len(got) < 8:  # the sleeps keep the runtime from looking deadlocked
            await netpoll.sleep(0.01)
        t.join()
        a.close()
        b.close()
        for g in gs:
            await g
        assert sorted(got) == [b"%d" % i for i in range(8)]

    run(backend_name, main)



GO_SERVER = r"""
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// A Go listener with SO_REUSEPORT (its number given by the test), answering "go".
func main() {
	opt, _ := strconv.Atoi(os.Args[2])
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 1) }); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", os.Args[1])
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("listening", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("g"))
		c.Close()
	}
}
"""


@needs_reuseport
def test_a_go_listener_shares_the_port(backend_name, tmp_path):
    # SO_REUSEPORT between netpoll and a Go program on one port: the kernel
    # gives connections to both.
    import os
    import shutil
    import subprocess

    from support import readline

    go = shutil.which("go")
    if go is None:
        pytest.skip("no go toolchain on PATH")
    src = tmp_path / "srv.go"
    src.write_text(GO_SERVER)
    exe = tmp_path / "srv"
    env = dict(os.environ, GOCACHE=str(tmp_path / "cache"), GO111MODULE="off")
    b = subprocess.run([go, "build", "-o", str(exe), str(src)], env=env, capture_output=True, timeout=180)
    assert b.returncode == 0, b.stderr

    async def main():
        ln = net.ListenConfig(reuse_port=True).listen("tcp", "127.0.0.1:0")
        proc = subprocess.Popen([str(exe), str(ln.addr), str(socket.SO_REUSEPORT)], stdout=subprocess.PIPE)
        try:
            line = readline(proc, 10)
            assert line.startswith(f"listening {ln.addr}"), line

            async def serve():
                while True:
                    try:
                        c = await ln.accept()
                    except netpoll.ClosedError:
                        return
                    await c.write(b"p")
                    c.close()

            g = netpoll.go(serve())
            seen = {b"g": 0, b"p": 0}
            for _ in range(64):
                c = await net.dial("tcp", ln.addr)
                buf = bytearray(1)
                assert await c.read(buf) == 1
                seen[bytes(buf)] += 1
                c.close()
            ln.close()
            await g
            assert seen[b"g"] > 0 and seen[b"p"] > 0, seen
        finally:
            ln.close()
            proc.kill()
            proc.communicate()

    run(backend_name, main)
