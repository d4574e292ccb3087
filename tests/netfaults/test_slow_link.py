"""A slow link: a 1 Mbit/s token bucket (tc tbf) on both ends of one veth
pair, a second pair beside it with no limit, one netpoll server listening on
both.

The server writes 50 MiB in one write to a client that crosses the slow
link and reads 8 KiB every 0.1 s (80 KB/s, below the link's 125 KB/s).
At 1 Mbit/s the whole 50 MiB would take seven minutes, so the write has a
deadline WRITE_FOR seconds ahead, and ends there: what it proves is that
netpoll does not buffer what the kernel will not take (server RSS grows by
less than 16 MiB while the write is pending; the 50 MiB source was already
in memory), that the deadline fires on time, and that the blocked write
does not hold the server's other connections: clients over the free link,
keep making round trips throughout, none slower than a second, and so does
one over the slow link itself, none slower than two (each end's bucket
queues up to 200 ms).

Heavy: WRITE_FOR (4 s) plus set-up.
"""

from __future__ import annotations

import netpoll
from netpoll import net

from nfutil import SLACK, addr, close_all, listen, read_full, rss_kib, run

WRITE_FOR = 4.0
BIG = 50 << 20
FAST_CONNS = 4


def test_slow_reader_on_a_slow_link(backend_name, path_of_two_links):
    path = path_of_two_links
    slow, free = path.links
    slow.limit_rate("1mbit")
    payload = b"s" * BIG  # touched: its pages are in RSS before the write

    async def main():
        ln = listen(path)
        conns = []
        result = {}
        round_trips = []
        shared = []  # round trips of a client that shares the slow link

        async def echo(conn):
            buf = bytearray(1024)
            try:
                while True:
                    n = await conn.read(buf)
                    if n == 0:
                        return
                    await conn.write(buf[:n])
            except OSError:
                pass  # closed at the end of the test

        async def big_write(conn):
            rss_before = rss_kib()
            t0 = netpoll.now()
            conn.set_write_deadline(t0 + WRITE_FOR)
            try:
                await conn.write(payload)
            except Exception as e:
                result["error"] = e
            result["took"] = netpoll.now() - t0
            result["rss_growth"] = rss_kib() - rss_before

        async def slow_reader(conn):
            buf = bytearray(8192)
            total = 0
            conn.set_read_deadline(netpoll.now() + WRITE_FOR + SLACK + 2.0)
            try:
                while "took" not in result:
                    n = await conn.read(buf)
                    if n == 0:
                        break
                    total += n
                    await netpoll.sleep(0.1)
            finally:
                result["read"] = total

        async def fast_client(conn, stop, times):
            msg = b"f" * 1024
            while not stop():
                t0 = netpoll.now()
                conn.set_deadline(t0 + 2 * SLACK)
                await conn.write(msg)
                assert await read_full(conn, len(msg)) == msg
                times.append(netpoll.now() - t0)

        try:
            # The slow client first: the server's first accept is its conn.
            sc = await net.dial("tcp", addr(path, ln, slow), timeout=10)
            conns.append(sc)
            ss = await ln.accept()
            conns.append(ss)
            fast = []
            for _ in range(FAST_CONNS):
                c = await net.dial("tcp", addr(path, ln, free), timeout=10)
                s = await ln.accept()
                conns += [c, s]
                fast.append(c)
                netpoll.go(echo(s))
            c = await net.dial("tcp", addr(path, ln, slow), timeout=10)
            s = await ln.accept()
            conns += [c, s]
            netpoll.go(echo(s))
            reader = netpoll.go(slow_reader(sc))
            writer = netpoll.go(big_write(ss))
            def done():
                return "took" in result

            clients = [netpoll.go(fast_client(c, done, round_trips)) for c in fast]
            clients.append(netpoll.go(fast_client(c, done, shared)))
            await writer
            for g in clients:
                await g
            await reader
        finally:
            close_all(*conns, ln)
        return result, round_trips, shared

    result, round_trips, shared = run(path, backend_name, main)
    sent = slow.qdisc_stats("server")
    report = (f"write ended after {result['took']:.2f} s with {result.get('error')!r}; "
              f"slow reader got {result['read']:,} bytes; RSS grew {result['rss_growth']:,} KiB; "
              f"{len(round_trips)} fast round trips, slowest {max(round_trips, default=0) * 1000:.1f} ms; "
              f"{len(shared)} across the slow link, slowest {max(shared, default=0) * 1000:.1f} ms; "
              f"tbf on the server end: sent {sent.get('bytes', 0):,} bytes, overlimits {sent.get('overlimits', 0)}")
    print(report)
    e = result.get("error")
    assert isinstance(e, netpoll.DeadlineExceededError) and isinstance(e, net.OpError), report
    assert WRITE_FOR - 0.01 <= result["took"] <= WRITE_FOR + SLACK, report
    assert result["rss_growth"] < 16 * 1024, report
    # The link was slow: far less than the 50 MiB got through.
    assert 0 < result["read"] < BIG // 10, report
    assert sent.get("overlimits", 0) > 0, f"the token bucket never held a packet back; {report}"
    # The other connections were served all along.
    assert len(round_trips) >= 4 * FAST_CONNS, report
    assert max(round_trips) < 1.0, report
    # Even one that shares the slow link: its packets wait behind the big
    # write's in each end's bucket (at most 200 ms each way), no longer.
    assert len(shared) >= 4, report
    assert max(shared) < 2.0, report
