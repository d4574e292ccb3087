"""The backend table: the only module that names the backends.

Preference order is epoll (Linux), kqueue (macOS, BSD), poll, select. A
backend is available when its module was built for this platform *and* a
probe (create a poller, close it) succeeds, so a kernel call forbidden at run
time (seccomp, a missing syscall) makes it unavailable rather than broken.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Optional

from netpoll.errors import BackendError

# (name, module, class), best first.
TABLE = (
    ("epoll", "netpoll.backends.epoll", "EpollBackend"),
    ("kqueue", "netpoll.backends.kqueue", "KqueueBackend"),
    ("poll", "netpoll.backends.poll", "PollBackend"),
    ("select", "netpoll.backends.select", "SelectBackend"),
)

ENV = "NETPOLL_BACKEND"


@dataclass(frozen=True)
class BackendInfo:
    name: str
    cls: Optional[type]
    reason: Optional[str]  # why it is unavailable; None when available

    @property
    def available(self) -> bool:
        return self.reason is None


def _probe(name: str, module: str, clsname: str) -> BackendInfo:
    try:
        cls = getattr(importlib.import_module(module), clsname)
    except ImportError as e:
        return BackendInfo(name, None, f"not built for this platform ({e})")
    try:
        cls().close()
    except OSError as e:
        return BackendInfo(name, cls, f"probe failed: {e}")
    return BackendInfo(name, cls, None)


_infos: Optional[dict[str, BackendInfo]] = None


def backend_infos() -> dict[str, BackendInfo]:
    """Every backend in the table, in preference order, probed once."""
    global _infos
    if _infos is None:
        _infos = {name: _probe(name, mod, cls) for name, mod, cls in TABLE}
    return _infos


def available_backends() -> list[str]:
    """The usable backends here, best first."""
    return [name for name, info in backend_infos().items() if info.available]


def resolve(spec: Optional[str], source: str = ENV) -> str:
    """The backend a spec names: one name, or an ordered fallback list "a,b".

    An empty spec means the best available. Unknown names, and lists of which
    nothing is available, raise BackendError naming ``source``, the value and
    what is available; nothing falls back to a backend the user did not list.
    """
    infos = backend_infos()
    avail = available_backends()
    if spec is None or not spec.strip():
        if not avail:
            raise BackendError("netpoll: no backend is available on this platform")
        return avail[0]
    names = [n.strip() for n in spec.split(",")]
    unknown = [n for n in names if n not in infos]
    if unknown:
        raise BackendError(
            f"{source}={spec!r}: unknown backend {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(infos)}; available here: {', '.join(avail) or 'none'}"
        )
    for n in names:
        if infos[n].available:
            return n
    why = "; ".join(f"{n}: {infos[n].reason}" for n in names)
    raise BackendError(
        f"{source}={spec!r}: no listed backend is available ({why}); "
        f"available here: {', '.join(avail) or 'none'}"
    )


def backend_class(name: str) -> type:
    """The class of an available backend."""
    info = backend_infos().get(name)
    if info is None or not info.available:
        resolve(name, "backend")  # raises, naming what is available
    cls = backend_infos()[name].cls
    assert cls is not None
    return cls


def chosen_at_import() -> str:
    return resolve(os.environ.get(ENV))
