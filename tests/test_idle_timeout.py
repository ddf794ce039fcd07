"""The idle timeout: ``SMTPServer(..., idle_timeout=SECONDS)`` and ``-t``.

A client silent for ``idle_timeout`` seconds gets ``421 <fqdn> Idle
timeout, closing connection`` and is disconnected; a client that keeps
talking is not; without the option nobody is cut off.

The notice must come neither early nor (much) late.  Early is checked
exactly: the clock is read before the client's last sending (or its
connect), so the server heard from it after that, and the notice may
only arrive more than ``idle_timeout`` later.  Late gets a generous
bound: the server looks for idle clients every ``idle_timeout / 2`` (at
most every second) and a shared machine may be slow.
"""

import select
import smtplib
import socket
import time

import pytest
from conftest import FQDN, TIMEOUT, wait_for
from robustness_support import (
    WatchedChannel,
    WatchedServer,
    assert_no_unexpected_errors,
    check_fresh_delivery,
    cli_servers,
    read_until_closed,
)

IDLE_NOTICE = ("421 %s Idle timeout, closing connection\r\n" % FQDN).encode("ascii")
SHORT = 0.5
#: Latest acceptable arrival of the notice after the client fell silent.
LATE = 2 * SHORT + 1.5


def wait_for_notice(sock, silent_since):
    """Stay silent until the server's notice and its EOF arrive.

    Returns (bytes received, how the connection ended, seconds from
    ``silent_since`` to the first byte of the notice).
    """
    first, how = read_until_closed(sock, limit=1, timeout=10 * SHORT + TIMEOUT)
    elapsed = time.monotonic() - silent_since
    rest = b""
    if how == "limit":
        rest, how = read_until_closed(sock)
    return first + rest, how, elapsed


def read_replies_until(sock, last_line):
    """Read what the server sends up to and including ``last_line``."""
    received = b""
    while not received.endswith(last_line):
        data, how = read_until_closed(sock, limit=1)
        assert how == "limit", (received + data, how)
        received += data
    return received


@pytest.fixture
def cli_server():
    yield from cli_servers()


@pytest.fixture(params=[False, True], ids=["select", "poll"])
def idle_server(request, serve):
    """Factory: a WatchedServer with the given idle_timeout, on either loop."""

    def start(**kwargs):
        return serve(WatchedServer, use_poll=request.param, **kwargs)

    return start


def connect(server):
    sock = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    assert read_replies_until(sock, b"\r\n").startswith(b"220 ")
    return sock


def test_silent_client_gets_421_then_eof(idle_server):
    server = idle_server(idle_timeout=SHORT)
    connecting = time.monotonic()
    sock = connect(server)
    try:
        received, how, elapsed = wait_for_notice(sock, connecting)
    finally:
        sock.close()
    assert (received, how) == (IDLE_NOTICE, "eof")
    assert SHORT < elapsed < LATE
    assert wait_for(lambda: len(server._map) == 1)
    assert_no_unexpected_errors(server)
    check_fresh_delivery(server)


def test_talking_client_is_not_cut(serve):
    """A NOOP every 0.2 s for twice the timeout (1 s) keeps the session alive."""
    server = serve(WatchedServer, idle_timeout=1.0)
    sock = connect(server)
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            sock.sendall(b"NOOP\r\n")
            reply, _ = read_until_closed(sock, limit=1)
            assert reply == b"250 OK\r\n"
            time.sleep(0.2)
        sock.sendall(b"QUIT\r\n")
        rest, how = read_until_closed(sock)
    finally:
        sock.close()
    assert (rest, how) == (b"221 Bye\r\n", "eof")
    assert_no_unexpected_errors(server)


def test_timeout_counts_from_the_last_command(serve):
    """Talking for longer than the timeout, then silence: cut SHORT later."""
    server = serve(WatchedServer, idle_timeout=SHORT)
    sock = connect(server)
    try:
        talking_until = time.monotonic() + 1.2 * SHORT
        while True:
            last_sent = time.monotonic()
            sock.sendall(b"NOOP\r\n")
            assert read_replies_until(sock, b"\r\n") == b"250 OK\r\n"
            if last_sent > talking_until:
                break
            time.sleep(SHORT / 5)
        received, how, elapsed = wait_for_notice(sock, last_sent)
    finally:
        sock.close()
    assert (received, how) == (IDLE_NOTICE, "eof")
    assert SHORT < elapsed < LATE
    assert_no_unexpected_errors(server)


