"""Fixtures for the goroutine runtime tests.

Every test takes ``backend_name`` (tests/conftest.py) and runs under each
backend: the one NETPOLL_BACKEND names, or every backend available here.
"""
