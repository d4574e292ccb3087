"""Deadlines, one place for what does not depend on the backend: goroutines
parked in pd.wait (the production wait) under the scheduler and its timers.
A deadline fires not before it is due, can be moved, extended, shortened
and cleared while a goroutine waits, holds per direction, fails a wait at
once once expired (even with data ready), yields to close, and a stale
deadline never reaches a descriptor number's next owner.

Also: tests/conformance/test_deadlines.py drives a PollDesc's deadlines
with a Timers heap against each backend (what the backend's events do to
a timed-out or evicted descriptor); tests/net/test_deadline.py covers the
conn API (set_deadline, set_read_deadline, set_write_deadline, their values
and the TimeoutError a conn raises) and Go's timeout tests on accept,
read_from, write_to and dial."""

from __future__ import annotations

import pytest

import netpoll
from netpoll import _sched
from netpoll._netpoll import monotonic_ns

from support import MS, after, drain, run
from support.runtime import Pair, expect_timeout, parked_on, settle


# ---------------------------------------------------------------------------
# While blocked
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["minus-one", "absolute-past"])
def test_past_deadline_wakes_blocked_reader_at_once(backend_name, how):
    async def main():
        with Pair() as p:
            r = netpoll.go(expect_timeout(p))
            await settle()
            assert parked_on(p.pd, "r", r)
            t0 = monotonic_ns()
            p.set_deadline(-1 if how == "minus-one" else t0 - 5 * MS, "r")
            t1, err = await r
            return t1 - t0, err

    took, err = run(backend_name, main)
    assert took < 200 * MS
    assert isinstance(err, TimeoutError)
    assert isinstance(err, netpoll.DeadlineExceededError)
    assert str(err) == "i/o timeout"


def test_deadline_fires_not_before_it_is_due(backend_name):
    async def main():
        with Pair() as p:
            d = after(50)
            p.set_deadline(d, "r")
            t1, _ = await expect_timeout(p)
            return t1 - d

    late = run(backend_name, main)
    assert 0 <= late < 500 * MS


def test_deadline_set_before_the_wait_applies_to_it(backend_name):
    async def main():
        with Pair() as p:
            d = after(30)
            p.set_deadline(d, "r")
            await netpoll.sleep(0.01)
            t1, _ = await expect_timeout(p)
            return t1 - d

    assert 0 <= run(backend_name, main) < 500 * MS


def test_extending_deadline_keeps_reader_blocked(backend_name):
    async def main():
        with Pair() as p:
            t0 = monotonic_ns()
            p.set_deadline(t0 + 50 * MS, "r")
            r = netpoll.go(expect_timeout(p))
            await netpoll.sleep(0.01)
            new = t0 + 200 * MS
            p.set_deadline(new, "r")
            await netpoll.sleep(0.1)  # past the first deadline
            assert not r.done, "woke at the old deadline"
            assert parked_on(p.pd, "r", r)
            t1, _ = await r
            return t1 - new

    assert 0 <= run(backend_name, main) < 500 * MS


def test_deadline_moved_after_timer_fired_but_before_reader_ran(backend_name):
    # The read timer fires and readies the reader; before the reader runs,
    # another goroutine moves the deadline into the future. The reader must
    # notice that no error is left and wait on (Go's pollWait retry loop).
    async def mover(p, d, new):
        while monotonic_ns() < d + 2 * MS:  # bounded: d is 30 ms away
            pass
        await netpoll.sleep(0)  # the timers fire now; the reader queues behind us
        assert p.pd.deadlines()[0] == -1, "the read timer should have fired"
        p.set_deadline(new, "r")

    async def main():
        with Pair() as p:
            t0 = monotonic_ns()
            d = t0 + 30 * MS
            new = t0 + 150 * MS
            p.set_deadline(d, "r")
            r = netpoll.go(expect_timeout(p))
            await settle()
            m = netpoll.go(mover(p, d, new))
            await m
            await netpoll.sleep(0.05)
            assert not r.done, "the reader returned a timeout for a deadline that was moved"
            t1, _ = await r
            return t1 - new

    assert 0 <= run(backend_name, main) < 500 * MS


