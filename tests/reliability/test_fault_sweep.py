"""Fault sweep: every hooked call x a set of errnos x the first, a middle and
the last call of a scenario x before and after the real call.

The scenario is a small server and its clients: listen; then, one client
after another, dial, accept (a server goroutine's accept loop), echo a
message, close both sides; then (with the fault paused) one more client that
must be served, which proves the server keeps serving; then close the
listener. A dry run without faults counts the calls the scenario makes to
each hook; the sweep then fails exactly one of them. The run is the same as
the dry run up to that call (the scenario is deterministic), so the fault
always fires, and the test checks that it did.

What must hold for every combination:
- the caller of the step that made the failing call sees a net.OpError with
  the injected errno, of the built-in class a plain socket would raise, and
  the op of that step (listen, dial, accept, close); except the documented
  cases: ECONNABORTED and EINTR on accept are retried by the FD layer, and
  EAGAIN on accept means "nothing queued": accept parks until the next
  readiness (with the fault before the call, on an edge-triggered backend
  that is the next connection; the waiting client's deadline ends its
  exchange first);
- the only other errors are the direct consequences of the fault, listed
  in CONSEQUENCES (a connection the failed accept took and closed, a
  connect whose socket was closed after the SYN);
- nothing leaks: the switch's socket table is empty and /proc/self/fd has
  as many entries as before;
- the server keeps serving: the client after the fault window is served.

A close failing before the call keeps its descriptor (the switch never
called close(2); a real close(2) always releases the descriptor on Linux):
the caller reclaims it with a real close through the hooks.
"""

from __future__ import annotations

import errno
import os

import pytest

import netpoll
from netpoll import hooks, net
from netpoll.socktest import Switch, fail

from support import fd_count, read_full, run

CALLS = ("socket", "connect", "listen", "accept", "close", "getsockopt")
ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ECONNABORTED,
          errno.ECONNREFUSED, errno.EINTR, errno.EAGAIN)
WHEN = ("before", "after")
CLIENTS = 3
MSG = b"ping" * 64

# The step that makes each hooked call, and the op its OpError names.
STEP_OPS = {"listen": "listen", "dial": "dial", "accept": "accept",
            "close": "close", "serve-close": "close", "listener-close": "close"}
CALL_STEPS = {
    "socket": {"listen", "dial"},
    "connect": {"dial"},
    "getsockopt": {"dial"},
    "listen": {"listen"},
    "accept": {"accept"},
    "close": {"close", "serve-close", "listener-close"},
}
# Errors a fault may cause besides its own OpError: (step, classes).
CONSEQUENCES = {
    # The connection the failed accept took was closed by the switch: its
    # client reads EOF or a reset; an EAGAIN before the call leaves the
    # connection queued and the accept parked, so the client's exchange
    # times out, and the server later echoes to a client that is gone.
    "accept": {("echo", (EOFError, ConnectionResetError, TimeoutError)),
               ("serve", (ConnectionResetError, BrokenPipeError))},
    # A connect failed after the real call (SYN sent) or an SO_ERROR check
    # failed: the socket is closed, and the server may accept a connection
    # that is then reset.
    "connect": {("serve", (ConnectionResetError, BrokenPipeError))},
    "getsockopt": {("serve", (ConnectionResetError, BrokenPipeError))},
}


def expected_class(code: int) -> type:
    return type(OSError(code, os.strerror(code)))


class Nth:
    """A filter that fails the n-th eligible call with ``code``.

    Before the call every call is eligible; after it, only calls that
    succeeded (the switch runs no after-filter for a call that failed by
    itself, such as an accept with nothing queued). With n = 0 it fails
    nothing and only counts. ``paused`` passes calls through uncounted.
    """

    def __init__(self, n: int = 0, code: int = 0, when: str = "before") -> None:
        self.n, self.code, self.when = n, code, when
        self.calls = 0      # every call seen
        self.succeeded = 0  # calls whose real call succeeded
        self.fired = 0
        self.paused = False

    def __call__(self, st):
        if self.paused:
            return None
        self.calls += 1
        if self.when == "before" and self.calls == self.n:
            self.fired += 1
            fail(self.code)

        def after(st):
            self.succeeded += 1
            if self.when == "after" and self.succeeded == self.n:
                self.fired += 1
                fail(self.code)

        return after


