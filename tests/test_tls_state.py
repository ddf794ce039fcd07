"""What a channel holds and does around STARTTLS, implicit TLS and AUTH.

Each test drives one channel on a private asyncore map from the test
thread: the channel's end of a socket pair belongs to the map, the test
holds the other end and pumps the loop while it waits for a reply, so
every check sees the channel between two loop passes (no server thread
to race).  The TLS client handshake runs in a short-lived thread while
the test pumps the server's side.  Certificates come from a throw-away
trustme CA (tests/tls_support.py); clients verify the server.

Covered here: the DEBUGSTREAM line naming the TLS version and cipher, the
session state after STARTTLS (as 3.11 set it up for a new connection),
the idle clock and the idle timeout of a handshake that never finishes,
input left over when STARTTLS is taken, the host name in the CRAM-MD5
challenge, the length limit of AUTH response lines, and servers that are
stand-ins rather than SMTPServer instances.
"""

import base64
import collections
import hmac
import io
import re
import socket
import ssl
import threading
import time

import pytest
from conftest import FQDN, TIMEOUT, DummyServer, do_transaction, pump
from tls_support import Certificates, b64, tls_socket_pair

import smtpd_compat

USERS = {"ann": "s3cret"}
IDLE = 10.0
#: The longest AUTH line (command or response) once EHLO offered AUTH.
AUTH_LINE = 12288
STARTTLS_READY = b"220 Ready to start TLS\r\n"


@pytest.fixture
def certs(tmp_path):
    return Certificates(tmp_path)


def new_server(sock_map, **kwargs):
    return smtpd_compat.SMTPServer(("127.0.0.1", 0), None, map=sock_map, **kwargs)


class Session:
    """One channel on a private map, and the client's end of its socket pair.

    ``cmd``, ``send`` and ``read_reply`` work as conftest's RawClient's
    (so that ``do_transaction`` takes a Session), but pump the map while
    they wait.
    """

    def __init__(
        self,
        sock_map,
        server,
        channel_class=smtpd_compat.SMTPChannel,
        server_end=None,
        client_end=None,
    ):
        if server_end is None:
            server_end, client_end = socket.socketpair()
        self.map = sock_map
        self.server = server
        self.sock = client_end
        self.sock.settimeout(TIMEOUT)
        self.buffer = b""
        self.at_eof = False
        try:
            self.channel = channel_class(
                server, server_end, ("127.0.0.1", 2525), map=sock_map
            )
        except BaseException:
            server_end.close()
            client_end.close()
            raise
        self.greeting = self.read_reply()

    def close(self):
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("ascii")
        self.sock.sendall(data)

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("ascii")
        self.send(line + b"\r\n")
        return self.read_reply()

    def take_input(self):
        """Add what the client can read without waiting to ``buffer``."""
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        finally:
            self.sock.settimeout(TIMEOUT)
        if not data:
            self.at_eof = True
        self.buffer += data

    def _reply_end(self):
        """Where the first complete reply in ``buffer`` ends, or None."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n", start)
            if end < 0:
                return None
            line = self.buffer[start : end + 2]
            start = end + 2
            if line[3:4] != b"-":
                return start

    def read_reply(self):
        def complete():
            self.take_input()
            return self._reply_end() is not None or self.at_eof

        pump(self.map, until=complete)
        end = self._reply_end()
        assert end is not None, "no complete reply: %r" % (self.buffer,)
        reply, self.buffer = self.buffer[:end], self.buffer[end:]
        return reply

    def nothing_received(self):
        """True when the client has neither data nor the end to read."""
        self.take_input()
        return self.buffer == b"" and not self.at_eof

    def open(self):
        return self.channel in self.map.values()

    def starttls(self, context):
        """STARTTLS, then the client's handshake while the loop is pumped.

        Returns once the channel took the encrypted socket back (so its
        whole post-handshake set-up has run).
        """
        assert self.cmd("STARTTLS") == STARTTLS_READY
        assert self.buffer == b""
        result = {}

        def handshake():
            try:
                result["sock"] = context.wrap_socket(
                    self.sock, server_hostname="localhost"
                )
            except (OSError, ValueError) as err:  # reported below
                result["error"] = err

        thread = threading.Thread(target=handshake)
        thread.daemon = True
        thread.start()
        assert pump(
            self.map,
            until=lambda: not thread.is_alive() and self.channel._tls_active,
        )
        thread.join(TIMEOUT)
        assert "error" not in result, result
        self.sock = result["sock"]
        self.sock.settimeout(TIMEOUT)


@pytest.fixture
def session(private_map):
    """Factory: ``session(server, **kw)`` -> Session; client ends closed after."""
    made = []

    def make(server, **kwargs):
        made.append(Session(private_map, server, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def tls_debug_line(sock):
    """The DEBUGSTREAM line for a TLS connection, from the client's side."""
    return "TLS: %s %s" % (sock.version(), sock.cipher())