def test_shortening_deadline_to_past_wakes_reader(backend_name):
    async def main():
        with Pair() as p:
            p.set_deadline(after(10_000), "r")
            r = netpoll.go(expect_timeout(p))
            await netpoll.sleep(0.02)
            assert parked_on(p.pd, "r", r)
            t0 = monotonic_ns()
            p.set_deadline(-1, "r")
            t1, _ = await r
            return t1 - t0, len(_sched.current().timers)

    took, timers = run(backend_name, main)
    assert took < 200 * MS
    assert timers == 0, "the 10 s read timer should have been stopped"


def test_shortening_deadline_to_near_future(backend_name):
    async def main():
        with Pair() as p:
            p.set_deadline(after(10_000), "r")
            r = netpoll.go(expect_timeout(p))
            await netpoll.sleep(0.01)
            d = after(30)
            p.set_deadline(d, "r")
            t1, _ = await r
            return t1 - d

    assert 0 <= run(backend_name, main) < 500 * MS


def test_clearing_deadline_makes_reads_block_again(backend_name):
    async def main():
        with Pair() as p:
            p.set_deadline(-1, "r")
            await expect_timeout(p)
            assert p.pd.check("r") == 2
            p.set_deadline(0, "r")
            assert p.pd.check("r") == 0
            assert p.pd.deadlines()[0] == 0
            r = netpoll.go(p.read())
            await netpoll.sleep(0.05)
            assert not r.done
            assert parked_on(p.pd, "r", r)
            p.b.send(b"after clear")
            return await r

    assert run(backend_name, main) == b"after clear"


def test_clearing_armed_deadline_stops_its_timer(backend_name):
    async def main():
        with Pair() as p:
            s = _sched.current()
            p.set_deadline(after(30), "r")
            p.set_deadline(after(40), "w")
            assert len(s.timers) == 2
            p.set_deadline(0, "rw")
            assert len(s.timers) == 0
            r = netpoll.go(p.read())
            await netpoll.sleep(0.08)
            assert not r.done, "a cleared deadline fired"
            p.b.send(b"z")
            return await r

    assert run(backend_name, main) == b"z"


def test_expired_deadline_fails_fast_even_with_data_ready(backend_name):
    async def main():
        with Pair() as p:
            p.b.send(b"ready")
            await netpoll.sleep(0.01)
            p.set_deadline(-1, "r")
            with pytest.raises(netpoll.DeadlineExceededError):
                p.pd.prepare("r")
            with pytest.raises(netpoll.DeadlineExceededError):
                await p.pd.wait("r")
            p.set_deadline(0, "r")
            p.pd.prepare("r")
            return await p.read()

    assert run(backend_name, main) == b"ready"


def test_read_deadline_does_not_touch_writer(backend_name):
    async def main():
        with Pair() as p:
            n = p.fill()
            w = netpoll.go(p.write(b"w"))
            r = netpoll.go(expect_timeout(p, "r"))
            await settle()
            assert parked_on(p.pd, "w", w) and parked_on(p.pd, "r", r)
            p.set_deadline(-1, "r")
            await r
            await netpoll.sleep(0.03)
            assert not w.done and parked_on(p.pd, "w", w)
            assert p.pd.check("w") == 0
            got = 0
            for _ in range(1000):
                got += len(drain(p.b))
                if w.done:
                    break
                await netpoll.sleep(0.001)
            await w
            return got + len(drain(p.b)) == n + 1

    assert run(backend_name, main)


def test_write_deadline_does_not_touch_reader(backend_name):
    async def main():
        with Pair() as p:
            p.fill()
            r = netpoll.go(p.read())
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            assert parked_on(p.pd, "w", w) and parked_on(p.pd, "r", r)
            p.set_deadline(after(20), "w")
            _, err = await w
            assert isinstance(err, netpoll.DeadlineExceededError)
            await netpoll.sleep(0.03)
            assert not r.done and parked_on(p.pd, "r", r)
            assert p.pd.check("r") == 0
            with pytest.raises(netpoll.DeadlineExceededError):
                await p.pd.wait("w")
            p.b.send(b"still reading")
            return await r

    assert run(backend_name, main) == b"still reading"


