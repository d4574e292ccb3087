"""Every error netpoll raises, in one place, with Go's wording where Go has one."""

from __future__ import annotations

import errno as _errno


class NetpollError(RuntimeError):
    """A broken runtime invariant (Go's ``throw``): never caught, never expected."""


class ClosedError(OSError):
    """An operation on, or blocked on, a closed descriptor (Go's ``net.ErrClosed``)."""

    def __init__(self, msg: str = "use of closed network connection") -> None:
        super().__init__(_errno.EBADF, msg)

    def __str__(self) -> str:
        return self.strerror or ""

    def __reduce__(self):
        return (type(self), (self.strerror,))


class DeadlineExceededError(TimeoutError):
    """An I/O deadline passed (Go's ``os.ErrDeadlineExceeded``)."""

    def __init__(self, msg: str = "i/o timeout") -> None:
        super().__init__(_errno.ETIMEDOUT, msg)

    def __str__(self) -> str:
        return self.strerror or ""

    def __reduce__(self):
        return (type(self), (self.strerror,))


class NotPollableError(OSError):
    """The descriptor cannot be waited on (a regular file, a directory...)."""

    def __init__(self, fd: int, why: str = "not pollable") -> None:
        super().__init__(_errno.EPERM, f"fd {fd}: {why}")
        self.fd = fd
        self.why = why

    def __reduce__(self):
        return (type(self), (self.fd, self.why))

    def __str__(self) -> str:
        return self.strerror or ""


class DeadlockError(RuntimeError):
    """Every goroutine is parked and nothing can wake one."""

    def __init__(self, msg: str = "all goroutines are asleep - deadlock!") -> None:
        super().__init__(msg)


class BackendError(ImportError):
    """``NETPOLL_BACKEND`` (or ``backend=``) names nothing usable here."""
