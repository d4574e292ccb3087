"""The soak (bench/soak.py) in short: 100 connections for 3 seconds under
chaos, per backend, with the soak's invariants asserted. The long run is
by hand (docs/reliability.md)."""

from __future__ import annotations

import os
import zlib

from support import import_bench

soak = import_bench("soak")

CONNS = 100
DURATION = 3.0


def test_soak_short(backend_name):
    r = soak.run_soak(conns=CONNS, duration=DURATION, seed=7, backend=backend_name,
                      chaos_interval=0.01, warmup=1.0, grace=10.0)
    report = "\n".join(r.lines())
    assert r.checksum_failures == 0, report
    assert r.unexpected == [], report
    assert r.stuck == 0, report
    assert r.fds_before == r.fds_after, report
    # The load and the chaos both happened.
    assert r.messages >= 1000, report
    assert r.dials > CONNS, report  # chaos made slots re-dial
    for kind in ("close", "reset", "deadline", "server close", "server reset", "server deadline"):
        assert r.chaos.get(kind, 0) > 0, f"no chaos {kind!r}\n{report}"
    assert sum(r.expected.values()) > 0, report
    # No growth beyond noise after warm-up (a leak per message or per
    # connection over tens of thousands of them would show as far more).
    # Not under AddressSanitizer, whose quarantine holds freed memory back.
    if "ASAN_OPTIONS" not in os.environ:
        assert r.rss_end_kib - r.rss_warm_kib < 32 * 1024, report


def test_soak_detects_corruption(backend_name, monkeypatch):
    """A control: the soak's checks can fail. One response in 50 is sent with
    a wrong CRC in its header; the soak must count checksum failures and
    report them as unexpected."""
    real = zlib.crc32
    calls = [0]

    def crc32(data, value=0):
        c = real(data, value)
        if value == 0 and getattr(data, "readonly", False):  # a sender's header CRC
            calls[0] += 1
            if calls[0] % 50 == 0:
                return c ^ 1
        return c

    monkeypatch.setattr(soak.zlib, "crc32", crc32)
    r = soak.run_soak(conns=10, duration=0.5, seed=3, backend=backend_name,
                      chaos_interval=10.0, warmup=0.1, grace=10.0)
    assert r.checksum_failures > 0, "\n".join(r.lines())
    assert not r.ok
    assert r.fds_before == r.fds_after