# --------------------------------------------------------------------------
# DEBUGSTREAM names the TLS version and cipher
# --------------------------------------------------------------------------


def test_debugstream_shows_tls_after_starttls(private_map, session, certs, monkeypatch):
    debug = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", debug)
    client = session(new_server(private_map, tls_context=certs.server_context()))
    assert not any(line.startswith("TLS") for line in debug.getvalue().splitlines())
    client.starttls(certs.client_context())
    lines = debug.getvalue().splitlines()
    assert lines.count(tls_debug_line(client.sock)) == 1
    assert lines[-1] == tls_debug_line(client.sock)
    assert client.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_debugstream_shows_tls_of_implicit_tls(
    private_map, session, certs, monkeypatch
):
    debug = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", debug)
    server_tls, client_tls = tls_socket_pair(certs)
    server = new_server(private_map, ssl_context=certs.server_context())
    client = session(server, server_end=server_tls, client_end=client_tls)
    assert client.greeting.startswith(b"220 ")
    expected = tls_debug_line(client_tls)
    lines = debug.getvalue().splitlines()
    assert lines.count(expected) == 1
    # the channel's first line, before the peer's
    where = lines.index(expected)
    assert lines[where + 1] == "Peer: %r" % (client.channel.peer,)
    assert not any(line.startswith("Peer:") for line in lines[:where])
    assert client.cmd("NOOP") == b"250 OK\r\n"


# --------------------------------------------------------------------------
# After STARTTLS the session starts over (RFC 3207, 4.2)
# --------------------------------------------------------------------------


def test_greeting_and_esmtp_are_reset_as_on_a_new_connection(
    private_map, session, certs
):
    client = session(new_server(private_map, tls_context=certs.server_context()))
    channel = client.channel
    fresh = (channel.seen_greeting, channel.extended_smtp)
    assert fresh == ("", False)
    assert client.cmd("EHLO before").startswith(b"250-")
    assert (channel.seen_greeting, channel.extended_smtp) == ("before", True)
    client.starttls(certs.client_context())
    assert channel.seen_greeting == ""
    assert channel.seen_greeting is not None
    assert channel.extended_smtp is False
    # HELO after TLS: MAIL parameters are refused, as without ESMTP
    assert client.cmd("HELO after") == ("250 %s\r\n" % FQDN).encode()
    assert (
        client.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME")
        == b"501 Syntax: MAIL FROM: <address>\r\n"
    )
    assert client.cmd("MAIL FROM:<a@example.com>") == b"250 OK\r\n"


# --------------------------------------------------------------------------
# The idle clock and the idle timeout around the handshake
# --------------------------------------------------------------------------


def test_idle_clock_restarts_when_the_handshake_is_done(private_map, session, certs):
    server = new_server(
        private_map, idle_timeout=IDLE, tls_context=certs.server_context()
    )
    client = session(server)
    channel = client.channel
    assert client.cmd("EHLO x").startswith(b"250-")
    before = time.monotonic()
    client.starttls(certs.client_context())
    after = time.monotonic()
    assert isinstance(channel._last_activity, float)
    assert before <= channel._last_activity <= after
    server._close_idle_channels(time.monotonic())
    server._close_idle_channels(channel._last_activity + IDLE)
    pump(private_map)
    assert client.nothing_received()
    assert client.open()
    assert client.cmd("NOOP") == b"250 OK\r\n"


