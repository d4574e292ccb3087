"""The resolver: numeric names inline, names in a bounded pool of its own,
singleflight, deadlines that give up without cancelling, Go's DNSError."""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest

import netpoll
from netpoll import _resolve, net

from dialutil import SLACK, FakeGAI, run, ticker


@pytest.fixture
def gai(monkeypatch):
    fake = FakeGAI({"one.test": ["192.0.2.1"], "dual.test": ["2001:db8::1", "192.0.2.2"],
                    "v6only.test": ["2001:db8::2"], "gone.test": socket.EAI_NONAME,
                    "again.test": socket.EAI_AGAIN, "empty.test": []})
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def test_numeric_hosts_and_ports_resolve_inline(backend_name, monkeypatch):
    def no_gai(*a, **k):
        raise AssertionError("getaddrinfo called for a numeric host")

    monkeypatch.setattr(socket, "getaddrinfo", no_gai)
    monkeypatch.setattr(socket, "getservbyname", no_gai)

    async def main():
        threads = threading.active_count()
        assert await net.lookup_host("127.0.0.1") == ["127.0.0.1"]
        assert await net.lookup_host("::1") == ["::1"]
        assert await net.lookup_ip("ip6", "fe80::1%1") == [ipaddress.ip_address("fe80::1%1")]
        assert await net.lookup_ip("ip4", "10.1.2.3") == [ipaddress.ip_address("10.1.2.3")]
        assert await net.lookup_port("tcp", "8080") == 8080
        assert await net.lookup_port("udp", 53) == 53
        assert await net.lookup_port("tcp", "") == 0  # Go: an empty service is port 0
        assert threading.active_count() == threads  # no thread was involved

    run(backend_name, main)


def test_names_go_to_the_resolver_pool(backend_name, gai):
    async def main():
        assert await net.lookup_host("dual.test") == ["2001:db8::1", "192.0.2.2"]
        assert await net.lookup_ip("ip4", "dual.test") == [ipaddress.ip_address("192.0.2.2")]
        assert await net.lookup_ip("ip6", "dual.test") == [ipaddress.ip_address("2001:db8::1")]
        assert await net.lookup_port("tcp", "http") == socket.getservbyname("http", "tcp")
        assert gai.threads == {"netpoll.resolver"}

    run(backend_name, main)


def test_slow_lookup_does_not_stop_other_goroutines(backend_name, monkeypatch):
    slow = FakeGAI({"slow.test": ["192.0.2.9"]}, delay=0.5)
    monkeypatch.setattr(socket, "getaddrinfo", slow)

    async def main():
        ticks: list[float] = []
        stop = netpoll.Event()
        g = netpoll.go(ticker(0.02, ticks, stop))
        await netpoll.sleep(0)
        t0 = netpoll.now()
        assert await net.lookup_host("slow.test") == ["192.0.2.9"]
        t1 = netpoll.now()
        stop.set()
        await g
        during = [t for t in ticks if t0 <= t <= t1]
        # A blocked scheduler would tick once; 0.5 s at 20 ms is 25 ticks.
        assert len(during) >= 8, (len(during), t1 - t0)

    run(backend_name, main)


def test_identical_lookups_in_flight_share_one_call(backend_name, monkeypatch):
    fake = FakeGAI({"shared.test": ["192.0.2.7", "2001:db8::7"]}, delay=0.2)
    monkeypatch.setattr(socket, "getaddrinfo", fake)

    async def main():
        gs = [netpoll.go(net.lookup_host("shared.test")) for _ in range(5)]
        results = [await g for g in gs]
        assert results == [["192.0.2.7", "2001:db8::7"]] * 5
        assert fake.calls == {"shared.test": 1}
        # Once it is done, the next lookup asks again (no cache).
        await net.lookup_host("shared.test")
        assert fake.calls == {"shared.test": 2}
        # Different networks are different keys, as in Go.
        a = netpoll.go(net.lookup_ip("ip4", "shared.test"))
        b = netpoll.go(net.lookup_ip("ip6", "shared.test"))
        assert [str(x) for x in await a] == ["192.0.2.7"]
        assert [str(x) for x in await b] == ["2001:db8::7"]
        assert fake.calls == {"shared.test": 4}

    run(backend_name, main)


