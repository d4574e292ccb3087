"""Go's time package channels: after, Timer, Ticker.

Each is a callback on the runtime's timer heap (``_sched.RuntimeTimer``), the
heap behind sleep and I/O deadlines, so 100,000 pending timers cost a heap
entry and a few small objects each. The callback runs on the runtime's
thread and sends ``netpoll.now()`` on a channel of capacity 1 without ever
blocking. As in Go 1.23, a value that was not received is dropped by
``stop`` and ``reset``: after either returns, no stale value is received.
"""

from __future__ import annotations

import math
import time
from numbers import Real
from typing import Any

from netpoll._sched import RuntimeTimer
from netpoll.sync import Chan

__all__ = ["after", "Timer", "Ticker"]


def _seconds(what: str, seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, Real):
        raise TypeError(f"{what}: seconds must be a number, not {seconds!r}")
    d = float(seconds)
    if math.isnan(d):
        raise ValueError(f"{what}: seconds is NaN")
    return d


class Timer:
    """Sends ``netpoll.now()`` on ``c`` once, ``seconds`` from now."""

    __slots__ = ("c", "_t")

    def __init__(self, seconds: float) -> None:
        d = _seconds("Timer", seconds)
        self.c: Chan[float] = Chan(1)
        self._t = RuntimeTimer(self._fire)
        self._t.start(d)

    def _fire(self) -> None:
        self.c._offer(time.monotonic())

    def stop(self) -> bool:
        """Stop the timer. True when it had not fired yet or its value was
        still unreceived (Go 1.23: that value is dropped)."""
        pending = self._t.stop()
        return self.c._drain() or pending

    def reset(self, seconds: float) -> bool:
        """Fire ``seconds`` from now instead; returns what ``stop`` would."""
        d = _seconds("Timer.reset", seconds)
        was = self.stop()
        self._t.start(d)
        return was


class Ticker:
    """Sends ``netpoll.now()`` on ``c`` every ``seconds``; a receiver too
    slow for the ticks gets one value and the others are dropped (as Go)."""

    __slots__ = ("c", "_t", "_period", "_next")

    def __init__(self, seconds: float) -> None:
        d = _seconds("Ticker", seconds)
        if d <= 0:
            raise ValueError(f"Ticker: non-positive interval {seconds!r}")
        self.c: Chan[float] = Chan(1)
        self._period = d
        self._next = time.monotonic() + d
        self._t = RuntimeTimer(self._tick)
        self._t.start(d)

    def _tick(self) -> None:
        now = time.monotonic()
        self.c._offer(now)
        # Ticks keep to the original schedule; missed ones are skipped.
        self._next += self._period
        if self._next <= now:
            self._next = now + self._period
        self._t.start(self._next - now)

    def stop(self) -> None:
        """No more ticks; an unreceived one is dropped."""
        self._t.stop()
        self.c._drain()

    def reset(self, seconds: float) -> None:
        """Stop, then tick every ``seconds`` from now."""
        d = _seconds("Ticker.reset", seconds)
        if d <= 0:
            raise ValueError(f"Ticker.reset: non-positive interval {seconds!r}")
        self.stop()
        self._period = d
        self._next = time.monotonic() + d
        self._t.start(d)


def after(seconds: float) -> Chan[float]:
    """A channel that receives ``netpoll.now()`` once, ``seconds`` from now."""
    return Timer(seconds).c
