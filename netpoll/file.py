"""Pipes, ttys and other pollable descriptors on the poller (Go's os.File).

``pipe()`` returns a (reader, writer) pair created non-blocking and
close-on-exec, as Go's os.Pipe. ``open_file(fd_or_fileobj)`` puts a
descriptor that already exists on the poller: a pipe, FIFO, tty, character
device or socket. A regular file, directory or block device is always
"ready" to a poller and is refused with ``NotPollableError``, as are
descriptors the kernel poller will not take (epoll's EPERM).

An inherited descriptor's blocking mode is saved, and restored when the
File closes (or when registering it fails): O_NONBLOCK belongs to the open
file description, which a tty shares with the shell that started the
program, and a shell left with a non-blocking terminal breaks.

A File is an FD of the FD layer, as a Conn is: reads and writes park on the
poller, deadlines and close behave as for a Conn, and errors are OpErrors.
"""

from __future__ import annotations

import errno as _errno
import os
import socket as _socket
import stat as _stat
from typing import Any, Callable, Optional, Union

from netpoll import net
from netpoll._fd import FD
from netpoll.errors import NotPollableError

__all__ = ["File", "pipe", "open_file"]


class _Handle:
    """What the FD layer closes (through the hook table): restores the
    blocking mode the descriptor came with, then closes it or its owner."""

    __slots__ = ("fd", "closer", "restore_blocking")

    def __init__(self, fd: int, closer: Optional[Callable[[], None]], restore_blocking: bool) -> None:
        self.fd = fd
        self.closer = closer
        self.restore_blocking = restore_blocking

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            if self.restore_blocking:
                os.set_blocking(fd, True)
        finally:
            if self.closer is not None:
                self.closer()
            else:
                os.close(fd)


class File(FD):
    """A pollable descriptor: ``await read(buf)`` (0 at EOF), ``await
    write(data)`` (all of it), deadlines, ``close()``. Errors are OpErrors
    whose ``op`` is "read" or "write" and whose ``net`` says what the
    descriptor is ("pipe", "fifo", "tty", "chardev", "socket")."""

    name: str
    kind: str

    def _init(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind

    def wrap_error(self, op: str, err: BaseException) -> BaseException:
        return net.operror(op, self.kind, None, None, err)

    def set_deadline(self, t: Optional[float], mode: str = "rw") -> None:  # type: ignore[override]
        """Read and write deadline: absolute ``netpoll.now()`` seconds, None clears."""
        t = net._seconds(t, "deadline")
        try:
            FD.set_deadline(self, t, mode)
        except OSError as e:
            raise net.operror("set", self.kind, None, None, e) from None

    def set_read_deadline(self, t: Optional[float]) -> None:
        self.set_deadline(t, "r")

    def set_write_deadline(self, t: Optional[float]) -> None:
        self.set_deadline(t, "w")

    def close(self) -> None:
        """Close (restoring an inherited descriptor's blocking mode first);
        blocked reads and writes wake with ClosedError. Twice is a no-op."""
        if self.closed:
            return
        try:
            FD.close(self)
        except OSError as e:
            raise net.operror("close", self.kind, None, None, e) from None

    def __enter__(self) -> "File":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.sysfd}"
        return f"<File {self.kind} {self.name!r} {state}>"


def _new_file(fd: int, closer: Optional[Callable[[], None]], restore: bool, stream: bool,
              name: str, kind: str) -> File:
    h = _Handle(fd, closer, restore)
    try:
        f = File(h, stream=stream)
    except BaseException as e:
        # Not registered: the descriptor stays the caller's, as it came.
        if restore:
            os.set_blocking(fd, True)
        if isinstance(e, OSError) and e.errno == _errno.EPERM:
            raise NotPollableError(fd, f"{kind}: the poller refuses it") from None
        raise
    f._init(name, kind)
    return f


def pipe() -> tuple[File, File]:
    """A (reader, writer) pair of Files, non-blocking and close-on-exec."""
    if hasattr(os, "pipe2"):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    else:  # macOS: os.pipe() is close-on-exec already
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
    try:
        reader = _new_file(r, None, False, True, "|0", "pipe")
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    try:
        writer = _new_file(w, None, False, True, "|1", "pipe")
    except BaseException:
        reader.close()
        os.close(w)
        raise
    return reader, writer


def _kind(fd: int, mode: int) -> tuple[str, bool]:
    # (kind, stream). Only pipes and stream sockets are streams for the FD
    # layer, whose "a short read drained it" shortcut they satisfy; a tty in
    # canonical mode returns one line at a time however much is queued.
    if _stat.S_ISFIFO(mode):
        return ("pipe" if _is_anonymous_pipe(fd) else "fifo"), True
    if _stat.S_ISSOCK(mode):
        s = _socket.socket(fileno=os.dup(fd))
        try:
            return "socket", s.type == _socket.SOCK_STREAM
        finally:
            s.close()
    if _stat.S_ISCHR(mode):
        return ("tty" if os.isatty(fd) else "chardev"), False
    return "file", False


def _is_anonymous_pipe(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    except OSError:
        return False


def open_file(f: Union[int, Any], name: Optional[str] = None) -> File:
    """Put a pollable descriptor on the poller; the File owns it from now on.

    ``f`` is a descriptor number or an object with ``fileno()`` (a file
    object, a socket, ``Popen.stdout``); closing the File closes it (through
    the object's own ``close`` when one was given). A regular file,
    directory or block device raises ``NotPollableError`` and is left as it
    was.
    """
    if isinstance(f, bool) or not (isinstance(f, int) or callable(getattr(f, "fileno", None))):
        raise TypeError(f"open_file needs a descriptor number or an object with fileno(), not {type(f).__name__}")
    fd = f if isinstance(f, int) else f.fileno()
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"open_file: not an open descriptor: {fd!r}")
    mode = os.fstat(fd).st_mode
    for test, what in ((_stat.S_ISREG, "regular file"), (_stat.S_ISDIR, "directory"),
                       (_stat.S_ISBLK, "block device")):
        if test(mode):
            raise NotPollableError(fd, f"a {what} is always ready and cannot be polled")
    kind, stream = _kind(fd, mode)
    was_blocking = os.get_blocking(fd)
    if was_blocking:
        os.set_blocking(fd, False)
    closer = None if isinstance(f, int) else f.close
    return _new_file(fd, closer, was_blocking, stream, name if name is not None else
                     str(getattr(f, "name", f"fd {fd}")), kind)
