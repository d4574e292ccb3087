"""Fixtures for the goroutine runtime tests.

Every test takes ``backend_name`` and runs under each backend: the one
NETPOLL_BACKEND names, or every backend available here. When the suite-wide
conftest (tests/conftest.py) provides ``backend_name`` that one is used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

try:
    import netpoll  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    import netpoll  # noqa: F401


def _suite_provides_backend_name() -> bool:
    top = Path(__file__).resolve().parent.parent / "conftest.py"
    try:
        return "def backend_name" in top.read_text()
    except OSError:
        return False


def runtime_backends() -> list[str]:
    if os.environ.get("NETPOLL_BACKEND", "").strip():
        return [netpoll.BACKEND]
    return netpoll.available_backends()


if not _suite_provides_backend_name():

    @pytest.fixture(params=runtime_backends())
    def backend_name(request: pytest.FixtureRequest) -> str:
        """The backend this test runs under."""
        return request.param
