"""netpoll.aio's getaddrinfo/getnameinfo: socket's answers and errors, from
netpoll's resolver (inline when no lookup is needed, else its pool, shared
by identical lookups in flight), never blocking the loop; a cancelled
lookup, a loop closed with one in flight, and one that ends between runs."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from netpoll import aio

WAIT = 10.0  # seconds a test waits for a pool thread before it fails


class Gated:
    """``socket.getaddrinfo``/``getnameinfo`` that records its calls and
    their threads and, for names in ``gated``, waits for ``gate``."""

    def __init__(self, real, gated=()):
        self.real = real
        self.gated = set(gated)
        self.gate = threading.Event()
        self.returned = threading.Event()
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.calls.append((threading.current_thread().name, args))
        if args[0] in self.gated or (isinstance(args[0], tuple) and args[0][0] in self.gated):
            assert self.gate.wait(WAIT), "gate never opened"
        try:
            return self.real(*args)
        finally:
            self.returned.set()

    def threads(self):
        return {name for name, _ in self.calls}


@pytest.fixture
def gai(monkeypatch):
    fake = Gated(socket.getaddrinfo, gated={"localhost"})
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def run(main, backend_name):
    return aio.run(main(), backend=backend_name)


CASES = [
    (("localhost", 80), {"type": socket.SOCK_STREAM}),
    (("localhost", "http"), {}),
    (("127.0.0.1", "80"), {}),
    ((b"127.0.0.1", 8080), {"family": socket.AF_INET}),
    (("::1", 443), {"type": socket.SOCK_STREAM}),
    ((None, 0), {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    (("127.0.0.1", None), {"flags": socket.AI_CANONNAME}),
]


@pytest.mark.parametrize("args,kw", CASES, ids=[repr(c[0]) for c in CASES])
def test_getaddrinfo_answers_as_socket_does(backend_name, args, kw):
    want = socket.getaddrinfo(*args, **kw)

    async def main():
        return await asyncio.get_running_loop().getaddrinfo(*args, **kw)

    assert run(main, backend_name) == want


def test_getnameinfo_answers_as_socket_does(backend_name):
    numeric = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    cases = [(("127.0.0.1", 80), 0), (("127.0.0.1", 80), numeric), (("::1", 22, 0, 0), numeric)]

    async def main():
        loop = asyncio.get_running_loop()
        return [await loop.getnameinfo(sa, flags) for sa, flags in cases]

    assert run(main, backend_name) == [socket.getnameinfo(sa, flags) for sa, flags in cases]


@pytest.mark.parametrize("call", [
    ("getaddrinfo", ("no-such-name.invalid", 80)),     # a lookup that fails, from the pool
    ("getaddrinfo", ("127.0.0.1", 1.5)),               # socket refuses the port
    ("getaddrinfo", ("127.0.0.1", 80, "inet")),        # and a family that is no int
    ("getaddrinfo", (["localhost"], 80)),              # and a host that is no str
    ("getaddrinfo", ("127.0.0.1", 2**64)),             # a port past a C long
    ("getnameinfo", ("127.0.0.1",)),                   # a sockaddr that is no tuple
    ("getnameinfo", (("127.0.0.1",),)),                # a tuple too short
    ("getnameinfo", (("no-such-name.invalid", 80),)),  # an unresolvable host
], ids=lambda c: f"{c[0]}{c[1]!r}")
def test_errors_are_sockets_own(backend_name, call):
    name, args = call
    if name == "getaddrinfo" and len(args) == 3:
        args, kw = args[:2], {"family": args[2]}
    else:
        kw = {}
    with pytest.raises(Exception) as want:
        if name == "getnameinfo":
            socket.getnameinfo(*args, 0)
        else:
            socket.getaddrinfo(*args, **kw)

    async def main():
        loop = asyncio.get_running_loop()
        return await getattr(loop, name)(*args, **kw)

    with pytest.raises(type(want.value)) as got:
        run(main, backend_name)
    assert str(got.value) == str(want.value)
    assert got.value.args == want.value.args


def test_numeric_host_and_port_need_no_thread(backend_name, monkeypatch):
    fake = Gated(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)

    async def main():
        loop = asyncio.get_running_loop()
        await loop.getaddrinfo("127.0.0.1", 80)
        await loop.getaddrinfo("::1", "443")
        await loop.getaddrinfo(None, 0, flags=socket.AI_PASSIVE)

    run(main, backend_name)
    assert fake.threads() == {threading.current_thread().name}
    # told to glibc, so a numeric-looking name can never become a DNS query
    flags = [args[5] for _, args in fake.calls]
    assert flags[0] & socket.AI_NUMERICHOST and flags[1] & socket.AI_NUMERICHOST
    assert flags[1] & socket.AI_NUMERICSERV


def test_a_name_is_looked_up_in_the_pool_while_the_loop_runs(backend_name, gai):
    async def main():
        loop = asyncio.get_running_loop()
        lookup = asyncio.ensure_future(loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))
        ticks = 0
        while not gai.calls:
            await asyncio.sleep(0.001)
        for _ in range(20):  # the loop goes on while the pool thread waits
            await asyncio.sleep(0.001)
            ticks += 1
        assert not lookup.done()
        gai.gate.set()
        return ticks, await lookup

    ticks, infos = run(main, backend_name)
    assert ticks == 20
    assert infos == gai.real("localhost", 80, type=socket.SOCK_STREAM)
    assert gai.threads() == {"netpoll.resolver"}


def test_getnameinfo_of_a_name_is_looked_up_in_the_pool(backend_name, monkeypatch):
    fake = Gated(socket.getnameinfo)
    monkeypatch.setattr(socket, "getnameinfo", fake)

    async def main():
        return await asyncio.get_running_loop().getnameinfo(("127.0.0.1", 80))

    assert run(main, backend_name) == fake.real(("127.0.0.1", 80), 0)
    assert fake.threads() == {"netpoll.resolver"}


def test_identical_lookups_in_flight_share_one_call(backend_name, gai):
    async def main():
        loop = asyncio.get_running_loop()
        first = [asyncio.ensure_future(loop.getaddrinfo("localhost", 80)) for _ in range(5)]
        other = asyncio.ensure_future(loop.getaddrinfo("localhost", 81))
        while len(gai.calls) < 2:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        gai.gate.set()
        got = await asyncio.gather(*first)
        got[0].append("mine")  # each caller gets a list of its own
        return got, await other

    got, other = run(main, backend_name)
    assert [args[:2] for _, args in gai.calls] == [("localhost", 80), ("localhost", 81)]
    assert got[1] == gai.real("localhost", 80) and got[0][-1] == "mine"
    assert other == gai.real("localhost", 81)


def test_create_connection_finds_the_name_in_the_pool(backend_name, gai):
    gai.gate.set()
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    async def main():
        _, w = await asyncio.open_connection("localhost", port, family=socket.AF_INET)
        w.close()
        await w.wait_closed()

    try:
        run(main, backend_name)
    finally:
        srv.close()
    assert ("netpoll.resolver", ("localhost", port, socket.AF_INET, socket.SOCK_STREAM, 0, 0)) in gai.calls


def test_a_cancelled_lookup_drops_its_answer(backend_name, gai):
    errors = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
        lookup = asyncio.ensure_future(loop.getaddrinfo("localhost", 80))
        while not gai.calls:
            await asyncio.sleep(0.001)
        lookup.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lookup
        gai.gate.set()
        await loop.run_in_executor(None, gai.returned.wait, WAIT)
        await asyncio.sleep(0.01)  # the goroutine hands the answer to a done future
        return await loop.getaddrinfo("localhost", 80)

    assert run(main, backend_name) == gai.real("localhost", 80)
    assert errors == []


def test_a_lookup_that_ends_between_runs_is_delivered_by_the_next(backend_name, gai):
    loop = aio.new_event_loop(backend=backend_name)
    try:
        lookup = loop.create_task(loop.getaddrinfo("localhost", 80))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert gai.calls and not lookup.done()
        gai.gate.set()
        assert gai.returned.wait(WAIT)  # the answer comes while no run is on
        assert loop.run_until_complete(asyncio.wait_for(lookup, WAIT)) == gai.real("localhost", 80)
    finally:
        loop.close()


def test_closing_the_loop_with_a_lookup_in_flight(backend_name, gai):
    loop = aio.new_event_loop(backend=backend_name)
    errors = []
    loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
    lookup = loop.create_task(loop.getaddrinfo("localhost", 80))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert gai.calls
    lookup.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()  # the lookup's goroutine is closed; its pool thread still waits
    assert loop.runtime.backend.closed
    gai.gate.set()
    assert gai.returned.wait(WAIT)  # its answer is dropped, and nothing fails
    assert lookup.cancelled() and errors == []
