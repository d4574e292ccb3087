"""netpoll backend: select(2) (POSIX), level-triggered with netpollarm; fds below FD_SETSIZE only."""

from typing import ClassVar, Literal

from netpoll._netpoll import Backend

class SelectBackend(Backend):
    name: ClassVar[Literal["select"]]
    edge_triggered: ClassVar[Literal[False]]
    needs_arm: ClassVar[Literal[True]]
    max_fd: ClassVar[int]
    # The protocol's methods are Backend's (netpoll._netpoll).