@pytest.mark.parametrize("how", ["rw", "r-then-w", "w-then-r"])
def test_equal_read_write_deadline_fires_both(backend_name, how):
    async def main():
        with Pair() as p:
            p.fill()
            r = netpoll.go(expect_timeout(p, "r"))
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            assert parked_on(p.pd, "r", r) and parked_on(p.pd, "w", w)
            d = after(40)
            if how == "rw":
                p.set_deadline(d, "rw")
            else:
                for m in how.split("-then-"):
                    p.set_deadline(d, m)
            tr, _ = await r
            tw, _ = await w
            return tr - d, tw - d, p.pd.deadlines()

    lr, lw, dl = run(backend_name, main)
    assert 0 <= lr < 500 * MS
    assert 0 <= lw < 500 * MS
    assert dl == (-1, -1)


def test_equal_deadlines_then_write_moved_later(backend_name):
    async def main():
        with Pair() as p:
            p.fill()
            r = netpoll.go(expect_timeout(p, "r"))
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            d = after(30)
            p.set_deadline(d, "rw")
            dw = after(120)
            p.set_deadline(dw, "w")
            tr, _ = await r
            assert not w.done, "the write deadline was moved, the writer must wait on"
            tw, _ = await w
            return tr - d, tw - dw

    lr, lw = run(backend_name, main)
    assert 0 <= lr < 500 * MS
    assert 0 <= lw < 500 * MS


def test_read_and_write_deadlines_fire_at_their_own_times(backend_name):
    async def main():
        with Pair() as p:
            p.fill()
            r = netpoll.go(expect_timeout(p, "r"))
            w = netpoll.go(expect_timeout(p, "w"))
            await settle()
            dr, dw = after(80), after(20)
            p.set_deadline(dr, "r")
            p.set_deadline(dw, "w")
            tw, _ = await w
            assert not r.done
            tr, _ = await r
            return tr - dr, tw - dw

    lr, lw = run(backend_name, main)
    assert 0 <= lr < 500 * MS
    assert 0 <= lw < 500 * MS


def test_deadline_on_closed_descriptor_is_ignored(backend_name):
    async def main():
        with Pair() as p:
            p.evict()
            assert p.pd.set_deadline(after(10), "r") == []
            assert p.pd.set_deadline(-1, "rw") == []
            assert len(_sched.current().timers) == 0
            assert p.pd.check("r") == 1
        return "ok"

    assert run(backend_name, main) == "ok"


# ---------------------------------------------------------------------------
# Close and descriptor reuse
# ---------------------------------------------------------------------------


def test_close_takes_precedence_over_expired_deadline(backend_name):
    async def main():
        with Pair() as p:
            p.set_deadline(-1, "rw")
            p.evict()
            with pytest.raises(netpoll.ClosedError):
                await p.pd.wait("r")
            with pytest.raises(netpoll.ClosedError):
                await p.pd.wait("w")
        return "ok"

    assert run(backend_name, main) == "ok"


def test_old_deadline_does_nothing_after_close_and_fd_reuse(backend_name):
    async def main():
        s = _sched.current()
        p1 = Pair()
        fd, pd1, seq1 = p1.a.fileno(), p1.pd, p1.pd.fdseq
        p1.set_deadline(after(30), "rw")
        p1.close()
        with Pair() as p2:
            if p2.a.fileno() != fd:
                pytest.skip("the kernel did not hand out the same fd number")
            assert p2.pd.check("r") == 0 and p2.pd.deadlines() == (0, 0)
            if p2.pd is pd1:
                assert p2.pd.fdseq != seq1
            r = netpoll.go(p2.read())
            await netpoll.sleep(0.1)  # well past the old deadline
            assert not r.done, "a timer of the old descriptor woke the new one's reader"
            assert parked_on(p2.pd, "r", r)
            assert len(s.timers) == 0
            p2.b.send(b"new")
            return await r

    assert run(backend_name, main) == b"new"
