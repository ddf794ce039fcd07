"""Helpers shared by the robustness tests (hostile input, fuzzing, load).

* ``parse_replies()`` checks that a stream of server output is made of
  well-formed SMTP reply lines and groups them into replies;
* ``WatchedServer`` / ``WatchedChannel`` record every error report that is
  not the documented "a handler raised, the client got 451" path, so a
  test can fail when an exception reached asyncore's error handling;
* ``check_fresh_delivery()`` proves that a server still works by sending
  one message through it with smtplib.
"""

import re
import smtplib
import subprocess
import sys
import time
import traceback
import uuid

from conftest import (
    TIMEOUT,
    ByteCounter,
    LoopRunner,
    ReadCountingChannel,
    RecordingServer,
    start_cli,
    wait_for,
)

from smtpd_compat import asyncore

#: One reply line: three digits, a space or a hyphen, printable text, CRLF.
#: RFC 5321 allows HT and the printable ASCII range in reply text.
ASCII_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][\t\x20-\x7e]*\r\n\Z")


class MalformedReply(AssertionError):
    """The server sent bytes that are not a well-formed SMTP reply."""


def _check_line(line, utf8):
    """Raise MalformedReply unless ``line`` (CRLF included) is well formed."""
    if utf8 and re.match(rb"[2-5][0-9][0-9][ -]", line) and line.endswith(b"\r\n"):
        try:
            text = line[4:-2].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedReply("reply line is not UTF-8: %r" % line) from None
        if not any(ch < " " and ch != "\t" or ch == "\x7f" for ch in text):
            return
    elif ASCII_REPLY_LINE.match(line):
        return
    raise MalformedReply("malformed reply line: %r" % line[:200])


def parse_replies(data, utf8=False, allow_partial_tail=False):
    """Split server output into replies, checking every line on the way.

    Lines are cut at each LF, as line-reading clients (smtplib among them)
    do, so a bare CR or LF inside a reply shows up as a malformed line.
    Returns a list of replies, each a list of lines (bytes, CRLF included).
    A trailing piece without LF is an error unless ``allow_partial_tail``
    (the connection ended while the server was still writing); it must then
    at least be the start of a well-formed line.
    """
    replies = []
    current = []
    pieces = data.split(b"\n")
    tail = pieces.pop()
    for piece in pieces:
        line = piece + b"\n"
        _check_line(line, utf8)
        current.append(line)
        if line[3:4] == b" ":
            replies.append(current)
            current = []
    if tail:
        if not allow_partial_tail:
            raise MalformedReply("unterminated reply line: %r" % tail[:200])
        if not re.match(rb"([2-5]([0-9]([0-9]([ -][^\r]*\r?)?)?)?)?\Z", tail):
            raise MalformedReply("malformed partial reply line: %r" % tail[:200])
    if current and not allow_partial_tail:
        raise MalformedReply("multi-line reply without its last line: %r" % current)
    return replies


def reply_codes(data, **kwargs):
    """The three-digit codes of the replies in ``data`` (as ints)."""
    return [int(reply[-1][:3]) for reply in parse_replies(data, **kwargs)]


class DeliberateFailure(Exception):
    """Raised on purpose by test handlers; the client must get 451."""


def _deliberate_failure_in_flight():
    return isinstance(sys.exc_info()[1], DeliberateFailure)


class WatchedChannel(ReadCountingChannel):
    """An SMTPChannel that records unexpected error reports on its server.

    The only error report a test expects is the one for a DeliberateFailure
    raised by the test's own process_message(); everything else (an
    exception from the package's own code, a socket error reaching
    handle_error(), an asyncore warning) is recorded in the server's
    ``unexpected`` list.  Reports are not printed: ``unexpected`` has them.
    What it reads is counted in the server's ``bytes_read``.
    """

    def _expected_report(self):
        return self._handling_handler_error and _deliberate_failure_in_flight()

    def handle_error(self):
        if not self._expected_report():
            self.smtp_server.unexpected.append(
                "handle_error() on a channel:\n" + traceback.format_exc()
            )
        ReadCountingChannel.handle_error(self)

    def log_info(self, message, type="info"):
        if type != "info" and not self._expected_report():
            self.smtp_server.unexpected.append(
                "channel log_info(%s): %s" % (type, message)
            )


