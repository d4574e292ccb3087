"""TCP resets injected by the path (nftables ``reject with tcp reset``, as a
middlebox or a firewall sends them): in the middle of a stream, a read or a
write of the end that gets the RST fails with ConnectionResetError as an
OpError, never with an EOF and never by hanging; during dial's handshake,
the dial fails with ConnectionRefusedError or ConnectionResetError.

The rule sits at the ingress of the peer's namespace and rejects the
victim's own packets, so the RST goes to the victim: a reader's ACKs, a
writer's data, a dialer's SYN draw it.
"""

from __future__ import annotations

import pytest

import netpoll
from netpoll import net

from nfutil import addr, close_all, listen, pair, reject_from, run

SAFETY = 10.0  # a deadline no step should reach: a hang becomes a failure
PATTERN = bytes(range(256)) * 256  # 64 KiB


def assert_reset(e: BaseException, op: str) -> None:
    assert isinstance(e, ConnectionResetError), f"{op}: {e!r}"
    assert isinstance(e, net.OpError) and e.op == op, f"{op}: {e!r}"


@pytest.mark.parametrize("victim", ["client", "server"])
def test_rst_mid_stream_fails_a_read(backend_name, path, victim):
    """The other end streams; the victim reads. Its ACKs draw the RST after
    the first MiB: the read fails with a reset. What it read is a prefix of
    the stream (nothing mixed up), and it never saw an EOF."""

    async def main():
        ln, c, s = await pair(path)
        reader, writer = (c, s) if victim == "client" else (s, c)
        sending = [True]

        async def stream():
            writer.set_write_deadline(netpoll.now() + SAFETY)
            try:
                while sending[0]:
                    await writer.write(PATTERN)
            except OSError:
                pass  # this end gets its own error once the path is reset

        try:
            g = netpoll.go(stream())
            reader.set_read_deadline(netpoll.now() + SAFETY)
            buf = bytearray(65536)
            got = 0
            rule = None
            while True:
                try:
                    n = await reader.read(buf)
                except OSError as e:
                    assert_reset(e, "read")
                    break
                assert n > 0, f"EOF after {got} bytes instead of a reset"
                assert bytes(buf[:n]) == (PATTERN * 2)[got % len(PATTERN):][:n], f"corrupt at byte {got}"
                got += n
                if rule is None and got >= 1 << 20:
                    rule = reject_from(path, victim, reader)
            assert rule is not None, "the stream failed before the RST was set up"
            assert path.hits(rule) > 0
            sending[0] = False
            writer.close()
            await g
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)


@pytest.mark.parametrize("victim", ["client", "server"])
def test_rst_mid_stream_fails_a_write(backend_name, path, victim):
    """The victim streams; the other end reads. After the first MiB the
    victim's data draws the RST: its write fails with a reset."""

    async def main():
        ln, c, s = await pair(path)
        writer, reader = (c, s) if victim == "client" else (s, c)
        got = [0]
        rule = []

        async def drain():
            reader.set_read_deadline(netpoll.now() + SAFETY)
            buf = bytearray(65536)
            try:
                while True:
                    n = await reader.read(buf)
                    if n == 0:
                        return
                    got[0] += n
                    if not rule and got[0] >= 1 << 20:
                        rule.append(reject_from(path, victim, writer))
            except OSError:
                pass  # ended by its deadline or the close below

        try:
            g = netpoll.go(drain())
            writer.set_write_deadline(netpoll.now() + SAFETY)
            try:
                while True:
                    await writer.write(PATTERN)
            except OSError as e:
                assert_reset(e, "write")
            assert rule, f"the write failed after {got[0]} bytes, before the RST was set up"
            assert path.hits(rule[0]) > 0
            reader.close()
            await g
        finally:
            close_all(c, s, ln)

    run(path, backend_name, main)


@pytest.mark.parametrize("where", ["server ingress", "client egress"])
def test_rst_during_the_handshake_fails_the_dial(backend_name, path, where):
    """The SYN is answered with a RST although a listener is there: by the
    server's firewall, or by a local one on the client's way out."""

    async def main():
        ln = listen(path)
        try:
            port = ln.addr.port
            if where == "server ingress":
                rule = path.add_rule("server", "input", f"tcp dport {port} tcp flags syn reject with tcp reset")
            else:
                rule = path.add_rule("client", "output", f"tcp dport {port} tcp flags syn reject with tcp reset")
            t0 = netpoll.now()
            with pytest.raises((ConnectionRefusedError, ConnectionResetError)) as info:
                await net.dial("tcp", addr(path, ln), timeout=SAFETY)
            assert isinstance(info.value, net.OpError) and info.value.op == "dial", repr(info.value)
            assert netpoll.now() - t0 < SAFETY / 2, "the dial waited instead of failing on the RST"
            assert path.hits(rule) > 0
            # The listener never saw a connection.
            ln.set_deadline(netpoll.now() + 0.1)
            with pytest.raises(netpoll.DeadlineExceededError):
                await ln.accept()
        finally:
            ln.close()

    run(path, backend_name, main)
