"""Fixtures of the network-fault tests: a fresh path of two namespaces per
test (tests/netfaults/netns.py), skipped with the reason where the machine
cannot build one, and deleted after the test whatever its outcome."""

from __future__ import annotations

import pytest

import netns


def _path(links: int):
    why = netns.unavailable()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    p = netns.Path(links)
    try:
        yield p
    finally:
        p.close()
    left = [ns.name for ns in (p.server, p.client) if ns.exists()]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def path():
    """Two namespaces joined by one veth pair."""
    yield from _path(1)


@pytest.fixture
def path_of_two_links():
    """Two namespaces joined by two veth pairs, each on its own subnet."""
    yield from _path(2)
