"""The descriptor census behind the autouse leak check (tests/conftest.py).

Where /proc/self/fd or /dev/fd lists descriptors it is read; elsewhere (and in
a NETPOLL_PORTABLE build, which proves that path on Linux) every number is
asked with fcntl. Both ways must see the same descriptors.
"""

from __future__ import annotations

import os

import pytest

import support.core as cs


def test_the_scan_sees_what_opens_and_closes():
    before = cs.scanned_fds()
    r, w = os.pipe()
    try:
        assert cs.scanned_fds() - before == {r, w}
    finally:
        os.close(r)
        os.close(w)
    assert cs.scanned_fds() == before


def test_the_scan_sees_a_descriptor_past_a_gap():
    # Numbers are allocated lowest-free first, but dup2 may place one higher:
    # within SCAN_GAP of the highest open descriptor it is still seen.
    top = max(cs.scanned_fds())
    target = top + cs.SCAN_GAP // 2
    r, w = os.pipe()
    try:
        os.dup2(r, target)
        try:
            assert target in cs.scanned_fds()
        finally:
            os.close(target)
    finally:
        os.close(r)
        os.close(w)


def test_the_scan_agrees_with_the_listing():
    if cs.FD_DIR is None:
        pytest.skip("no descriptor listing is used here (portable build or no /proc, /dev/fd): "
                    "the scan is the census")
    assert cs.scanned_fds() == cs.listed_fds(cs.FD_DIR)


def test_the_census_in_use_matches_the_build():
    from netpoll import _syscall

    if _syscall.PORTABLE:
        assert cs.FD_DIR is None, "a portable build's harness must not read /proc"
    assert cs.open_fds() == (cs.listed_fds(cs.FD_DIR) if cs.FD_DIR else cs.scanned_fds())
