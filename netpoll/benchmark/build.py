"""Compile the load generator and the Go echo server once, into a cache directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("NETPOLL_CACHE")
    if base:
        d = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        d = Path(xdg) / "netpoll" if xdg else Path.home() / ".cache" / "netpoll"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _install(tmp: Path, target: Path) -> Path:
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)  # atomic: a concurrent build never sees half a file
    return target


def c_compiler() -> Optional[str]:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc.split()[0]):
            return cc
    return None


def loadgen() -> Path:
    """The load generator's binary, compiled from loadgen.c on first use."""
    src = (HERE / "loadgen.c").read_bytes()
    cc = c_compiler()
    if cc is None:
        raise BuildError("the benchmark's load generator needs a C compiler (cc, gcc or clang) on PATH")
    target = cache_dir() / f"loadgen-{_digest(src, cc.encode())}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        out = Path(tmp) / "loadgen"
        cmd = cc.split() + ["-O2", "-o", str(out), str(HERE / "loadgen.c")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"compiling the load generator failed ({' '.join(cmd)}):\n{r.stderr}")
        return _install(out, target)


GO_ECHO = r'''package main

// Echo server: one goroutine per connection, a 64 KiB buffer each.
import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func handle(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("READY %s epoll (Go runtime netpoller)\n", ln.Addr())
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
		<-ch
		ln.Close()
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if opErr, ok := err.(*net.OpError); ok && opErr.Err != nil {
				if se, ok := opErr.Err.(*os.SyscallError); ok && (se.Err == syscall.EMFILE || se.Err == syscall.ENFILE) {
					time.Sleep(10 * time.Millisecond)
					continue
				}
			}
			return
		}
		go handle(c)
	}
}
'''


def go_tool() -> Optional[str]:
    return shutil.which("go")


def go_echo() -> Path:
    """The Go echo server's binary: the source above, written to a temporary
    directory and built there with ``go build``; the binary is cached."""
    go = go_tool()
    if go is None:
        raise BuildError("go is not on PATH")
    version = subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip()
    target = cache_dir() / f"go-echo-{_digest(GO_ECHO.encode(), version.encode())}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="netpoll-go-echo-") as tmp:
        t = Path(tmp)
        (t / "main.go").write_text(GO_ECHO)
        (t / "go.mod").write_text("module echo\n\ngo 1.16\n")
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        env.setdefault("GOCACHE", str(cache_dir() / "go-build"))
        r = subprocess.run([go, "build", "-o", "echo", "."], cwd=t, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise BuildError(f"go build failed:\n{r.stderr}")
        tmpbin = cache_dir() / f".go-echo-{os.getpid()}"
        shutil.copyfile(t / "echo", tmpbin)
        return _install(tmpbin, target)
