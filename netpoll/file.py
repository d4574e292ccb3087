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

    def _wrap_error(self, op: str, err: BaseException) -> BaseException:
        return net.operror(op, self.kind, None, None, err)

    def _set_deadline(self, t: Optional[float], mode: str = "rw") -> None:
        t = net._seconds(t, "deadline")
        try:
            FD._set_deadline(self, t, mode)
        except OSError as e:
            raise net.operror("set", self.kind, None, None, e) from None

    def set_deadline(self, t: Optional[float]) -> None:
        """Read and write deadline: absolute ``netpoll.now()`` seconds (so 0
        is past); None is the only "no deadline"."""
        self._set_deadline(t, "rw")

    def set_read_deadline(self, t: Optional[float]) -> None:
        self._set_deadline(t, "r")

    def set_write_deadline(self, t: Optional[float]) -> None:
        self._set_deadline(t, "w")

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
        state = "closed" if self.closed else f"fd={self._sysfd}"
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


# ---------------------------------------------------------------------------
# sendfile (Go's internal/poll.SendFile, and net's handled=false fallback)
# ---------------------------------------------------------------------------

# Go's maxSendfileSize: the most one sendfile(2) call is asked to copy.
MAX_SENDFILE = 4 << 20
_COPY_BUF = 256 << 10
# sendfile cannot serve this source or this socket: copy instead (Go's
# "handled = false"), but only if nothing was sent yet.
_NOT_HANDLED = {_errno.ENOSYS, _errno.EINVAL, _errno.EOPNOTSUPP, getattr(_errno, "ENOTSUP", _errno.EOPNOTSUPP)}


async def sendfile(conn: FD, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
    """Send ``count`` bytes (None: to EOF) of ``file`` from ``offset`` on
    ``conn``; returns the bytes sent and leaves ``file``'s position after
    them, as ``socket.sendfile`` does.

    sendfile(2) runs in the FD layer's write loop: the write lock is held,
    EAGAIN parks on write readiness, a write deadline or a close ends it as
    it ends ``write``. When the kernel cannot sendfile this pair (ENOSYS,
    EINVAL, EOPNOTSUPP before any byte went), or ``file`` is not a regular
    file (a pipe, a socket, io.BytesIO), the bytes are read and written
    instead.
    """
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"sendfile: offset must be an int >= 0, not {offset!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"sendfile: count must be None or an int >= 0, not {count!r}")
    if not (callable(getattr(file, "readinto", None)) or callable(getattr(file, "fileno", None))):
        raise TypeError(f"sendfile needs a binary file object, not {type(file).__name__}")
    try:
        in_fd = file.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        in_fd = None
    if in_fd is not None and not _stat.S_ISREG(os.fstat(in_fd).st_mode):
        in_fd = None  # a pipe or socket source: read it in order, as socket.sendfile does
    sent, handled = 0, False
    if in_fd is not None and count != 0:
        sent, handled = await _sendfile(conn, in_fd, offset, count)
    if not handled and count != 0:
        sent += await _copy(conn, file, in_fd, offset + sent, None if count is None else count - sent)
    if _seekable(file):
        file.seek(offset + sent)
    return sent


def _seekable(file: Any) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


async def _sendfile(conn: FD, in_fd: int, offset: int, count: Optional[int]) -> tuple[int, bool]:
    # step() runs under the write lock and is called again after each
    # EAGAIN (BlockingIOError) once the socket is writable; st carries the
    # progress across those calls.
    st = {"off": offset, "sent": 0, "handled": True}

    def step() -> None:
        out = conn._sysfd
        while count is None or st["sent"] < count:
            want = MAX_SENDFILE if count is None else min(MAX_SENDFILE, count - st["sent"])
            try:
                n = os.sendfile(out, in_fd, st["off"], want)
            except BlockingIOError:
                raise
            except OSError as e:
                if st["sent"] == 0 and e.errno in _NOT_HANDLED:
                    st["handled"] = False
                    return
                raise
            if n == 0:  # the file ended
                return
            st["off"] += n
            st["sent"] += n

    await conn._retry(False, "sendfile", (InterruptedError,), step)
    return st["sent"], bool(st["handled"])


async def _copy(conn: FD, file: Any, in_fd: Optional[int], offset: int, count: Optional[int]) -> int:
    # The read+write fallback; a regular file's read does not park (it
    # never would on any poller), as in Go.
    buf = bytearray(_COPY_BUF if count is None else max(1, min(_COPY_BUF, count)))
    view = memoryview(buf)
    total = 0
    if in_fd is None and (offset or _seekable(file)):
        file.seek(offset)  # an unseekable source with an offset: its own error
    while count is None or total < count:
        want = len(buf) if count is None else min(len(buf), count - total)
        if in_fd is not None and hasattr(os, "preadv"):
            n = os.preadv(in_fd, [view[:want]], offset + total)
        else:
            if in_fd is not None:
                file.seek(offset + total)
            n = file.readinto(view[:want]) or 0
        if n == 0:
            break
        await conn.write(view[:n])
        total += n
    return total
