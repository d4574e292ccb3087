"""Run uvloop's own test suite (from its sdist) on netpoll.aio.

    python tests/aio/uvloop_suite.py --tests DIR [--backend NAME] [--timeout S] MODULE...

DIR is the ``tests`` folder of uvloop's source distribution
(``pip download --no-binary uvloop --no-deps uvloop``), and the installed
uvloop provides its ``_testbase``. uvloop's suite runs each mixin twice,
as ``*_UV_*`` (uvloop) and ``*_AIO_*`` (asyncio) classes; here every asyncio
class gets a netpoll sibling, the same tests with ``new_loop`` making a
netpoll.aio loop. The loop is asyncio's machinery on netpoll's runtime, so
it answers the suite's "is this the asyncio loop" checks with yes (asyncio's
documented behaviour, not uvloop's, is the reference).

Output is cpython_suite's: one JSON line per test, the summary last.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cpython_suite  # noqa: E402

MODULES = ("test_tcp", "test_unix", "test_dns", "test_executors", "test_signals", "test_base",
           # beyond the ones the loop must pass
           "test_sockets", "test_udp", "test_pipes", "test_process", "test_context")


def _cases(modname: str, backend: str) -> unittest.TestSuite:
    from uvloop import _testbase as tb

    mod = importlib.import_module(modname)
    factory = cpython_suite._factory(backend)
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for name, cls in sorted(vars(mod).items()):
        if not (isinstance(cls, type) and issubclass(cls, tb.AIOTestCase)):
            continue
        if cls.__module__ != mod.__name__:
            continue
        ns = {
            "new_loop": lambda self, _f=factory: _f(),
            "is_asyncio_loop": lambda self: True,
        }
        # uvloop's metaclass refuses a test name defined twice in one class
        # hierarchy's namespace; the subclass defines no tests of its own.
        sub = type(cls)(f"Netpoll{name}", (cls,), ns)
        sub.__module__ = mod.__name__
        suite.addTests(loader.loadTestsFromTestCase(sub))
    return suite


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modules", nargs="*", default=list(MODULES))
    p.add_argument("--tests", required=True, help="the tests folder of uvloop's sdist")
    p.add_argument("--backend", default=None)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("-k", dest="pattern", default=None)
    p.add_argument("--test", dest="only", action="append", default=[])
    a = p.parse_args(argv)
    if not cpython_suite._installed():
        sys.path.insert(0, cpython_suite.ROOT)
    import netpoll

    backend = a.backend or netpoll.BACKEND
    # The suite's modules import as top-level names from their folder (not
    # as a package, which would put the sdist's unbuilt uvloop on the path).
    sys.path.insert(0, os.path.abspath(a.tests))
    cpython_suite._install(backend)
    summary = {}
    for m in a.modules:
        suite = _cases(m, backend)
        suite = cpython_suite.select(suite, a.pattern, a.only)
        result = cpython_suite._Result(m, sys.stdout, a.timeout)
        suite.run(result)
        summary[m] = result.counts
        asyncio.set_event_loop_policy(None)
    sys.stdout.write(json.dumps({"backend": backend, "summary": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