def test_silent_mid_data_is_cut_and_not_delivered(idle_server):
    server = idle_server(idle_timeout=SHORT)
    sock = connect(server)
    try:
        last_sent = time.monotonic()
        sock.sendall(
            b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"DATA\r\nSubject: never finished\r\n\r\nhalf a mess"
        )
        replies = read_replies_until(sock, b"354 End data with <CR><LF>.<CR><LF>\r\n")
        received, how, elapsed = wait_for_notice(sock, last_sent)
    finally:
        sock.close()
    assert replies == (
        ("250 %s\r\n" % FQDN).encode("ascii")
        + b"250 OK\r\n250 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert (received, how) == (IDLE_NOTICE, "eof")
    assert SHORT < elapsed < LATE
    assert server.deliveries == []
    assert_no_unexpected_errors(server)
    check_fresh_delivery(server)
    assert len(server.deliveries) == 1  # only the fresh one


def test_client_that_never_reads_is_closed(idle_server):
    """Replies pile up unread, the server stops reading, and then cuts it off."""
    server = idle_server(idle_timeout=SHORT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(server.socket.getsockname()[:2])
    assert wait_for(lambda: len(server._map) == 2)
    sock.setblocking(False)
    try:
        stalled_since = None
        deadline = time.monotonic() + 30
        while len(server._map) > 1:
            assert time.monotonic() < deadline, "the server never closed the connection"
            writable = select.select([], [sock], [], 0.05)[1]
            if not writable:
                stalled_since = stalled_since or time.monotonic()
                continue
            try:
                sock.send(b"HELP\r\n" * 10000)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # reset by the server: it is gone
                break
    finally:
        sock.close()
    assert stalled_since is not None, "the server never stopped reading"
    assert wait_for(lambda: len(server._map) == 1)
    assert_no_unexpected_errors(server)
    check_fresh_delivery(server)


class NeverDrainedChannel(WatchedChannel):
    """A channel whose peer seemingly never reads: nothing it queues leaves.

    Sending an empty piece still reports a connection that the server has
    shut down (EPIPE), so the channel sees its end as a real one would.
    """

    def send(self, data):
        return WatchedChannel.send(self, b"")


class NeverDrainedServer(WatchedServer):
    channel_class = NeverDrainedChannel


def test_input_dropped_after_the_notice_is_not_activity(serve):
    """A client that only sends, once noticed as idle, is cut off anyway.

    After the 421 is queued, what the client sends is read and dropped;
    counting those reads as activity kept such a connection open forever.
    """
    server = serve(NeverDrainedServer, idle_timeout=SHORT)
    sock = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    try:
        assert wait_for(lambda: len(server._map) == 2)
        (channel,) = [d for d in list(server._map.values()) if d is not server]
        assert wait_for(lambda: channel._idle_notice_sent, timeout=10 * SHORT)
        noticed = time.monotonic()
        ended = None
        while time.monotonic() < noticed + 10 * SHORT:
            try:
                sock.sendall(b"NOOP\r\n")
            except OSError:  # reset: the server has closed it
                ended = time.monotonic()
                break
            if len(server._map) == 1:
                ended = time.monotonic()
                break
            time.sleep(SHORT / 10)
    finally:
        sock.close()
    assert ended is not None, "the connection was kept while the client sent"
    assert ended - noticed < LATE
    assert_no_unexpected_errors(server)


def test_no_timeout_by_default(serve):
    server = serve(WatchedServer)
    assert server.idle_timeout is None
    sock = connect(server)
    try:
        # Silent for 1.5 s: nothing arrives, the connection stays.
        assert select.select([sock], [], [], 1.5)[0] == []
        sock.sendall(b"NOOP\r\n")
        reply, _ = read_until_closed(sock, limit=1)
    finally:
        sock.close()
    assert reply == b"250 OK\r\n"
    assert_no_unexpected_errors(server)


def test_timeout_is_keyword_only():
    with pytest.raises(TypeError):
        WatchedServer(("127.0.0.1", 0), None, None, {}, False, False, 1.0)


def test_cli_idle_timeout(cli_server):
    running = cli_server("-c", "DebuggingServer", "-t", str(SHORT))
    connecting = time.monotonic()
    sock = socket.create_connection(running.address, timeout=TIMEOUT)
    try:
        greeting = read_replies_until(sock, b"\r\n")
        received, how, elapsed = wait_for_notice(sock, connecting)
    finally:
        sock.close()
    assert greeting.startswith(b"220 ")
    assert (received, how) == (IDLE_NOTICE, "eof")
    # The command line's loop wakes at least once a second to look.
    assert SHORT < elapsed < LATE + 1.0
    # The server itself goes on.
    with smtplib.SMTP(*running.address, timeout=TIMEOUT) as client:
        assert client.noop()[0] == 250


def test_cli_long_option(cli_server):
    running = cli_server("-c", "DebuggingServer", "--idle-timeout=%s" % SHORT)
    connecting = time.monotonic()
    sock = socket.create_connection(running.address, timeout=TIMEOUT)
    try:
        greeting = read_replies_until(sock, b"\r\n")
        received, how, elapsed = wait_for_notice(sock, connecting)
    finally:
        sock.close()
    assert greeting.startswith(b"220 ")
    assert (received, how) == (IDLE_NOTICE, "eof")
    assert SHORT < elapsed < LATE + 1.0
