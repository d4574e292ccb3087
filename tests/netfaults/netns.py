"""A real, faulty network path in private network namespaces.

A :class:`Path` is two fresh network namespaces, ``server`` and ``client``,
joined by one or more veth pairs (a :class:`Link` each, on its own subnet of
198.18.0.0/15, the range set aside for network benchmarks). Nothing is
created in the namespace of the caller: the veth pairs are created inside
the server namespace with their peer end placed straight into the client
namespace, so no interface or address ever appears outside the path, and
two runs (other processes, other pids) never see each other's names.

Faults are kernel faults:

- nftables rules in a table ``inet netfaults`` of either namespace, one
  ``input`` and one ``output`` chain each: random drops (``numgen random``),
  black holes (drop everything matching), TCP resets (``reject with tcp
  reset``); each rule carries a counter, so a test can prove its fault hit;
- a token bucket (``tc qdisc ... tbf``) on either end of a link.

A socket belongs to the network namespace of the thread that created it,
for its whole life. netpoll creates a socket synchronously inside
``net.listen`` and at the start of ``net.dial``, on the thread that runs the
runtime. So a test runs its whole runtime inside the client namespace
(``with path.client.entered(): netpoll.run(...)``) and creates its listeners
inside the server namespace with a synchronous ``with path.server.entered():
ln = net.listen(...)``; every dial then comes from the client namespace and
every accepted conn lives in the server namespace. Other processes run in a
namespace through ``ip netns exec`` (:meth:`Netns.popen`).

Teardown deletes the namespaces (the veth pairs, addresses, rules and
qdiscs go with them) on every exit path; a namespace left behind by a
process that died before its teardown (``netpoll-<pid>-...`` of a pid that
is gone, ten minutes old) is deleted by the next :class:`Path`.

:func:`unavailable` says why the machine cannot build a path (not root, no
``ip``/``nft``/``tc``, no permission to create a namespace), or None.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from typing import Any, Iterator, Optional, Sequence

CLONE_NEWNET = 0x40000000
PREFIX = "netpoll-"
TABLE = "netfaults"
_seq = itertools.count()


class NetnsError(RuntimeError):
    """A command that builds or changes the path failed."""


def _cmd(argv: Sequence[str], input: Optional[str] = None, check: bool = True) -> str:
    p = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit status {p.returncode}: {p.stderr.strip()}")
    return p.stdout


@functools.cache
def unavailable() -> Optional[str]:
    """Why no path can be built here, or None. Probed once per process."""
    return _why_unavailable()


def _why_unavailable() -> Optional[str]:
    if not os.path.isdir("/proc/self/ns"):
        return "no /proc/self/ns: network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (euid 0)"
    for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (package {pkg})"
    name = f"{PREFIX}{os.getpid()}-probe"
    try:
        _cmd(["ip", "netns", "add", name])
    except (NetnsError, OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace: {e}"
    try:
        _cmd(["ip", "netns", "exec", name, "nft", "add", "table", "inet", TABLE])
        _cmd(["ip", "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        _cmd(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "p0", "root",
              "tbf", "rate", "1mbit", "burst", "16kb", "latency", "100ms"])
    except (NetnsError, OSError, subprocess.TimeoutExpired) as e:
        return f"a network namespace lacks what the path needs (veth, nftables, tbf): {e}"
    finally:
        _cmd(["ip", "netns", "del", name], check=False)
    return None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def list_names() -> list[str]:
    """The names of this module's namespaces (every process's)."""
    names = []
    for line in _cmd(["ip", "netns", "list"], check=False).splitlines():
        if line.startswith(PREFIX):
            names.append(line.split()[0])
    return names


def reap_stale(min_age: float = 600.0) -> list[str]:
    """Delete the namespaces of this module whose creating process is gone
    and that are older than ``min_age`` seconds (the age guards against a
    pid that is only invisible here, in another pid namespace)."""
    gone = []
    for name in list_names():
        m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
        try:
            age = time.time() - os.stat(f"/run/netns/{name}").st_mtime
        except OSError:
            continue
        if m and age > min_age and not os.path.exists(f"/proc/{m.group(1)}"):
            _cmd(["ip", "netns", "del", name], check=False)
            gone.append(name)
    return gone


class Netns:
    """One named network namespace (``ip netns``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def ip(self, *args: str) -> str:
        return _cmd(["ip", "-n", self.name, *args])

    def exec(self, *argv: str, input: Optional[str] = None) -> str:
        """Run a command inside the namespace; its stdout."""
        return _cmd(["ip", "netns", "exec", self.name, *argv], input=input)

    def tcp_counters(self, pattern: str = "Reset|Rst|Abort|Cookie|Overflow|ListenDrop|ReqQ") -> dict[str, int]:
        """The namespace's nonzero TCP counters (``/proc/net/netstat`` and
        ``/proc/net/snmp``, per namespace) whose names match ``pattern``:
        what the kernel did (resets sent, SYN cookies, accept-queue
        overflows) that a failing test's report should show."""
        out: dict[str, int] = {}
        text = self.exec("cat", "/proc/net/netstat", "/proc/net/snmp")
        lines = text.splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            prefix, _, names = names.partition(":")
            for k, v in zip(names.split(), values.partition(":")[2].split()):
                if prefix in ("Tcp", "TcpExt") and re.search(pattern, k) and v.lstrip("-").isdigit() and int(v):
                    out[k] = int(v)
        return out

    def nft(self, script: str) -> None:
        """Apply an nft script (``nft -f -``) atomically."""
        self.exec("nft", "-f", "-", input=script)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a process inside the namespace. ``ip netns exec`` execs it,
        so the Popen's pid is the program's own pid (signals reach it)."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kw)

    @contextlib.contextmanager
    def entered(self) -> Iterator["Netns"]:
        """Move the calling thread into the namespace for the block.

        Sockets created in the block stay in the namespace after it; the
        thread's own namespace is restored on every exit, or the error says
        the thread could not get back (it would be unsafe to go on)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            there = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(there)
            finally:
                os.close(there)
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(home)

    def delete(self) -> None:
        # `ip netns del` can fail while the kernel still holds the mount
        # (EBUSY right after a process inside it exited): retry briefly, and
        # say so if the namespace outlives the retries.
        for _ in range(50):
            _cmd(["ip", "netns", "del", self.name], check=False)
            if not self.exists():
                return
            time.sleep(0.1)
        raise NetnsError(f"network namespace {self.name} could not be deleted")

    def exists(self) -> bool:
        return os.path.exists(f"/run/netns/{self.name}")


class Link:
    """A veth pair between the path's server and client namespaces."""

    def __init__(self, path: "Path", index: int) -> None:
        self.index = index
        self.server_dev = f"nps{index}"
        self.client_dev = f"npc{index}"
        self.server_ip = f"198.18.{index}.1"
        self.client_ip = f"198.18.{index}.2"
        s, c = path.server, path.client
        s.ip("link", "add", self.server_dev, "type", "veth", "peer", "name", self.client_dev,
             "netns", c.name)
        s.ip("addr", "add", f"{self.server_ip}/24", "dev", self.server_dev)
        c.ip("addr", "add", f"{self.client_ip}/24", "dev", self.client_dev)
        s.ip("link", "set", self.server_dev, "up")
        c.ip("link", "set", self.client_dev, "up")
        self._path = path

    def limit_rate(self, rate: str, side: str = "both", burst: str = "32kb",
                   latency: str = "200ms") -> None:
        """A tbf qdisc (``rate`` as tc spells it: "1mbit") on the egress of
        the server end, the client end or both."""
        for ns, dev in self._sides(side):
            ns.exec("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                    "burst", burst, "latency", latency)

    def qdisc_stats(self, side: str) -> dict:
        ((ns, dev),) = self._sides(side)
        return json.loads(ns.exec("tc", "-s", "-j", "qdisc", "show", "dev", dev))[0]

    def _sides(self, side: str) -> list[tuple[Netns, str]]:
        out = []
        if side in ("server", "both"):
            out.append((self._path.server, self.server_dev))
        if side in ("client", "both"):
            out.append((self._path.client, self.client_dev))
        if not out:
            raise ValueError(f"side must be 'server', 'client' or 'both', not {side!r}")
        return out


class Path:
    """Two namespaces and ``links`` veth pairs; a context manager that
    deletes everything on exit. ``path.server``/``path.client`` are the
    namespaces, ``path.links[i]`` the links (``path.link`` is the first)."""

    def __init__(self, links: int = 1) -> None:
        if not 1 <= links <= 200:
            raise ValueError(f"links must be 1 to 200, not {links!r}")
        why = unavailable()
        if why:
            raise NetnsError(why)
        reap_stale()
        n = next(_seq)
        self.server = Netns(f"{PREFIX}{os.getpid()}-{n}-server")
        self.client = Netns(f"{PREFIX}{os.getpid()}-{n}-client")
        self.links: list[Link] = []
        self._rules = 0
        created: list[Netns] = []
        try:
            for ns in (self.server, self.client):
                _cmd(["ip", "netns", "add", ns.name])
                created.append(ns)
                ns.ip("link", "set", "lo", "up")
                ns.nft(f"add table inet {TABLE}\n"
                       f"add chain inet {TABLE} input {{ type filter hook input priority 0; }}\n"
                       f"add chain inet {TABLE} output {{ type filter hook output priority 0; }}\n")
            for i in range(links):
                self.links.append(Link(self, i))
        except BaseException:
            for ns in created:
                ns.delete()
            raise

    @property
    def link(self) -> Link:
        return self.links[0]

    def __enter__(self) -> "Path":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        for ns in (self.server, self.client):
            try:
                ns.delete()
            except NetnsError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    # -- faults -------------------------------------------------------------

    def _side(self, side: str) -> Netns:
        if side == "server":
            return self.server
        if side == "client":
            return self.client
        raise ValueError(f"side must be 'server' or 'client', not {side!r}")

    def add_rule(self, side: str, chain: str, rule: str) -> str:
        """Append ``rule`` (nft syntax, without the verdict's counter) to a
        chain of one side; returns the rule's name, for :meth:`hits`."""
        if chain not in ("input", "output"):
            raise ValueError(f"chain must be 'input' or 'output', not {chain!r}")
        self._rules += 1
        name = f"r{self._rules}"
        # The counter goes before the verdict so that it counts every match.
        m = re.match(r"(.*?)\s*((?:drop|accept|reject.*))$", rule)
        if not m:
            raise ValueError(f"rule must end in a verdict (drop, accept, reject ...): {rule!r}")
        self._side(side).nft(f'add rule inet {TABLE} {chain} {m.group(1)} counter {m.group(2)} '
                             f'comment "{name}"\n')
        return name

    def hits(self, name: str) -> int:
        """Packets that matched the rule named ``name`` so far."""
        for ns in (self.server, self.client):
            for item in json.loads(ns.exec("nft", "-j", "list", "table", "inet", TABLE))["nftables"]:
                rule = item.get("rule")
                if rule and rule.get("comment") == name:
                    for e in rule["expr"]:
                        if "counter" in e:
                            return int(e["counter"]["packets"])
        raise KeyError(f"no rule named {name!r}")

    def clear_rules(self) -> None:
        for ns in (self.server, self.client):
            ns.nft(f"flush chain inet {TABLE} input\nflush chain inet {TABLE} output\n")

    def set_loss(self, percent: float, link: Optional[Link] = None) -> list[str]:
        """Drop ``percent`` % of the packets in each direction of a link, at
        random (on the server end: its egress and its ingress)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be 0 to 100 percent, not {percent!r}")
        link = link or self.link
        # numgen draws from 0..9999: hundredths of a percent.
        n = int(round(percent * 100))
        return [self.add_rule("server", "input", f'iifname "{link.server_dev}" '
                              f"numgen random mod 10000 < {n} drop"),
                self.add_rule("server", "output", f'oifname "{link.server_dev}" '
                              f"numgen random mod 10000 < {n} drop")]

    def black_hole(self, match: str = "", link: Optional[Link] = None) -> list[str]:
        """Drop every packet of a link matching ``match`` (nft, may be
        empty), both ways, from now on."""
        link = link or self.link
        return [self.add_rule("server", "input", f'iifname "{link.server_dev}" {match} drop'),
                self.add_rule("server", "output", f'oifname "{link.server_dev}" {match} drop')]

