"""Helpers for netpoll's tests, one package.

    from support import run, fill, drain, read_full, socket_pair, MS, after
    from support.net import stream_pair, fill_conn      # net-layer conns
    from support.runtime import Pair, parked_on        # pds of the running runtime
    from support.conformance import Kit, Waiter, ...   # backends driven directly
    from support.proc import readline, import_bench    # child processes, bench/ scripts

``core`` holds what every layer uses; the rest is a module per layer.
"""

from .conformance import Kit
from .core import (FD_DIR, MS, SCAN_GAP, SHORT, SLACK, after, describe_fd, drain, fd_count, fill,
                   listed_fds, open_fds, read_all, read_full, run, scanned_fds, socket_pair)
from .guards import shadowed_tests
from .proc import import_bench, readline

__all__ = ["FD_DIR", "MS", "SCAN_GAP", "SHORT", "SLACK", "Kit", "after", "describe_fd", "drain", "fd_count",
           "fill", "import_bench", "listed_fds", "open_fds", "read_all", "read_full", "readline", "run",
           "scanned_fds", "shadowed_tests", "socket_pair"]
