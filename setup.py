"""Build the core and the backends this platform has.

epoll is built on Linux, kqueue on macOS and the BSDs, poll and select on
every POSIX system. NETPOLL_KQUEUE_SHIM=1 also builds kqueue on Linux against
the kqueue-over-epoll shim in tests/kqueue_shim (for `tox -e kqueue`).
NETPOLL_PORTABLE=1 forces the fallbacks of systems without accept4, pipe2 and
eventfd (accept, pipe, fcntl; see netpoll/_syscall.pxd), so that the paths macOS
takes are built and tested on Linux. NETPOLL_SANITIZE=1 builds with
AddressSanitizer and UBSan;
NETPOLL_ANNOTATE=1 writes Cython's HTML annotation next to the sources.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.environ.get("NETPOLL_KQUEUE_SHIM") == "1"
PORTABLE = os.environ.get("NETPOLL_PORTABLE") == "1"
BSD = sys.platform == "darwin" or "bsd" in sys.platform or sys.platform.startswith("dragonfly")

cflags = ["-O2"]
lflags = []
if os.environ.get("NETPOLL_SANITIZE") == "1":
    cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
    lflags = ["-fsanitize=address,undefined"]


macros = [("NETPOLL_PORTABLE", "1")] if PORTABLE else []


def ext(name, source, **kw):
    return Extension(name, [source], extra_compile_args=cflags, extra_link_args=lflags,
                     define_macros=macros, **kw)


extensions = [
    ext("netpoll._netpoll", "netpoll/_netpoll.pyx"),
    ext("netpoll._syscall", "netpoll/_syscall.pyx"),
    ext("netpoll._sched", "netpoll/_sched.pyx"),
    ext("netpoll._fd", "netpoll/_fd.pyx"),
    ext("netpoll.aio._core", "netpoll/aio/_core.pyx"),
    ext("netpoll.aio._transport", "netpoll/aio/_transport.pyx"),
    ext("netpoll.backends.poll", "backends/poll.pyx"),
    ext("netpoll.backends.select", "backends/select.pyx"),
]
if sys.platform.startswith("linux"):
    extensions.append(ext("netpoll.backends.epoll", "backends/epoll.pyx"))
if BSD:
    extensions.append(ext("netpoll.backends.kqueue", "backends/kqueue.pyx"))
elif SHIM:
    extensions.append(
        Extension(
            "netpoll.backends.kqueue",
            ["backends/kqueue.pyx", "tests/kqueue_shim/kqueue_shim.c"],
            include_dirs=["tests/kqueue_shim"],
            define_macros=[("NETPOLL_KQUEUE_SHIM", "1")] + macros,
            extra_compile_args=cflags,
            extra_link_args=lflags,
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[HERE, os.path.join(HERE, "backends")],
        compiler_directives={"language_level": "3"},
        annotate=os.environ.get("NETPOLL_ANNOTATE") == "1",
    ),
)