def test_handshake_that_never_finishes_is_aborted_past_the_timeout(
    private_map, session, certs
):
    server = new_server(
        private_map, idle_timeout=IDLE, tls_context=certs.server_context()
    )
    client = session(server)
    assert client.cmd("STARTTLS") == STARTTLS_READY
    # the client never sends its ClientHello
    pump(private_map)
    [handshake] = [
        dispatcher
        for dispatcher in private_map.values()
        if getattr(dispatcher, "tls_handshake_for", None) is server
    ]
    assert not client.open()  # the descriptor is the handshake's meanwhile
    for now in (handshake.started + IDLE / 2, handshake.started + IDLE):
        server._close_idle_channels(now)
        pump(private_map)
        assert client.nothing_received()
        assert handshake in private_map.values()
    server._close_idle_channels(handshake.started + IDLE + 0.001)
    assert client.sock.recv(1024) == b""
    pump(private_map, until=lambda: handshake not in private_map.values())
    assert list(private_map.values()) == [server]


# --------------------------------------------------------------------------
# Input buffered when STARTTLS is taken never reaches a command
# --------------------------------------------------------------------------


class PausingChannel(smtpd_compat.SMTPChannel):
    """Stops taking input whenever any reply waits to be sent.

    (The state of a channel whose client does not read its replies: its
    input waits in the buffer while the output backlog is over the limit.)
    """

    ac_out_pending_limit = 0


def test_nothing_is_left_in_the_input_buffer_by_starttls(private_map, session, certs):
    server = new_server(private_map, tls_context=certs.server_context())
    client = session(server, channel_class=PausingChannel)
    client.starttls(certs.client_context())
    assert client.cmd("NOOP") == b"250 OK\r\n"
    assert client.cmd("EHLO x").startswith(b"250-")


# --------------------------------------------------------------------------
# AUTH
# --------------------------------------------------------------------------


def test_cram_md5_challenge_names_the_server(private_map, session, monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "mx.example.test")
    server = new_server(private_map, authenticator=USERS, auth_require_tls=False)
    client = session(server)
    assert client.greeting.startswith(b"220 mx.example.test ")
    assert client.channel.fqdn == "mx.example.test"
    assert client.cmd("EHLO x").startswith(b"250-mx.example.test\r\n")
    reply = client.cmd("AUTH CRAM-MD5")
    assert reply.startswith(b"334 ") and reply.endswith(b"\r\n")
    challenge = base64.b64decode(reply[4:-2], validate=True)
    assert re.match(rb"^<\d+\.\d+@mx\.example\.test>$", challenge), challenge
    digest = hmac.new(b"s3cret", challenge, "md5").hexdigest()
    assert client.cmd(b64("ann " + digest)) == (
        b"235 2.7.0 Authentication successful\r\n"
    )


