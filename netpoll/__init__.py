"""netpoll: Go's network poller, goroutines and net package, for Python."""

from netpoll._table import available_backends, backend_class, chosen_at_import
from netpoll.errors import (BackendError, ClosedError, DeadlineExceededError,
                            DeadlockError, NetpollError, NotPollableError)

__version__ = "0.1.0"

#: The backend chosen at import: the best available, or what NETPOLL_BACKEND names.
BACKEND: str = chosen_at_import()

__all__ = [
    "BACKEND", "available_backends", "backend_class",
    "BackendError", "ClosedError", "DeadlineExceededError", "DeadlockError",
    "NetpollError", "NotPollableError",
]