def positions(total: int) -> list[int]:
    return sorted({1, (total + 1) // 2, total}) if total else []


class Scenario:
    def __init__(self, sw: Switch, f: Nth, short_deadline: bool) -> None:
        self.sw = sw
        self.f = f
        self.log: list[tuple[str, BaseException]] = []
        self.verify_log: list[tuple[str, BaseException]] = []
        self.deadline = 0.3 if short_deadline else 5.0
        self.handlers: list = []
        self.stopping = False

    def reclaim(self, sock) -> None:
        # A close cancelled before the call left the descriptor open.
        if sock.fileno() >= 0 and sock.fileno() in self.sw.sockets():
            hooks.close(sock)

    def close(self, fd, step: str, log) -> None:
        try:
            fd.close()
        except net.OpError as e:
            log.append((step, e))
            self.reclaim(fd._sock)

    async def echo(self, s, log) -> None:
        buf = bytearray(4096)
        try:
            s.set_deadline(netpoll.now() + self.deadline)
            while n := await s.read(buf):
                await s.write(memoryview(buf)[:n])
        except OSError as e:
            log.append(("serve", e))
        finally:
            self.close(s, "serve-close", log)

    async def serve(self, ln) -> None:
        while True:
            try:
                s = await ln.accept()
            except net.OpError as e:
                if self.stopping and isinstance(e, TimeoutError):
                    return
                self.log.append(("accept", e))
                continue  # a server keeps going after a failed accept
            log = self.verify_log if self.f.paused else self.log
            self.handlers.append(netpoll.go(self.echo(s, log)))

    async def client(self, addr, log) -> None:
        try:
            c = await net.dial("tcp", addr, timeout=5)
        except net.OpError as e:
            log.append(("dial", e))
            return
        try:
            c.set_deadline(netpoll.now() + self.deadline)
            await c.write(MSG)
            assert await read_full(c, len(MSG)) == MSG
        except (OSError, EOFError) as e:
            log.append(("echo", e))
        finally:
            self.close(c, "close", log)

    async def main(self) -> None:
        ln = None
        for _ in range(2):  # the fault fires once: the second listen works
            try:
                ln = net.listen("tcp", "127.0.0.1:0")
                break
            except net.OpError as e:
                self.log.append(("listen", e))
        assert ln is not None
        server = netpoll.go(self.serve(ln))
        for _ in range(CLIENTS):
            await self.client(ln.addr, self.log)
        while not all(h.done for h in self.handlers):
            await netpoll.sleep(0.001)
        # The fault window pauses: a client served now proves the server
        # still serves after whatever failed.
        self.f.paused = True
        await self.client(ln.addr, self.verify_log)
        while not all(h.done for h in self.handlers):
            await netpoll.sleep(0.001)
        # Stop the accept loop first, so that the listener's close(2) runs
        # in ln.close() itself (a close deferred to a leaving accept is
        # test_deferred_close_error_is_not_the_operations_error).
        self.stopping = True
        ln.set_deadline(netpoll.now() - 1)
        await server
        for h in self.handlers:
            await h
        self.f.paused = False
        try:
            ln.close()
        except net.OpError as e:
            self.log.append(("listener-close", e))
            self.reclaim(ln._fd._sock)


def run_scenario(backend_name: str, call: str, f: Nth, short_deadline: bool = False) -> Scenario:
    sw = Switch()
    sw.set(call, f)
    sc = Scenario(sw, f, short_deadline)
    with sw:
        run(backend_name, sc.main)
    leaked = sw.sockets()
    assert not leaked, f"sockets left open: {leaked}"
    return sc


def check(sc: Scenario, call: str, code: int, when: str, backend_name: str) -> None:
    label = f"{call} {errno.errorcode[code]} {when} call #{sc.f.n} on {backend_name}"
    assert sc.f.fired == 1, f"{label}: the fault never fired (the scenario is not deterministic)"
    assert not sc.verify_log, f"{label}: the server stopped serving: {sc.verify_log}"
    retried = call == "accept" and code in (errno.ECONNABORTED, errno.EINTR, errno.EAGAIN)
    own = [(step, e) for step, e in sc.log
           if step in CALL_STEPS[call] and isinstance(e, net.OpError) and e.errno == code]
    if retried:
        assert not own, f"{label}: accept should retry (or park), the caller saw {own}"
    else:
        assert len(own) == 1, f"{label}: expected one OpError with the injected errno, got {sc.log}"
        step, e = own[0]
        assert e.op == STEP_OPS[step], f"{label}: op {e.op!r} for step {step}"
        assert e.net == "tcp"
        assert isinstance(e, expected_class(code)), f"{label}: {type(e).__mro__}"
        assert os.strerror(code) in str(e), f"{label}: {e}"
    allowed = CONSEQUENCES.get(call, set())
    for step, e in sc.log:
        if (step, e) in own:
            continue
        assert any(step == s and isinstance(e, classes) for s, classes in allowed), (
            f"{label}: unexpected {step} error {e!r}; all: {sc.log}")


@pytest.mark.parametrize("call", CALLS)
def test_fault_sweep(backend_name, call):
    dry = Nth()
    sc = run_scenario(backend_name, call, dry)
    assert not sc.log and not sc.verify_log, f"the dry run failed: {sc.log + sc.verify_log}"
    assert dry.calls > 0, f"the scenario never calls {call}"
    # The dry run is what the sweep relies on: run it again, same counts.
    again = Nth()
    run_scenario(backend_name, call, again)
    assert (again.calls, again.succeeded) == (dry.calls, dry.succeeded)
    swept = 0
    for when in WHEN:
        total = dry.calls if when == "before" else dry.succeeded
        for n in positions(total):
            for code in ERRNOS:
                before = fd_count()
                f = Nth(n, code, when)
                short = call == "accept" and code == errno.EAGAIN
                sc = run_scenario(backend_name, call, f, short_deadline=short)
                check(sc, call, code, when, backend_name)
                assert fd_count() == before, f"{call} {errno.errorcode[code]} {when} #{n}: descriptor leak"
                swept += 1
    assert swept >= len(ERRNOS) * 2


# -- accept under EMFILE, for real --------------------------------------------------

def test_accept_under_real_emfile_keeps_serving(backend_name):
    """The process runs out of descriptors while connections are queued: the
    accept loop sees EMFILE (an OpError, temporary()) and backs off, the
    server stays up, and once descriptors are freed it serves the queued
    connections and new ones."""
    import resource

    from support import open_fds

    with open("/proc/self/maps") as maps:
        if "vgpreload" in maps.read():
            pytest.skip("under valgrind, which enforces RLIMIT_NOFILE itself by closing a new "
                        "descriptor above it after the call: the queued connection is lost")

    async def main():
        ln = net.listen("tcp", "127.0.0.1:0")
        clients = [await net.dial("tcp", ln.addr) for _ in range(3)]
        errors: list = []
        served: list = []
        spare: list[int] = []
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            # Lower the limit just above what is open, then take the rest.
            # (Descriptors at or above the soft limit are a tool's own, such
            # as valgrind's.)
            limit = max(fd for fd in open_fds() if fd < soft) + 16
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            while True:
                try:
                    spare.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
                except OSError as e:
                    assert e.errno == errno.EMFILE
                    break
                assert len(spare) <= limit

            async def serve():
                backoff = 0.005
                while True:
                    try:
                        s = await ln.accept()
                    except netpoll.ClosedError:
                        return
                    except net.OpError as e:
                        errors.append(e)
                        assert e.temporary(), e
                        await netpoll.sleep(backoff)  # Go's http server backs off
                        backoff = min(backoff * 2, 0.05)
                        continue
                    backoff = 0.005
                    served.append(s)

            server = netpoll.go(serve())
            while len(errors) < 3:
                await netpoll.sleep(0.005)
            assert not served
            for e in errors:
                assert isinstance(e, net.OpError) and e.op == "accept" and e.errno == errno.EMFILE
                assert isinstance(e, OSError) and "Too many open files" in str(e)
            # Free the descriptors: the server serves again.
            for fd in spare:
                os.close(fd)
            spare.clear()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            t = netpoll.now() + 5
            while len(served) < 3 and netpoll.now() < t:
                await netpoll.sleep(0.005)
            assert len(served) == 3
            late = await net.dial("tcp", ln.addr)
            clients.append(late)
            while len(served) < 4 and netpoll.now() < t:
                await netpoll.sleep(0.005)
            assert len(served) == 4
            by_addr = {s.remote_addr: s for s in served}
            assert set(by_addr) == {c.local_addr for c in clients}
            for c in clients:
                await c.write(b"hi")
                assert await read_full(by_addr[c.local_addr], 2) == b"hi"
            ln.close()
            await server
        finally:
            for fd in spare:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for x in clients + served:
                x.close()
            ln.close()

    run(backend_name, main)


# -- a close(2) that fails with an operation parked -----------------------------------

@pytest.mark.parametrize("op", ["accept", "read"])
def test_close_error_is_closes_own_not_the_operations_error(backend_name, op):
    async def main():
        with Switch() as sw:
            ln = net.listen("tcp", "127.0.0.1:0")
            c = s = None
            try:
                if op == "accept":
                    target = ln
                    g = netpoll.go(ln.accept())
                else:
                    c = await net.dial("tcp", ln.addr)
                    s = await ln.accept()
                    target = s
                    g = netpoll.go(s.read(bytearray(16)))
                await netpoll.sleep(0.01)  # parked
                fd = target.fileno()
                f = Nth(1, errno.EIO, "after")
                sw.set("close", f)
                # close(2) runs in close() (the operation is parked, not in a
                # syscall), so its error is close()'s own, as in Go.
                try:
                    with pytest.raises(net.OpError) as ce:
                        target.close()
                    assert ce.value.op == "close" and ce.value.errno == errno.EIO
                    with pytest.raises(netpoll.ClosedError) as ei:
                        await g
                finally:
                    sw.set("close", None)
                assert f.fired == 1 and fd not in sw.sockets()
                assert "use of closed network connection" in str(ei.value)
            finally:
                for x in (c, s, ln):
                    if x is not None:
                        x.close()
        assert not sw.sockets()

    run(backend_name, main)
