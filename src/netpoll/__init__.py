"""netpoll: Go's network poller, goroutines and net package, for Python."""

from netpoll._table import available_backends, backend_class, chosen_at_import
from netpoll.errors import (BackendError, ClosedError, DeadlineExceededError,
                            DeadlockError, NetpollError, NotPollableError)
from netpoll.runtime import (current_runtime, go, go_threadsafe, now, run,
                             sleep, to_thread)
from netpoll.sync import Chan, ChannelClosed, Event, WaitGroup

__version__ = "0.1.0"

#: The backend chosen at import: the best available, or what NETPOLL_BACKEND names.
BACKEND: str = chosen_at_import()

__all__ = [
    "BACKEND", "available_backends", "backend_class",
    "run", "go", "sleep", "now", "to_thread", "current_runtime", "go_threadsafe",
    "Chan", "ChannelClosed", "Event", "WaitGroup",
    "BackendError", "ClosedError", "DeadlineExceededError", "DeadlockError",
    "NetpollError", "NotPollableError",
]