def test_deadline_gives_up_without_cancelling_the_shared_lookup(backend_name, monkeypatch):
    fake = FakeGAI({"slow.test": ["192.0.2.3"]}, delay=0.6)
    monkeypatch.setattr(socket, "getaddrinfo", fake)

    async def main():
        patient = netpoll.go(net.lookup_host("slow.test"))
        await netpoll.sleep(0)
        t0 = netpoll.now()
        with pytest.raises(TimeoutError) as ei:
            await net.lookup_host("slow.test", deadline=t0 + 0.1)
        t1 = netpoll.now()
        e = ei.value
        assert isinstance(e, net.OpError) and isinstance(e, net.DNSError)
        assert isinstance(e, socket.gaierror) and isinstance(e, netpoll.DeadlineExceededError)
        assert e.op == "lookup" and e.timeout()
        assert e.is_timeout and e.name == "slow.test" and not e.is_not_found
        assert "lookup slow.test: i/o timeout" in str(e)
        assert 0.1 <= t1 - t0 < 0.1 + SLACK
        assert await patient == ["192.0.2.3"]
        assert fake.calls == {"slow.test": 1}
        # A deadline already past fails without a lookup.
        with pytest.raises(TimeoutError):
            await net.lookup_host("slow.test", deadline=netpoll.now() - 1)
        assert fake.calls == {"slow.test": 1}

    run(backend_name, main)


def test_not_found_is_dns_error_and_gaierror(backend_name, gai):
    async def main():
        for host in ("gone.test", "empty.test"):
            with pytest.raises(socket.gaierror) as ei:
                await net.lookup_host(host)
            e = ei.value
            assert isinstance(e, net.OpError) and isinstance(e, net.DNSError)
            assert isinstance(e.err, net.DNSError)
            assert e.op == "lookup" and e.net == "ip"
            assert e.name == host and e.is_not_found and not e.is_timeout
            assert e.errno == socket.EAI_NONAME
            assert str(e.err) == f"lookup {host}: no such host"
        # ip6 of an IPv4-only answer: nothing suitable.
        with pytest.raises(net.DNSError, match="no such host") as ei:
            await net.lookup_ip("ip6", "one.test")
        assert ei.value.is_not_found
        with pytest.raises(net.DNSError) as ei:
            await net.lookup_host("again.test")
        assert ei.value.is_temporary and ei.value.err.temporary() and not ei.value.is_not_found

    run(backend_name, main)


def test_an_unexpected_exception_in_getaddrinfo_is_a_dns_error(backend_name, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"boom.test": RuntimeError("boom")}))

    async def main():
        with pytest.raises(net.DNSError, match="lookup boom.test: boom"):
            await net.lookup_host("boom.test")

    run(backend_name, main)


@pytest.mark.parametrize("network,host,why", [
    ("ip", "", "no such host"),
    ("ip", "bad\0host", "NUL"),
    ("ip", "a" * 64 + ".example", "invalid host name"),
    ("ip4", "::1", "no suitable address"),
    ("ip6", "127.0.0.1", "no suitable address"),
])
def test_bad_hosts(backend_name, network, host, why):
    async def main():
        with pytest.raises(net.DNSError, match=why) as ei:
            await net.lookup_ip(network, host)
        assert ei.value.is_not_found and ei.value.op == "lookup"

    run(backend_name, main)


def test_bad_networks_services_and_types(backend_name):
    async def main():
        for call in (net.lookup_ip("tcp", "x"), net.lookup_port("ip7", "http")):
            with pytest.raises(net.UnknownNetworkError) as ei:
                await call
            assert isinstance(ei.value, net.OpError)
        with pytest.raises(net.DNSError) as ei:
            await net.lookup_port("tcp", "no-such-service")
        e = ei.value
        assert e.is_not_found and e.name == "tcp/no-such-service"
        assert str(e.err) == "lookup tcp/no-such-service: unknown port"
        for bad in ("65536", 70000, -1):
            with pytest.raises(net.AddrError, match="out of range"):
                await net.lookup_port("tcp", bad)
        for bad in (None, 1.5, b"80"):
            with pytest.raises(TypeError, match="service must be"):
                await net.lookup_port("tcp", bad)
        with pytest.raises(TypeError, match="host must be a str"):
            await net.lookup_host(b"localhost")

    run(backend_name, main)


