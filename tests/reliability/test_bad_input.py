"""Bad input: each is a clear error, of a stated type, whose message names
the bad value, and nothing is left open (the suite's no_fd_leak fixture
checks every test; the switch's socket table checks what the net layer
opened).

Covered elsewhere and not repeated here (docs/reliability.md lists them):
unknown networks, malformed addresses, ports out of range, empty addresses,
bad backlogs, read-only buffers and str writes (tests/net/test_errors.py);
unix paths longer than sun_path (tests/net/test_unix.py); NaN, +-inf and
huge float deadlines and dial timeouts (tests/net/test_deadline.py); a
closed or negative descriptor given to pollopen
(tests/conformance/test_backend.py); NETPOLL_BACKEND through the command
line (tests/cli/test_cli.py); a negative Chan capacity
(tests/runtime/test_sync.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import netpoll
from netpoll import _table, net
from netpoll.socktest import Switch

from support import read_full, run

# -- NETPOLL_BACKEND -----------------------------------------------------------------

GARBAGE = ["nope", "EPOLL", "epoll,,poll", ",", "epoll;poll", "x" * 300, "nope,select",
           "select nope", "\u00e9poll"]


@pytest.mark.parametrize("value", ["nope", "epoll,,poll", "x" * 300])
def test_netpoll_backend_garbage_fails_the_import(value):
    """In a fresh interpreter: importing netpoll fails with BackendError
    naming the variable, the value and what is available; nothing falls
    back silently."""
    env = dict(os.environ, NETPOLL_BACKEND=value)
    p = subprocess.run([sys.executable, "-c", "import netpoll; print(netpoll.BACKEND)"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, f"NETPOLL_BACKEND={value!r} was accepted: {p.stdout!r}"
    assert p.stdout == ""
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("netpoll.errors.BackendError: "), p.stderr
    assert f"NETPOLL_BACKEND={value!r}" in last
    assert "available here: " + ", ".join(netpoll.available_backends()) in last


@pytest.mark.parametrize("value", GARBAGE)
def test_netpoll_backend_garbage_message(value, monkeypatch):
    # The same check in this process, for more values.
    monkeypatch.setenv("NETPOLL_BACKEND", value)
    with pytest.raises(netpoll.BackendError) as ei:
        _table.chosen_at_import()
    assert f"NETPOLL_BACKEND={value!r}" in str(ei.value)
    assert "available here" in str(ei.value)
    assert isinstance(ei.value, ImportError)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_netpoll_backend_means_unset(value, monkeypatch):
    monkeypatch.setenv("NETPOLL_BACKEND", value)
    assert _table.chosen_at_import() == netpoll.available_backends()[0]


def test_run_with_an_unknown_backend_is_a_backend_error():
    async def main():
        raise AssertionError("never runs")

    coro = main()
    try:
        with pytest.raises(netpoll.BackendError) as ei:
            netpoll.run(coro, backend="nope")
        assert "backend='nope'" in str(ei.value) and "available here" in str(ei.value)
    finally:
        coro.close()


def test_run_with_an_unknown_backend_closes_the_coroutine():
    async def main():
        raise AssertionError("never runs")

    coro = main()
    try:
        with pytest.raises(netpoll.BackendError):
            netpoll.run(coro, backend="nope")
        assert coro.cr_frame is None, "the coroutine was not closed"
    finally:
        coro.close()


# -- empty unix addresses, ports far out of range -----------------------------------

@pytest.mark.parametrize("network", ["unix", "unixgram"])
def test_empty_unix_address(backend_name, network):
    async def main():
        with Switch() as sw:
            listen = net.listen if network == "unix" else net.listen_packet
            with pytest.raises(net.AddrError) as ei:
                listen(network, "")
            assert "missing address" in str(ei.value) and ei.value.op == "listen"
            with pytest.raises(net.AddrError, match="missing address"):
                await net.dial(network, "")
        assert sw.total("opened") == 0

    run(backend_name, main)


@pytest.mark.parametrize("bad", ["127.0.0.1:99999999999999999999", ("127.0.0.1", 2 ** 64),
                                 ("127.0.0.1", -2 ** 64), "[::1]:65536"], ids=repr)
def test_port_far_out_of_range(backend_name, bad):
    async def main():
        with Switch() as sw:
            with pytest.raises(net.AddrError) as ei:
                net.listen("tcp", bad)
            assert "out of range 0-65535" in str(ei.value) and repr(bad) in str(ei.value)
            with pytest.raises(net.AddrError, match="out of range"):
                await net.dial("tcp", bad)
        assert sw.total("opened") == 0

    run(backend_name, main)


# -- unix paths and host names with a NUL byte -----------------------------------------

def test_unix_path_with_nul_is_an_error_not_a_cut(backend_name, tmp_path):
    """A NUL inside a unix socket path would make the kernel bind the path
    cut at the NUL (and the listener's close would fail to unlink it): it
    is an AddrError naming the path. A leading NUL (an abstract socket) is
    allowed."""
    path = str(tmp_path / "sock") + "\0tail"

    async def main():
        with Switch() as sw:
            for call in (lambda: net.listen("unix", path), lambda: net.listen_packet("unixgram", path)):
                with pytest.raises(net.AddrError) as ei:
                    call()
                assert isinstance(ei.value, net.OpError) and ei.value.op == "listen"
                assert "NUL" in str(ei.value) and repr(path) in str(ei.value)
            with pytest.raises(net.AddrError, match="NUL"):
                await net.dial("unix", path)
        assert sw.total("opened") == 0
        assert os.listdir(tmp_path) == []  # nothing bound at the cut path
        name = f"\0netpoll-bad-input-{os.getpid()}"
        ln = net.listen("unix", name)
        c = await net.dial("unix", name)
        s = await ln.accept()
        await c.write(b"ok")
        assert await read_full(s, 2) == b"ok"
        for x in (c, s, ln):
            x.close()

    run(backend_name, main)


@pytest.mark.parametrize("bad", ["127.0.0.1\0:80", "local\0host:80", ("127.0.0.1\0evil", 80)])
def test_host_with_nul_is_an_error_not_a_cut(backend_name, bad):
    async def main():
        with Switch() as sw:
            with pytest.raises(net.AddrError) as ei:
                net.listen("tcp", bad)
            assert "NUL" in str(ei.value) and repr(bad) in str(ei.value)
            with pytest.raises(net.AddrError, match="NUL"):
                await net.dial("tcp", bad)
        assert sw.total("opened") == 0

    run(backend_name, main)


def test_overlong_host_name_is_an_addr_error(backend_name):
    bad = "a" * 64 + ".example:80"  # a DNS label is at most 63 characters

    async def main():
        with pytest.raises(net.AddrError) as ei:
            net.listen("tcp", bad)
        assert "invalid host name" in str(ei.value) and repr(bad) in str(ei.value)
        assert ei.value.op == "listen"

    run(backend_name, main)


# -- deadlines and timeouts that are not numbers, or are huge ints ---------------------------

NOT_TIMES = ["1", b"1", True, bytearray(b"1")]


@pytest.mark.parametrize("bad", NOT_TIMES, ids=repr)
def test_deadline_that_is_not_a_number_is_a_type_error(backend_name, bad):
    """A str such as "1" would pass float(); it is still a TypeError naming
    the value, for every set_*deadline and for dial's timeout."""
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = await net.dial("tcp", ln.addr)
        s = await ln.accept()
        pc = net.listen_packet("udp", "127.0.0.1:0")
        try:
            for call in (c.set_deadline, c.set_read_deadline, c.set_write_deadline,
                         ln.set_deadline, pc.set_deadline, pc.set_read_deadline):
                with pytest.raises(TypeError) as ei:
                    call(bad)
                assert "deadline" in str(ei.value) and repr(bad) in str(ei.value)
            with Switch() as sw:
                with pytest.raises(net.OpError) as ei:
                    await net.dial("tcp", ln.addr, timeout=bad)
                assert isinstance(ei.value, TypeError) and ei.value.op == "dial"
                assert "timeout" in str(ei.value) and repr(bad) in str(ei.value)
            assert sw.total("opened") == 0
            # Nothing was changed: the conn still works without a deadline.
            await s.write(b"k")
            assert await read_full(c, 1) == b"k"
        finally:
            for x in (c, s, ln, pc):
                x.close()

    run(backend_name, main)


def test_huge_int_deadlines_are_far_future_or_past(backend_name):
    """An int deadline too large for a float is +-inf, not an OverflowError:
    10**400 never expires, -10**400 has expired."""
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = await net.dial("tcp", ln.addr, timeout=10 ** 400)
        s = await ln.accept()
        try:
            c.set_read_deadline(10 ** 400)
            g = netpoll.go(read_full(c, 1))
            await netpoll.sleep(0.02)
            assert not g.done
            await s.write(b"x")
            assert await g == b"x"
            c.set_read_deadline(-10 ** 400)
            with pytest.raises(TimeoutError):
                await c.read(bytearray(1))
            with pytest.raises(TimeoutError):
                await net.dial("tcp", ln.addr, timeout=-10 ** 400)
        finally:
            for x in (c, s, ln):
                x.close()

    run(backend_name, main)


# -- sizes: linger and backlog beyond a C int ------------------------------------------------

@pytest.mark.parametrize("bad,exc", [(2 ** 40, ValueError), (-2 ** 40, ValueError), (1.5, TypeError),
                                     ("5", TypeError), (True, TypeError)], ids=repr)
def test_bad_linger(backend_name, bad, exc):
    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        c = await net.dial("tcp", ln.addr)
        s = await ln.accept()
        try:
            with pytest.raises(exc) as ei:
                c.set_linger(bad)
            assert "linger" in str(ei.value) and repr(bad) in str(ei.value)
            c.set_linger(-1)  # negative: the OS default, documented
            c.set_linger(None)
        finally:
            for x in (c, s, ln):
                x.close()

    run(backend_name, main)


@pytest.mark.parametrize("backlog", [2 ** 31, 2 ** 40])
def test_backlog_beyond_a_c_int(backend_name, backlog):
    async def main():
        with Switch() as sw:
            with pytest.raises(net.OpError) as ei:
                net.listen("tcp", "127.0.0.1:0", backlog=backlog)
            assert isinstance(ei.value, ValueError) and ei.value.op == "listen"
            assert repr(backlog) in str(ei.value)
        assert sw.total("opened") == 0
        ln = net.listen("tcp", "127.0.0.1:0", backlog=2 ** 31 - 1)  # the kernel caps it
        ln.close()

    run(backend_name, main)


# -- descriptors that are closed or negative -------------------------------------------------

def test_conn_over_a_closed_socket_is_ebadf(backend_name):
    """The net layer's classes over a socket that is already closed: an
    OSError EBADF naming the number, raised before anything is registered."""
    async def main():
        s = socket.socket()
        s.close()
        for cls in (net.Conn, net.Listener, net.PacketConn):
            with pytest.raises(OSError) as ei:
                cls(s)
            assert ei.value.errno == 9 and "-1" in str(ei.value)

    run(backend_name, main)


BACKEND_FD_CHILD = r"""
import sys
import netpoll
from netpoll._netpoll import PollDesc
b = netpoll.backend_class(sys.argv[1])()
for fd in map(int, sys.argv[2:]):
    try:
        b.netpollopen(fd, PollDesc())
    except (OSError, ValueError) as e:
        print(fd, "refused", type(e).__name__, flush=True)
    else:
        b.netpollclose(fd)
        print(fd, "accepted", flush=True)
b.close()
print("done")
"""

BAD_FDS = [-1, -5, -2 ** 31, 100_000, 2 ** 31 - 1, 2 ** 30 + 5]


def test_backend_netpollopen_of_any_bad_number_neither_crashes_nor_hangs(backend_name):
    """Straight to the backend, without pollopen's checks: a negative number
    is refused; a number that is not open (up to 2**31 - 1) is refused or,
    where the kernel interface has no registration step (poll, select), kept
    until netpollclose. Never a crash or a hang. In a child process, with a
    time limit."""
    try:
        p = subprocess.run([sys.executable, "-c", BACKEND_FD_CHILD, backend_name, *map(str, BAD_FDS)],
                           capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{backend_name}: netpollopen of a bad number hung")
    assert p.returncode == 0, f"{backend_name}: exit status {p.returncode}: {p.stdout}{p.stderr[-2000:]}"
    lines = p.stdout.splitlines()
    assert lines[-1] == "done"
    results = dict(line.split(" ", 1) for line in lines[:-1])
    for fd in BAD_FDS:
        if fd < 0:
            assert results[str(fd)].startswith("refused"), (fd, results)


def test_sleep_with_a_str_names_the_value(backend_name):
    async def main():
        with pytest.raises(TypeError) as ei:
            await netpoll.sleep("1")
        assert "'1'" in str(ei.value)

    run(backend_name, main)
