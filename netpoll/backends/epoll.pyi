"""netpoll backend: epoll (Linux), edge-triggered."""

from typing import ClassVar, Literal

from netpoll._netpoll import Backend

class EpollBackend(Backend):
    name: ClassVar[Literal["epoll"]]
    edge_triggered: ClassVar[Literal[True]]
    needs_arm: ClassVar[Literal[False]]
    max_fd: ClassVar[None]
    # The protocol's methods are Backend's (netpoll._netpoll).