def test_prefer_dns_is_refused_not_ignored():
    with pytest.raises(NotImplementedError, match="getaddrinfo"):
        net.Resolver(prefer_dns=True)
    r = net.Resolver()
    assert r.prefer_dns is False


def test_own_resolver_instance(backend_name, gai):
    async def main():
        r = net.Resolver()
        assert await r.lookup_host("one.test") == ["192.0.2.1"]
        assert await r.lookup_port("udp", "domain") == 53

    run(backend_name, main)


def test_thread_limit_follows_rlimit_nofile(monkeypatch):
    import resource

    for soft, want in ((1024, 500), (256, 226), (40, 10), (20, 1), (resource.RLIM_INFINITY, 500)):
        monkeypatch.setattr(resource, "getrlimit", lambda _r, s=soft: (s, s))
        assert _resolve.thread_limit() == want


def test_pool_is_bounded(backend_name, monkeypatch):
    fake = FakeGAI({f"n{i}.test": ["192.0.2.1"] for i in range(6)}, delay=0.15)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setattr(_resolve, "_pool", _resolve._Pool(2))

    async def main():
        gs = [netpoll.go(net.lookup_host(f"n{i}.test")) for i in range(6)]
        for g in gs:
            assert await g == ["192.0.2.1"]
        assert 1 <= fake.max_active <= 2  # never more threads than the bound
        assert _resolve._pool.threads <= 2

    run(backend_name, main)


def test_run_ending_with_a_lookup_in_flight(backend_name, monkeypatch):
    release = threading.Event()
    fake = FakeGAI({"stuck.test": ["192.0.2.1"]})
    real_call = fake.__call__

    def stuck(*a, **k):
        release.wait(5)
        return real_call(*a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", stuck)

    async def main():
        netpoll.go(net.lookup_host("stuck.test"))
        await netpoll.sleep(0.05)
        return "done"

    try:
        assert run(backend_name, main) == "done"
        # What the ended runtime left is dropped by the next lookup.
        group = _resolve.default_resolver._group
        assert all(k[0].backend.closed for k in group.calls)

        async def again():
            assert await net.lookup_host("127.0.0.1") == ["127.0.0.1"]
            monkeypatch.setattr(socket, "getaddrinfo", fake)
            assert await net.lookup_host("stuck.test") == ["192.0.2.1"]
            assert not group.calls

        run(backend_name, again)
    finally:
        release.set()


def test_a_deadline_watcher_leaves_soon_after_the_lookup(backend_name, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", FakeGAI({"quick.test": ["192.0.2.4"]}, delay=0.05))

    async def main():
        rt = netpoll.current_runtime()
        assert await net.lookup_host("quick.test", deadline=netpoll.now() + 30) == ["192.0.2.4"]
        # The watcher sleeps in doubling steps and leaves once its caller is
        # woken: well before the 30 s deadline, its timer is gone.
        for _ in range(100):
            if len(rt.timers) == 0:
                return
            await netpoll.sleep(0.05)
        pytest.fail(f"{len(rt.timers)} timers left 5 s after the lookup")

    run(backend_name, main)


def test_idle_pool_threads_exit(backend_name, monkeypatch):
    fake = FakeGAI({"idle.test": ["192.0.2.5"]})
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    pool = _resolve._Pool(4)
    pool.IDLE = 0.05
    monkeypatch.setattr(_resolve, "_pool", pool)

    async def main():
        assert await net.lookup_host("idle.test") == ["192.0.2.5"]
        assert pool.threads == 1
        for _ in range(200):
            if pool.threads == 0:
                return
            await netpoll.sleep(0.01)
        pytest.fail("an idle resolver thread did not exit")

    run(backend_name, main)