class WatchedServer(RecordingServer):
    """A RecordingServer whose channels and listener report stray errors.

    ``unexpected`` collects every error report that did not come from the
    handler-error path (451 to the client, connection kept); ``bytes_read``
    counts what its channels read (see conftest.ReadCountingServer).
    """

    channel_class = WatchedChannel

    def __init__(self, *args, **kwargs):
        self.unexpected = []
        self.bytes_read = ByteCounter()
        RecordingServer.__init__(self, *args, **kwargs)

    def handle_error(self):
        self.unexpected.append(
            "handle_error() on the server:\n" + traceback.format_exc()
        )
        RecordingServer.handle_error(self)

    def log_info(self, message, type="info"):
        if type != "info":
            self.unexpected.append("server log_info(%s): %s" % (type, message))


def assert_no_unexpected_errors(server):
    assert server.unexpected == [], "\n".join(server.unexpected)


def _as_text(data):
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def check_fresh_delivery(server, address=None):
    """Send one message with a new smtplib client; assert it was delivered.

    ``server`` is a RecordingServer run by the ``serve`` fixture (or any
    object with a ``deliveries`` list); ``address`` defaults to its socket's.
    """
    if address is None:
        address = server.socket.getsockname()[:2]
    marker = uuid.uuid4().hex
    body = "Subject: check %s\r\n\r\nstill serving %s\r\n" % (marker, marker)
    before = len(server.deliveries)
    with smtplib.SMTP(address[0], address[1], timeout=TIMEOUT) as client:
        refused = client.sendmail("check@example.com", ["rcpt@example.com"], body)
    assert refused == {}
    assert wait_for(lambda: len(server.deliveries) > before)
    delivered = [d for d in server.deliveries[before:] if marker in _as_text(d.data)]
    assert len(delivered) == 1
    assert delivered[0].mailfrom == "check@example.com"
    assert delivered[0].rcpttos == ["rcpt@example.com"]


def read_until_closed(sock, limit=None, timeout=TIMEOUT):
    """Read from ``sock`` until EOF, a reset or ``timeout`` seconds pass.

    Returns (data, how) where ``how`` is 'eof', 'reset' or 'timeout'.
    With ``limit``, stops (how='limit') once that many bytes arrived.
    """
    chunks = []
    size = 0
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        except OSError:  # socket.timeout is an OSError subclass
            return b"".join(chunks), "timeout"
        if not chunk:
            return b"".join(chunks), "eof"
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size >= limit:
            return b"".join(chunks), "limit"


class CliServer:
    """``python -m smtpd_compat -n ARGS 127.0.0.1:0`` in a subprocess."""

    def __init__(self, args):
        self.proc, port = start_cli(
            ["-n", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.address = ("127.0.0.1", port)

    def stop(self):
        """Kill the server; return what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        _, stderr = self.proc.communicate(timeout=TIMEOUT)
        self.stderr = stderr.decode("utf-8", "replace")
        return self.stderr


def cli_servers():
    """Body of a ``cli_server`` fixture (a generator: ``yield from`` it).

    Yields a factory, ``start(*args)`` -> a running CliServer; every server
    it started is killed at the end.
    """
    servers = []

    def start(*args):
        server = CliServer(args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class QuickLoopRunner(LoopRunner):
    """conftest's LoopRunner with a 5 ms poll timeout, so it stops at once.

    For tests that start hundreds of servers, where waiting up to 50 ms for
    each loop thread to notice the stop flag adds up.
    """

    def _run(self):
        try:
            while not self.stop_flag.is_set():
                asyncore.loop(
                    timeout=0.005, map=self.map, use_poll=self.use_poll, count=1
                )
        except BaseException:  # noqa: BLE001 - reported by stop()
            self.errors.append(sys.exc_info())


def quick_servers():
    """Body of a server fixture (``yield from`` it): yields ``start(cls, **kw)``.

    ``start`` creates ``cls(("127.0.0.1", 0), None, map=..., **kw)`` on a
    private map driven by a QuickLoopRunner (``use_poll`` is taken from the
    keywords); every runner is stopped, and its map closed, at the end.
    """
    runners = []

    def start(server_class, use_poll=False, **kwargs):
        sock_map = {}
        server = server_class(("127.0.0.1", 0), None, map=sock_map, **kwargs)
        runner = QuickLoopRunner(sock_map, use_poll=use_poll)
        runners.append(runner)
        runner.start()
        return server

    yield start
    for runner in runners:
        runner.stop()
