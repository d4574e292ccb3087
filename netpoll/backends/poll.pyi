"""netpoll backend: poll(2) (POSIX), level-triggered with netpollarm."""

from typing import ClassVar, Literal

from netpoll._netpoll import Backend

class PollBackend(Backend):
    name: ClassVar[Literal["poll"]]
    edge_triggered: ClassVar[Literal[False]]
    needs_arm: ClassVar[Literal[True]]
    max_fd: ClassVar[None]
    # The protocol's methods are Backend's (netpoll._netpoll).
