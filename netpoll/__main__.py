"""python -m netpoll: what this machine offers."""

from __future__ import annotations

import argparse
import sys

import netpoll
from netpoll._table import backend_infos


def cmd_info(args: argparse.Namespace) -> int:
    print(f"netpoll {netpoll.__version__} (Python {sys.version.split()[0]}, {sys.platform})")
    print(f"backend: {netpoll.BACKEND}")
    print(f"{'name':8} {'available':9} {'edge':5} {'arm':5} {'max_fd':7} note")
    for name, info in backend_infos().items():
        cls = info.cls
        if cls is None:
            caps = f"{'-':5} {'-':5} {'-':7}"
        else:
            caps = f"{str(cls.edge_triggered).lower():5} {str(cls.needs_arm).lower():5} {str(cls.max_fd or '-'):7}"
        mark = "*" if name == netpoll.BACKEND else ""
        print(f"{name + mark:8} {'yes' if info.available else 'no':9} {caps} {info.reason or ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netpoll", description=__doc__)
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("info", help="version, chosen backend and every backend's availability")
    args = p.parse_args(argv)
    return cmd_info(args)


if __name__ == "__main__":
    sys.exit(main())
