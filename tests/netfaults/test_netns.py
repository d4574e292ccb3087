"""The path builder itself (tests/netfaults/netns.py): isolation, teardown
on every exit, the reasons it gives for skipping, its bad-input errors; and
the soak's command-line checks of --netns-loss and --rate."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

import netns
from nfutil import import_bench


def ns_id(path: str) -> str:
    return os.readlink(path)


def test_entered_moves_only_the_block_and_sockets_stay_where_they_were_made(path):
    home = ns_id("/proc/thread-self/ns/net")
    with path.server.entered():
        assert ns_id("/proc/thread-self/ns/net") != home
        s = socket.socket()
        s.bind((path.link.server_ip, 0))  # this address exists only there
        s.listen()
    try:
        assert ns_id("/proc/thread-self/ns/net") == home
        with pytest.raises(OSError):  # not here
            probe = socket.socket()
            try:
                probe.bind((path.link.server_ip, 0))
            finally:
                probe.close()
        with path.client.entered():
            c = socket.create_connection(s.getsockname(), timeout=5)
        c.close()
    finally:
        s.close()


def test_entered_restores_the_namespace_when_the_block_raises(path):
    home = ns_id("/proc/thread-self/ns/net")
    with pytest.raises(ZeroDivisionError):
        with path.client.entered():
            1 / 0
    assert ns_id("/proc/thread-self/ns/net") == home


def test_a_path_is_gone_after_close_and_names_are_unique(path):
    with netns.Path(links=2) as other:
        names = {other.server.name, other.client.name}
        assert not names & {path.server.name, path.client.name}
        assert names <= set(netns.list_names())
        # Nothing of the path is visible outside it.
        assert "nps0" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not names & set(netns.list_names())


def test_a_failed_set_up_deletes_what_it_made(path, monkeypatch):
    before = set(netns.list_names())

    def broken(self, p, index):
        raise netns.NetnsError("link failed")

    monkeypatch.setattr(netns.Link, "__init__", broken)
    with pytest.raises(netns.NetnsError, match="link failed"):
        netns.Path()
    assert set(netns.list_names()) == before


def test_rules_count_their_packets_and_clear(path):
    r = path.add_rule("server", "input", f"ip saddr {path.link.client_ip} udp dport 9 drop")
    assert path.hits(r) == 0
    with path.client.entered():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        for _ in range(3):
            udp.sendto(b"x", (path.link.server_ip, 9))
    assert path.hits(r) == 3
    path.clear_rules()
    with pytest.raises(KeyError, match=r"r1"):
        path.hits(r)


def test_bad_input_is_named(path):
    with pytest.raises(ValueError, match="links must be 1 to 200"):
        netns.Path(links=0)
    with pytest.raises(ValueError, match="chain must be 'input' or 'output'"):
        path.add_rule("server", "forward", "drop")
    with pytest.raises(ValueError, match="side must be 'server' or 'client'"):
        path.add_rule("middle", "input", "drop")
    with pytest.raises(ValueError, match="must end in a verdict"):
        path.add_rule("server", "input", "tcp dport 80")
    with pytest.raises(ValueError, match="loss must be 0 to 100"):
        path.set_loss(101)
    with pytest.raises(ValueError, match="side must be 'server', 'client' or 'both'"):
        path.link.limit_rate("1mbit", side="middle")
    with pytest.raises(netns.NetnsError, match="nft -f -"):
        path.add_rule("server", "input", "no such match drop")
    with pytest.raises(KeyError, match="no rule named 'r999'"):
        path.hits("r999")


def test_unavailable_names_the_reason(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns._why_unavailable() == "network namespaces need root (euid 0)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real = netns.shutil.which
    monkeypatch.setattr(netns.shutil, "which", lambda t: None if t == "nft" else real(t))
    assert netns._why_unavailable() == "`nft` is not installed (package nftables)"


def test_soak_refuses_a_bad_loss_or_rate(capsys):
    soak = import_bench("soak")
    for argv, words in ((["--netns-loss", "150"], "--netns-loss must be a percentage from 0 to 100"),
                        (["--rate", "fast"], "--rate must be a tc rate"),
                        (["--keep-alive-idle", "0"], "--keep-alive-idle must be 1 to 32767")):
        with pytest.raises(SystemExit) as info:
            soak.main(argv)
        assert info.value.code == 2
        assert words in capsys.readouterr().err
    assert soak.import_netns() is netns  # the soak builds its path with this module
