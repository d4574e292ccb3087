"""Run CPython's own asyncio tests (the interpreter's test.test_asyncio) on netpoll.aio.

    python tests/aio/cpython_suite.py [--backend NAME] [--timeout S] [-k TEXT] [--test ID]... MODULE...

Every test case class of a module is run with its loop made by
``netpoll.aio.new_event_loop``: the hooks the loop-agnostic mixins take
(``create_event_loop``, ``new_loop``) are overridden in a subclass, and the
default policy's loop factory is the netpoll loop for the whole run, so
``asyncio.new_event_loop()``, ``asyncio.run()`` and IsolatedAsyncioTestCase
build one too. Classes that only repeat a mixin for another selector
(Kqueue*, EPoll*, Poll*) or another platform (Proactor*, Windows*) are left
out, and so are the policy-plumbing classes (EXCLUDED). A test that never
built a netpoll loop (mock loops, handle and policy checks) is counted as
not applicable, not as a pass.

The per-test result goes to stdout as one JSON line each; the summary is the
last line. A test that runs past --timeout is recorded as "hang" and the run
stops there (a hung loop cannot be unwound from outside).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import json
import os
import re
import sys
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

MODULES = ("test_events", "test_streams", "test_sock_lowlevel", "test_server",
           "test_sslproto", "test_subprocess",
           # beyond the six the loop must pass: the same machinery, other angles
           "test_sendfile", "test_ssl", "test_buffered_proto", "test_unix_events",
           "test_tasks", "test_taskgroups", "test_timeouts", "test_runners",
           "test_waitfor", "test_threads", "test_queues", "test_locks")

# Same mixin on another selector or platform: the Select* variant runs it.
_DUPLICATE = re.compile(r"^(Kqueue|EPoll|Poll|Proactor|Windows)")

# Classes that test asyncio's policy and get_event_loop plumbing, which this
# run replaces on purpose.
EXCLUDED = {"PolicyTests", "TestPyGetEventLoop", "TestCGetEventLoop", "GenericWatcherTests"}

_built = [0]


def _factory(backend: str):
    from netpoll import aio

    def new_loop(*_args):
        _built[0] += 1
        return aio.new_event_loop(backend=backend)
    return new_loop


def _install(backend: str) -> None:
    factory = _factory(backend)
    policy_cls = type(asyncio.get_event_loop_policy())
    # Every default policy, also one made after a test resets it with
    # set_event_loop_policy(None), builds netpoll loops.
    policy_cls._loop_factory = staticmethod(factory)
    asyncio.set_event_loop_policy(None)


def _runners_loop(factory):
    # test_runners' BaseTest.new_loop marks the loop it hands out so that a
    # test can see shutdown_asyncgens ran; the netpoll loop gets the same mark.
    def new_loop():
        loop = factory()
        loop.shutdown_ag_run = False
        real = loop.shutdown_asyncgens

        async def shutdown_asyncgens():
            await real()
            loop.shutdown_ag_run = True
        loop.shutdown_asyncgens = shutdown_asyncgens
        return loop
    return new_loop


def _cases(modname: str, backend: str) -> unittest.TestSuite:
    mod = importlib.import_module(f"test.test_asyncio.{modname}")
    factory = _factory(backend)
    if modname == "test_runners":
        factory = _runners_loop(factory)
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for name, cls in sorted(vars(mod).items()):
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            continue
        if cls.__module__ != mod.__name__ or _DUPLICATE.match(name) or name in EXCLUDED:
            continue
        ns = {}
        for hook in ("create_event_loop", "new_loop"):
            if hasattr(cls, hook):
                ns[hook] = lambda self, _f=factory: _f()
        sub = type(f"Netpoll{name}", (cls,), ns)
        sub.__module__ = mod.__name__
        suite.addTests(loader.loadTestsFromTestCase(sub))
    return suite


class _Result(unittest.TestResult):
    def __init__(self, module: str, out, timeout: float) -> None:
        super().__init__()
        self.module = module
        self.out = out
        self.timeout = timeout
        self.counts = {k: 0 for k in ("pass", "fail", "skip", "n/a")}
        self._outcome = None
        self._watch = None
        self._t0 = time.monotonic()
        self._before = _built[0]

    def startTest(self, test) -> None:
        super().startTest(test)
        self._outcome = ("pass", "")
        self._before = _built[0]
        self._t0 = time.monotonic()
        tid = _tid(test)

        def hung() -> None:
            self._emit(tid, "hang", f"still running after {self.timeout:.0f} s")
            self.out.flush()
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            os._exit(3)
        self._watch = threading.Timer(self.timeout, hung)
        self._watch.daemon = True
        self._watch.start()

    def _why(self, err) -> str:
        exc = err[1]
        lines = traceback.format_exception_only(type(exc), exc)
        return lines[-1].strip()[:300] if lines else repr(exc)

    def addFailure(self, test, err) -> None:
        super().addFailure(test, err)
        self._outcome = ("fail", self._why(err))

    def addError(self, test, err) -> None:
        super().addError(test, err)
        self._outcome = ("fail", self._why(err))

    def addSubTest(self, test, subtest, err) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._outcome = ("fail", f"{subtest._subDescription()}: {self._why(err)}")

    def addSkip(self, test, reason) -> None:
        super().addSkip(test, reason)
        self._outcome = ("skip", reason)

    def addExpectedFailure(self, test, err) -> None:
        super().addExpectedFailure(test, err)
        self._outcome = ("pass", "expected failure")

    def addUnexpectedSuccess(self, test) -> None:
        super().addUnexpectedSuccess(test)
        self._outcome = ("fail", "unexpected success")

    def stopTest(self, test) -> None:
        # Python 3.12+ stops a test of a skipped class without starting it.
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        status, why = self._outcome or ("skip", "not started")
        self._outcome = None
        if status == "pass" and _built[0] == self._before:
            status, why = "n/a", "built no netpoll loop"
        self._emit(_tid(test), status, why)
        super().stopTest(test)

    def _emit(self, tid: str, status: str, why: str) -> None:
        if status in self.counts:
            self.counts[status] += 1
        self.out.write(json.dumps({"module": self.module, "test": tid, "status": status,
                                   "why": why, "secs": round(time.monotonic() - self._t0, 2)}) + "\n")
        self.out.flush()


def _tid(test) -> str:
    """A test's id as reported: ``test_events.SelectEventLoopTests.test_foo``."""
    return test.id().replace("test.test_asyncio.", "").replace(".Netpoll", ".")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modules", nargs="*", default=list(MODULES))
    p.add_argument("--backend", default=None)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("-k", dest="pattern", default=None, help="only tests whose id contains this")
    p.add_argument("--test", dest="only", action="append", default=[],
                   help="only this test (its id as reported; repeatable)")
    a = p.parse_args(argv)
    if ROOT not in sys.path and not _installed():
        sys.path.insert(0, ROOT)
    import netpoll

    backend = a.backend or netpoll.BACKEND
    _install(backend)
    out = sys.stdout
    summary = {}
    for m in a.modules:
        suite = _cases(m, backend)
        suite = select(suite, a.pattern, a.only)
        result = _Result(m, out, a.timeout)
        suite.run(result)
        summary[m] = result.counts
    out.write(json.dumps({"backend": backend, "summary": summary}) + "\n")
    return 0


def select(suite: unittest.TestSuite, pattern: str | None, only: list[str]) -> unittest.TestSuite:
    """The tests whose id contains ``pattern`` and, if ``only`` is not
    empty, whose reported id is one of them."""
    return unittest.TestSuite(t for t in _flatten(suite)
                              if (pattern is None or pattern in t.id()) and (not only or _tid(t) in only))


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def _installed() -> bool:
    try:
        import netpoll  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
