"""The soak (bench/soak.py) over a lossy path, in short: 100 connections
for 6 s under chaos, across a veth pair that drops 2 % of the packets each
way, per backend; the long run (1,000 connections, 10 minutes) is by hand
(docs/reliability.md). Keep-alive probes after 2 s of silence find the
connections whose chaos reset the path dropped, so the teardown is quick.

Heavy: about 6 s of load plus a teardown of a few seconds.
"""

from __future__ import annotations

import pytest

import netns
from nfutil import import_bench

soak = import_bench("soak")

CONNS = 100
DURATION = 6.0


def test_soak_over_a_lossy_path(backend_name):
    why = netns.unavailable()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    before = set(netns.list_names())
    r = soak.run_soak(conns=CONNS, duration=DURATION, seed=11, backend=backend_name,
                      chaos_interval=0.02, warmup=1.0, grace=10.0, netns_loss=2.0,
                      keep_alive_idle=2)
    report = "\n".join(r.lines())
    print(report)
    assert r.checksum_failures == 0, report
    assert r.unexpected == [], report
    assert r.stuck == 0, report
    assert r.fds_before == r.fds_after, report
    assert r.messages >= 200, report
    assert r.dropped_packets > 0, report
    assert sum(r.expected.values()) > 0, report
    assert set(netns.list_names()) == before, "the soak left a namespace behind"
