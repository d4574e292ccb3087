"""The echo benchmark behind ``python -m netpoll bench``.

- ``loadgen.c``: the load generator, a single-threaded epoll client in C,
  compiled at first use with the system C compiler into the cache directory
  (``$NETPOLL_CACHE``, else ``$XDG_CACHE_HOME/netpoll``, else
  ``~/.cache/netpoll``);
- ``servers``: the echo servers, each run in its own process
  (``python -m netpoll.benchmark.servers NAME``), and the Go one, whose
  source is written to a temporary directory and built with ``go build``;
- ``runner``: starts the servers, drives them with the load generator in
  alternating rounds, and reports medians and ratios.
"""
