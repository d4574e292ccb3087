"""netpoll: Go's network poller, goroutines and net package, for Python."""

import os as _os
import sys as _sys

try:
    import netpoll._netpoll  # noqa: F401  (the compiled core)
except ImportError as _e:
    if _e.name == "netpoll._netpoll" and _os.path.exists(
            _os.path.join(_os.path.dirname(__file__), "_netpoll.pyx")):
        raise ImportError(
            "netpoll is being imported from its source tree, whose compiled modules are not "
            "built. Either build them in place (python setup.py build_ext --inplace), or "
            "install netpoll (pip install .) and use the `netpoll` command or run Python "
            "from another directory.") from None
    raise

from netpoll._table import available_backends, backend_class, chosen_at_import
from netpoll.errors import (BackendError, ClosedError, DeadlineExceededError,
                            DeadlockError, NetpollError, NotPollableError)
from netpoll.runtime import current_runtime, go, now, run, sleep, to_thread
from netpoll.sync import Chan, ChannelClosed, Event, WaitGroup
from netpoll.file import File, open_file, pipe

__version__ = "0.1.0"

#: The backend chosen at import: the best available, or what NETPOLL_BACKEND names.
try:
    BACKEND: str = chosen_at_import()
except BackendError as _e:
    # `python -m netpoll` and the `netpoll` script import this package before
    # the command line runs: there a bad NETPOLL_BACKEND is a usage error (one
    # line, exit status 2), while a program that imports netpoll gets the
    # typed exception. While -m locates its module, sys.argv[0] is "-m".
    if _sys.argv[:1] == ["-m"] or _os.path.basename(_sys.argv[0] if _sys.argv else "") == "netpoll":
        print(f"netpoll: {_e}", file=_sys.stderr)
        raise SystemExit(2) from None
    raise

__all__ = [
    "BACKEND", "available_backends", "backend_class",
    "run", "go", "sleep", "now", "to_thread", "current_runtime",
    "Chan", "ChannelClosed", "Event", "WaitGroup",
    "File", "pipe", "open_file",
    "BackendError", "ClosedError", "DeadlineExceededError", "DeadlockError",
    "NetpollError", "NotPollableError",
]
