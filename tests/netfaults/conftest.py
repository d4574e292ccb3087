"""Fixtures of the network-fault tests: a fresh path of two namespaces per
test (tests/netfaults/netns.py), skipped with the reason where the machine
cannot build one, and deleted after the test whatever its outcome."""

from __future__ import annotations

import pytest

import netns


@pytest.fixture
def path():
    why = netns.unavailable()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    p = netns.Path()
    try:
        yield p
    finally:
        p.close()
    left = [ns.name for ns in (p.server, p.client) if ns.exists()]
    assert not left, f"namespaces left behind: {left}"
