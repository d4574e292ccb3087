"""netpoll backend: kqueue (macOS, the BSDs; Linux through the test shim), edge-triggered."""

from typing import ClassVar, Literal

from netpoll._netpoll import Backend

class KqueueBackend(Backend):
    name: ClassVar[Literal["kqueue"]]
    edge_triggered: ClassVar[Literal[True]]
    needs_arm: ClassVar[Literal[False]]
    max_fd: ClassVar[None]
    # The protocol's methods are Backend's (netpoll._netpoll).
