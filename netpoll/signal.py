"""Go's os/signal for goroutines: signals delivered on channels.

``notify(ch, signal.SIGTERM)`` makes every SIGTERM a non-blocking send of the
``signal.Signals`` value on ``ch`` (a full channel drops it, as in Go: give
it capacity 1 or more). ``stop(ch)`` ends that, and once no channel wants a
signal its previous handler is back. ``notify_context`` gives a context
cancelled by the first of the signals.

The handler netpoll installs only posts to the runtime that asked
(``call_soon_threadsafe``: the injection queue and ``netpollbreak``), and
the runtime points ``signal.set_wakeup_fd`` at its poller, so a signal wakes
a blocked runtime whichever thread the kernel delivered it to. While a
registration lasts it holds its runtime (``rt.hold()``): a goroutine waiting
for a signal is not a deadlock. When run() ends, the registrations of its
runtime end too. Python installs handlers from the main thread only, so
these calls work in a runtime that runs there.
"""

from __future__ import annotations

import signal as _signal
from typing import Any, Callable, Optional

from netpoll import _sched, context as _context
from netpoll.sync import Chan

__all__ = ["notify", "stop", "notify_context"]


class _Sub:
    __slots__ = ("rt", "fn", "sigs", "hold")

    def __init__(self, rt: Any, fn: Callable[[Any], None]) -> None:
        self.rt = rt
        self.fn = fn
        self.sigs: set[int] = set()
        self.hold = rt.hold()


_subs: dict[Any, _Sub] = {}               # channel (or notify_context key) -> subscription
_wanted: dict[int, dict[Any, _Sub]] = {}  # signal -> the subscriptions that want it
_saved: dict[int, Any] = {}               # signal -> the handler before ours


def _handle(signum: int, frame: Any) -> None:
    sig = _signal.Signals(signum)
    for sub in list(_wanted.get(signum, {}).values()):
        try:
            sub.rt.call_soon_threadsafe(sub.fn, sig)
        except RuntimeError:
            pass  # its runtime has just ended; at_exit unsubscribes it


def _check(signals: tuple[Any, ...], what: str) -> list[int]:
    if not signals:
        raise ValueError(f"{what}: name at least one signal")
    out = []
    for s in signals:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"{what}: {s!r} is not a signal number")
        if s in (_signal.SIGKILL, _signal.SIGSTOP):
            raise ValueError(f"{what}: {_signal.Signals(s).name} cannot be caught")
        if s not in _signal.valid_signals():
            raise ValueError(f"{what}: {s!r} is not a valid signal")
        out.append(int(s))
    return out


def _subscribe(key: Any, fn: Callable[[Any], None], signals: tuple[Any, ...], what: str) -> None:
    sigs = _check(signals, what)
    rt = _sched.current()
    sub = _subs.get(key)
    if sub is not None and sub.rt is not rt:
        raise RuntimeError(f"{what}: this channel is already notified for another runtime")
    for s in sigs:
        if s not in _wanted:
            try:
                _saved[s] = _signal.signal(s, _handle)
            except ValueError as e:
                raise RuntimeError(f"{what}: {e} (run the runtime in the main thread)") from None
            _wanted[s] = {}
    if sub is None:
        sub = _subs[key] = _Sub(rt, fn)
        rt.at_exit(lambda: _unsubscribe(key, sub))
    for s in sigs:
        _wanted[s][key] = sub
        sub.sigs.add(s)


def _unsubscribe(key: Any, sub: Optional[_Sub] = None) -> None:
    cur = _subs.get(key)
    if cur is None or (sub is not None and cur is not sub):
        return
    del _subs[key]
    for s in cur.sigs:
        w = _wanted.get(s)
        if w is None:
            continue
        w.pop(key, None)
        if not w:
            del _wanted[s]
            _signal.signal(s, _saved.pop(s))
    cur.hold.release()


def notify(ch: Chan[Any], *signals: int) -> None:
    """Send each of ``signals`` on ``ch`` when it arrives, without blocking."""
    if not isinstance(ch, Chan):
        raise TypeError(f"notify: {ch!r} is not a netpoll.Chan")
    _subscribe(ch, ch._offer, signals, "notify")


def stop(ch: Chan[Any]) -> None:
    """Stop sending signals on ``ch``; previous handlers come back."""
    _unsubscribe(ch)


def notify_context(parent: _context.Context, *signals: int) -> tuple[_context.Context, Callable[[], None]]:
    """A child of ``parent`` cancelled when one of ``signals`` arrives, and
    ``stop``, which ends the registration and cancels the context."""
    ctx, cancel = _context.with_cancel(parent)
    key = object()
    _subscribe(key, lambda sig: cancel(), signals, "notify_context")

    def stop_() -> None:
        _unsubscribe(key)
        cancel()

    return ctx, stop_