def plain_response_of_length(length):
    """(password, PLAIN response of exactly ``length`` base64 characters)."""
    assert length % 4 == 0
    password = "p" * (length // 4 * 3 - len("\0ann\0"))
    response = b64("\0ann\0" + password)
    assert len(response) == length
    return password, response


def test_auth_response_line_at_the_limit_is_taken(private_map, session):
    password, response = plain_response_of_length(AUTH_LINE)
    server = new_server(
        private_map, authenticator={"ann": password}, auth_require_tls=False
    )
    client = session(server)
    assert client.cmd("EHLO x").startswith(b"250-")
    assert client.channel.max_command_size_limit == AUTH_LINE
    assert client.cmd("AUTH PLAIN") == b"334 \r\n"
    assert client.cmd(response) == b"235 2.7.0 Authentication successful\r\n"
    assert client.channel.auth_login == "ann"


def test_auth_response_line_past_the_limit_is_refused(private_map, session):
    password, response = plain_response_of_length(AUTH_LINE)
    server = new_server(
        private_map, authenticator={"ann": password}, auth_require_tls=False
    )
    client = session(server)
    assert client.cmd("EHLO x").startswith(b"250-")
    assert client.cmd("AUTH PLAIN") == b"334 \r\n"
    assert client.cmd(response + "=") == b"500 Error: line too long\r\n"
    # the exchange is over: the next line is a command again
    assert client.cmd("NOOP") == b"250 OK\r\n"
    assert client.channel.auth_login is None


def test_ehlo_raises_only_the_auth_limit(private_map, session):
    server = new_server(private_map, authenticator=USERS, auth_require_tls=False)
    client = session(server)
    assert client.cmd("EHLO x").startswith(b"250-")
    assert dict(client.channel.command_size_limits) == {
        "MAIL": 512 + 26,
        "AUTH": AUTH_LINE,
    }


class LongAuthChannel(smtpd_compat.SMTPChannel):
    """Takes AUTH lines longer than RFC 4954 asks for."""

    def __init__(self, *args, **kwargs):
        smtpd_compat.SMTPChannel.__init__(self, *args, **kwargs)
        limits = collections.defaultdict(lambda: 512)
        limits["AUTH"] = 20000
        self.command_size_limits = limits


def test_ehlo_keeps_a_higher_auth_limit(private_map, session):
    password, response = plain_response_of_length(15000)
    server = new_server(
        private_map, authenticator={"ann": password}, auth_require_tls=False
    )
    client = session(server, channel_class=LongAuthChannel)
    assert client.cmd("EHLO x").startswith(b"250-")
    assert client.channel.command_size_limits["AUTH"] == 20000
    assert client.cmd("AUTH PLAIN") == b"334 \r\n"
    assert client.cmd(response) == b"235 2.7.0 Authentication successful\r\n"


# --------------------------------------------------------------------------
# A stand-in server that sets only some of the TLS/AUTH settings
# --------------------------------------------------------------------------


class AuthOnlyServer(DummyServer):
    """Not an SMTPServer: has an authenticator and none of the other settings."""

    authenticator = USERS


def test_stand_in_server_with_only_an_authenticator(session):
    server = AuthOnlyServer()
    for name in ("tls_context", "ssl_context", "require_starttls", "auth_required"):
        assert not hasattr(server, name)
    client = session(server)
    assert client.greeting.startswith(b"220 ")
    # auth_require_tls is on when not given: no AUTH offered in plaintext
    assert (
        client.cmd("EHLO x")
        == (
            "250-%s\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 HELP\r\n" % FQDN
        ).encode()
    )
    assert client.cmd("STARTTLS") == b'500 Error: command "STARTTLS" not recognized\r\n'
    assert client.cmd("AUTH PLAIN").startswith(b"538 5.7.11 ")
    # STARTTLS is not required, nor AUTH
    assert do_transaction(client, greet=None) == b"250 OK\r\n"
    [delivery] = server.deliveries
    assert delivery.mailfrom == "a@example.com"
    assert delivery.kwargs == {
        "mail_options": [],
        "rcpt_options": [],
        "auth_login": None,
    }


def test_stand_in_server_with_only_a_tls_context(private_map, session, certs):
    server = DummyServer()
    server.tls_context = certs.server_context()
    client = session(server)
    assert (
        client.cmd("EHLO x")
        == (
            "250-%s\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 HELP\r\n"
            % FQDN
        ).encode()
    )
    client.starttls(certs.client_context())
    assert client.cmd("AUTH PLAIN") == b'500 Error: command "AUTH" not recognized\r\n'
    assert do_transaction(client) == b"250 OK\r\n"


def test_tls_output_waits_while_the_client_does_not_read(private_map, session, certs):
    """TLS on a full socket asks to be retried (SSLWantWriteError): the
    output waits, and arrives whole and once when the client reads."""
    one = session(new_server(private_map, tls_context=certs.server_context()))
    one.starttls(certs.client_context())
    logged = []
    one.channel.log_info = lambda message, type="info": logged.append(message)
    lines = ["250-%06d %s" % (number, "x" * 4000) for number in range(500)]
    for line in lines:  # 2 MB: far more than the socket pair holds
        one.channel.push(line)
    assert one.open()
    assert one.channel.writable()  # some of it is still waiting
    expected = "".join(line + "\r\n" for line in lines).encode("ascii")

    def all_read():
        before = None
        while before != len(one.buffer):  # one TLS record per take_input()
            before = len(one.buffer)
            one.take_input()
        return len(one.buffer) >= len(expected) or one.at_eof

    assert pump(private_map, until=all_read)
    assert one.buffer == expected
    assert logged == []
    one.buffer = b""
    assert one.cmd("NOOP") == b"250 OK\r\n"
