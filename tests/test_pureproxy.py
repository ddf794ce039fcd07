"""PureProxy: what _deliver() is given, what goes upstream, what the client hears.

The proxy and the upstream server run on 127.0.0.1, each on its own asyncore
map and loop thread (the ``serve`` fixture), so the proxy's blocking relay
through smtplib talks to a live server.  ``test_same_as_python_3_11`` runs
CPython 3.11's own PureProxy (in a 3.11 subprocess) and ours on the same
cases against the same upstream server and compares everything a program
can see: the arguments of ``_deliver()``, the refusals it returns, the
DEBUGSTREAM text and what the upstream server received.
"""

import asyncio
import io
import json
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
import reference_pythons
from conftest import (
    TIMEOUT,
    RecordingServer,
    data_reply_ok,
    server_address,
    subprocess_env,
)

import smtpd_compat

MESSAGE = b"From: a@example.com\r\nSubject: relay\r\n\r\nfirst line\r\nsecond line\r\n"
UTF8_MESSAGE = (
    b"From: a@example.com\r\nSubject: 8bit\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\r\n"
)
PEER = ("192.0.2.7", 4567)

UPSTREAM_DOWN = (451, b"Requested action aborted: upstream server unavailable")
UPSTREAM_DEFERRED = (
    451,
    b"Requested action aborted: upstream server refused the message for now",
)
ALL_REFUSED = (
    554,
    b"Transaction failed: all recipients refused by the upstream server",
)


class RefusingChannel(smtpd_compat.SMTPChannel):
    """Refuses senders ``refuse-sender...`` and recipients ``refuse4/5...``."""

    def smtp_MAIL(self, arg):
        if "<refuse-sender" in (arg or "").lower():
            self.push("553 Sender refused")
        else:
            smtpd_compat.SMTPChannel.smtp_MAIL(self, arg)

    def smtp_RCPT(self, arg):
        address = (arg or "").lower()
        if "<refuse5" in address:
            self.push("550 No such user here")
        elif "<refuse4" in address:
            self.push("450 Mailbox busy, try later")
        else:
            smtpd_compat.SMTPChannel.smtp_RCPT(self, arg)

    def found_terminator(self):
        if self.smtp_state == self.DATA:
            # The message as it came over the wire: dot-stuffed, line ends
            # untouched.
            self.smtp_server.wire.append(b"".join(map(bytes, self.received_lines)))
        smtpd_compat.SMTPChannel.found_terminator(self)


class Upstream(RecordingServer):
    """Records messages and their wire form; rejects some after DATA."""

    channel_class = RefusingChannel

    def __init__(self, *args, **kwargs):
        self.wire = []
        RecordingServer.__init__(self, *args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        RecordingServer.process_message(self, peer, mailfrom, rcpttos, data, **kwargs)
        if mailfrom.startswith("reject-data"):
            return "554 Message rejected"
        if mailfrom.startswith("defer-data"):
            return "451 Try again later"
        return None

    def received(self):
        return [(d.mailfrom, d.rcpttos, d.data) for d in self.deliveries]


@pytest.fixture
def upstream(serve):
    """The server PureProxy relays to (bytes mode: it offers 8BITMIME)."""
    return serve(Upstream)


@pytest.fixture
def down_address():
    """An address where nothing listens: a bound socket that never listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()
    finally:
        sock.close()


@pytest.fixture
def proxy_for(serve):
    """Factory: ``proxy_for(upstream_address, cls=PureProxy, **kwargs)``."""

    def start(remote, cls=smtpd_compat.PureProxy, **kwargs):
        return serve(cls, remoteaddr=tuple(remote), **kwargs)

    return start


@pytest.fixture
def debugstream(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    return stream


def relay_lines(stream):
    """The proxy's own DEBUGSTREAM lines (the upstream server prints there too)."""
    lines = stream.getvalue().splitlines(keepends=True)
    return "".join(line for line in lines if line.startswith(("got ", "we got ")))


def transact(proxy, rcpttos, message=MESSAGE, mailfrom="a@example.com"):
    """One transaction through ``proxy``; the (code, text) reply to DATA."""
    with smtplib.SMTP(*server_address(proxy), timeout=TIMEOUT) as client:
        assert client.ehlo()[0] == 250
        assert client.mail(mailfrom) == (250, b"OK")
        for rcpt in rcpttos:
            assert client.rcpt(rcpt) == (250, b"OK")
        return client.data(message)


class DeliverRecorder(smtpd_compat.PureProxy):
    """Records each _deliver() call; returns ``self.result`` (no relay)."""

    result = {}

    def __init__(self, *args, **kwargs):
        self.calls = []
        smtpd_compat.PureProxy.__init__(self, *args, **kwargs)

    def _deliver(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def standalone(cls=DeliverRecorder, **kwargs):
    """A proxy on a private map, for calling process_message() directly."""
    return cls(("127.0.0.1", 0), ("127.0.0.1", 9), map={}, **kwargs)


# -- what _deliver() is given ------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            "Subject: a\nFrom: b\n\nbody\n\nmore",
            "Subject: a\nFrom: b\nX-Peer: 192.0.2.7\n\nbody\n\nmore",
        ),
        ("Subject: only headers", "Subject: only headers\nX-Peer: 192.0.2.7"),
        ("\nbody first", "X-Peer: 192.0.2.7\n\nbody first"),
        ("", "X-Peer: 192.0.2.7\n"),
        # Only LF splits lines, as in 3.11: "\r" stays where it is.
        ("A: 1\r\n\r\nbody", "A: 1\r\n\r\nbody\nX-Peer: 192.0.2.7"),
        ("A: 1\n\r\nb\n\nc", "A: 1\n\r\nb\nX-Peer: 192.0.2.7\n\nc"),
    ],
)
def test_deliver_gets_the_3_11_shape(data, expected):
    proxy = standalone(decode_data=True)
    try:
        rcpttos = ["b@example.com"]
        assert proxy.process_message(PEER, "a@example.com", rcpttos, data) is None
        [(args, kwargs)] = proxy.calls
        assert args == ("a@example.com", ["b@example.com"], expected)
        assert args[1] is rcpttos
        assert kwargs == {}
    finally:
        proxy.close()


def test_bytes_mode_gets_the_same_shape_as_bytes():
    proxy = standalone()
    try:
        data = b"Subject: caf\xc3\xa9\n\nbody\n\n\xff"
        assert proxy.process_message(PEER, "a@x.example", ["b@x.example"], data) is None
        [(args, kwargs)] = proxy.calls
        assert args == (
            "a@x.example",
            ["b@x.example"],
            b"Subject: caf\xc3\xa9\nX-Peer: 192.0.2.7\n\nbody\n\n\xff",
        )
        assert kwargs == {}
    finally:
        proxy.close()


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_deliver_called_once_from_a_session(proxy_for, decode_data):
    proxy = proxy_for(("127.0.0.1", 9), cls=DeliverRecorder, decode_data=decode_data)
    message = b"Subject: s\r\n\r\n.dot\r\nline\r\n"
    assert transact(proxy, ["b@example.com", "c@example.com"], message) == (250, b"OK")
    expected = "Subject: s\nX-Peer: 127.0.0.1\n\n.dot\nline"
    if not decode_data:
        expected = expected.encode()
    assert proxy.calls == [
        (("a@example.com", ["b@example.com", "c@example.com"], expected), {})
    ]


@pytest.mark.parametrize(
    "result, debug, reply",
    [
        ({}, "we got some refusals: {}\n", None),
        (None, "we got some refusals: None\n", None),
        # Anything but a dict says nothing about refusals (3.11: always 250).
        ("junk", "we got some refusals: junk\n", None),
        (
            {"b@x.example": (550, b"no")},
            "we got some refusals: {'b@x.example': (550, b'no')}\n",
            None,
        ),
        (
            {"b@x.example": (550, b"no"), "c@x.example": (553, b"no")},
            None,
            ALL_REFUSED,
        ),
        (
            {"b@x.example": (550, b"no"), "c@x.example": (421, b"later")},
            None,
            UPSTREAM_DEFERRED,
        ),
        (
            {"b@x.example": (-1, "ignore"), "c@x.example": (-1, "ignore")},
            None,
            UPSTREAM_DOWN,
        ),
        # A refusal without a usable code cannot be told to be final.
        ({"b@x.example": "?", "c@x.example": (550, b"no")}, None, UPSTREAM_DOWN),
    ],
)
def test_reply_follows_the_refusals(debugstream, result, debug, reply):
    proxy = standalone(decode_data=True)
    proxy.result = result
    debugstream.seek(0)
    debugstream.truncate()  # forget the "started at" lines
    try:
        status = proxy.process_message(
            PEER, "a@x.example", ["b@x.example", "c@x.example"], "S: 1"
        )
    finally:
        proxy.close()
    expected_debug = debug or "we got some refusals: %s\n" % (result,)
    assert debugstream.getvalue() == expected_debug
    if reply is None:
        assert status is None
    else:
        assert status == "%d %s" % (reply[0], reply[1].decode())


# -- the default _deliver(): what it returns and prints -----------------------


@pytest.mark.parametrize(
    "mailfrom, rcpttos, refused, debug",
    [
        ("a@example.com", ["b@example.com", "c@example.com"], {}, ""),
        (
            "a@example.com",
            ["b@example.com", "refuse5@example.com", "refuse4@example.com"],
            {
                "refuse5@example.com": (550, b"No such user here"),
                "refuse4@example.com": (450, b"Mailbox busy, try later"),
            },
            "",
        ),
        (
            "a@example.com",
            ["refuse5@example.com", "refuse4@example.com"],
            {
                "refuse5@example.com": (550, b"No such user here"),
                "refuse4@example.com": (450, b"Mailbox busy, try later"),
            },
            "got SMTPRecipientsRefused\n",
        ),
        (
            "reject-data@example.com",
            ["b@example.com", "refuse5@example.com"],
            {
                "b@example.com": (554, b"Message rejected"),
                "refuse5@example.com": (554, b"Message rejected"),
            },
            "got <class 'smtplib.SMTPDataError'>\n",
        ),
        (
            "refuse-sender@example.com",
            ["b@example.com"],
            {"b@example.com": (553, b"Sender refused")},
            "got <class 'smtplib.SMTPSenderRefused'>\n",
        ),
    ],
    ids=["accepted", "some-refused", "all-refused", "data-refused", "sender-refused"],
)
def test_deliver_returns_refusals(
    upstream, debugstream, mailfrom, rcpttos, refused, debug
):
    proxy = standalone(smtpd_compat.PureProxy)
    proxy._remoteaddr = server_address(upstream)
    debugstream.seek(0)
    debugstream.truncate()
    try:
        assert proxy._deliver(mailfrom, rcpttos, "Subject: x\n\nbody") == refused
    finally:
        proxy.close()
    assert relay_lines(debugstream) == debug


def test_deliver_when_upstream_is_down(down_address, debugstream):
    proxy = standalone(smtpd_compat.PureProxy)
    proxy._remoteaddr = down_address
    debugstream.seek(0)
    debugstream.truncate()
    try:
        refused = proxy._deliver(
            "a@example.com", ["b@x.example", "c@x.example"], MESSAGE
        )
    finally:
        proxy.close()
    assert refused == {"b@x.example": (-1, "ignore"), "c@x.example": (-1, "ignore")}
    assert debugstream.getvalue() == "got <class 'ConnectionRefusedError'>\n"


class MailArgChannel(RefusingChannel):
    """Keeps the argument of every MAIL command as it came over the wire."""

    def smtp_MAIL(self, arg):
        self.smtp_server.mail_args.append(arg)
        RefusingChannel.smtp_MAIL(self, arg)


class MailArgUpstream(Upstream):
    channel_class = MailArgChannel

    def __init__(self, *args, **kwargs):
        self.mail_args = []
        Upstream.__init__(self, *args, **kwargs)


@pytest.mark.parametrize(
    "message, parameters",
    [(UTF8_MESSAGE, " BODY=8BITMIME"), (MESSAGE, "")],
    ids=["8bit", "ascii"],
)
def test_deliver_mail_command_on_the_wire(serve, message, parameters):
    """The BODY parameter goes out spelt as RFC 6152 spells it."""
    upstream = serve(MailArgUpstream)
    proxy = smtpd_compat.PureProxy(("127.0.0.1", 0), server_address(upstream), map={})
    try:
        assert proxy._deliver("a@example.com", ["b@example.com"], message) == {}
    finally:
        proxy.close()
    [(keyword, params)] = [arg.split(" ", 1) for arg in upstream.mail_args]
    # smtplib sends "FROM:" (the one of Python 3.13 sends "from:").
    assert keyword.upper() == "FROM:<A@EXAMPLE.COM>"
    assert params == "size=%d%s" % (len(message), parameters)


@pytest.fixture
def second_loopback_host():
    """127.0.0.2, where the system lets a socket be bound to it."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 cannot be bound here")
    finally:
        probe.close()
    return "127.0.0.2"


def test_deliver_connects_to_the_remote_host(serve, second_loopback_host):
    """Not to the default host (the loopback address) on the remote port."""
    upstream = serve(Upstream, host=second_loopback_host)
    remote = server_address(upstream)
    assert remote[0] == "127.0.0.2"
    proxy = smtpd_compat.PureProxy(("127.0.0.1", 0), remote, map={})
    try:
        assert proxy._deliver("a@example.com", ["b@example.com"], MESSAGE) == {}
    finally:
        proxy.close()
    assert upstream.received() == [
        (
            "a@example.com",
            ["b@example.com"],
            b"From: a@example.com\nSubject: relay\n\nfirst line\nsecond line",
        )
    ]


@pytest.fixture
def silent_address():
    """An address that takes connections (in the backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()
    finally:
        sock.close()  # resets a connection still waiting in the backlog


class QuickProxy(smtpd_compat.PureProxy):
    relay_timeout = 0.2


def test_deliver_gives_up_after_relay_timeout(silent_address, debugstream):
    proxy = QuickProxy(("127.0.0.1", 0), silent_address, map={})
    debugstream.seek(0)
    debugstream.truncate()
    results = []

    def deliver():
        results.append(proxy._deliver("a@example.com", ["b@x.example"], MESSAGE))

    thread = threading.Thread(target=deliver, daemon=True)
    started = time.monotonic()
    try:
        thread.start()
        thread.join(TIMEOUT)
        elapsed = time.monotonic() - started
        assert not thread.is_alive(), "still waiting for the greeting"
    finally:
        proxy.close()
    assert results == [{"b@x.example": (-1, "ignore")}]
    assert 0.2 <= elapsed < TIMEOUT
    assert debugstream.getvalue() == "got <class 'smtplib.SMTPServerDisconnected'>\n"


class CallRecordingSMTP(smtplib.SMTP):
    """smtplib.SMTP noting each quit() and close() call."""

    def __init__(self, *args, **kwargs):
        self.calls = []
        smtplib.SMTP.__init__(self, *args, **kwargs)

    def quit(self):
        self.calls.append("quit")
        return smtplib.SMTP.quit(self)

    def close(self):
        self.calls.append("close")
        smtplib.SMTP.close(self)


def test_end_relay_session_says_quit_while_connected(upstream):
    relay = CallRecordingSMTP(*server_address(upstream), timeout=TIMEOUT)
    assert relay.ehlo()[0] == 250
    assert relay.sock is not None
    assert smtpd_compat._end_relay_session(relay) is None
    assert relay.calls == ["quit", "close"]
    assert relay.sock is None
    assert relay.file is None


def test_end_relay_session_leaves_a_closed_relay_alone():
    relay = CallRecordingSMTP(timeout=TIMEOUT)
    assert relay.sock is None
    assert smtpd_compat._end_relay_session(relay) is None
    assert relay.calls == []
    assert relay.sock is None


# -- the helpers behind the reply and the text relayed -----------------------


@pytest.mark.parametrize(
    "refusal, code",
    [
        ((550, b"no"), 550),
        ((450, "later"), 450),
        (("550", b"no"), -1),
        ((550.0, b"no"), -1),
        ((None, b"no"), -1),
        ((550,), -1),
        ((550, b"no", "x"), -1),
        ("?", -1),
        (None, -1),
    ],
)
def test_refusal_code(refusal, code):
    assert smtpd_compat._refusal_code(refusal) == code


@pytest.mark.parametrize(
    "codes, reply",
    [
        ([399], ALL_REFUSED),
        ([400], UPSTREAM_DEFERRED),
        ([499], UPSTREAM_DEFERRED),
        ([500], ALL_REFUSED),
        ([500, 500], ALL_REFUSED),
        ([500, 400], UPSTREAM_DEFERRED),
        ([599, -1], UPSTREAM_DOWN),
        # A code that is not an int counts as none.
        (["550", "550"], UPSTREAM_DOWN),
        ([550, "450"], UPSTREAM_DOWN),
    ],
)
def test_relay_status_at_the_edges(codes, reply):
    rcpttos = ["r%d@x.example" % index for index in range(len(codes))]
    refused = {rcpt: (code, b"text") for rcpt, code in zip(rcpttos, codes)}
    status = smtpd_compat._relay_status(rcpttos, refused)
    assert status == "%d %s" % (reply[0], reply[1].decode())


@pytest.mark.parametrize(
    "data, expected",
    [
        ("S: caf\u00e9\r\n\r\nb", b"S: caf\xc3\xa9\r\n\r\nb"),
        # Lone surrogates (undecodable bytes) go back to the bytes they were.
        ("S: x\n\nd\udce9j\udce0\r", b"S: x\r\n\r\nd\xe9j\xe0\r\n"),
        (b"S: x\n\nd\xe9j\xe0\r", b"S: x\r\n\r\nd\xe9j\xe0\r\n"),
        (bytearray(b"a\rb"), b"a\r\nb"),
    ],
)
def test_relayable_message(data, expected):
    assert smtpd_compat._relayable_message(data) == expected


@pytest.mark.parametrize(
    "data, peer_host, expected",
    [
        (b"S: 1\n\nbody", "192.0.2.7", b"S: 1\nX-Peer: 192.0.2.7\n\nbody"),
        # A host name a subclass or test passes need not be ASCII.
        (
            b"S: 1\n\nbody",
            "caf\u00e9.example",
            b"S: 1\nX-Peer: caf\\xe9.example\n\nbody",
        ),
        (bytearray(b"S: 1"), "\u20ac\U0001f4e7", b"S: 1\nX-Peer: \\u20ac\\U0001f4e7"),
        (
            "S: 1\n\nbody",
            "caf\u00e9.example",
            "S: 1\nX-Peer: caf\u00e9.example\n\nbody",
        ),
    ],
)
def test_with_peer_header(data, peer_host, expected):
    assert smtpd_compat._with_peer_header(data, peer_host) == expected


# -- replies to the client ----------------------------------------------------


@pytest.mark.parametrize(
    "mailfrom, rcpttos, reply, relayed",
    [
        ("a@example.com", ["b@example.com"], (250, b"OK"), ["b@example.com"]),
        # Some recipients are still reached: accepted, refusals logged.
        (
            "a@example.com",
            ["b@example.com", "refuse5@example.com", "refuse4@example.com"],
            (250, b"OK"),
            ["b@example.com"],
        ),
        (
            "a@example.com",
            ["refuse5a@example.com", "refuse5b@example.com"],
            ALL_REFUSED,
            None,
        ),
        (
            "a@example.com",
            ["refuse4a@example.com", "refuse4b@example.com"],
            UPSTREAM_DEFERRED,
            None,
        ),
        # One of them may still be deliverable later: do not bounce.
        (
            "a@example.com",
            ["refuse4@example.com", "refuse5@example.com"],
            UPSTREAM_DEFERRED,
            None,
        ),
        ("reject-data@example.com", ["b@example.com"], ALL_REFUSED, ["b@example.com"]),
        (
            "defer-data@example.com",
            ["b@example.com"],
            UPSTREAM_DEFERRED,
            ["b@example.com"],
        ),
        ("refuse-sender@example.com", ["b@example.com"], ALL_REFUSED, None),
    ],
)
def test_client_reply(upstream, proxy_for, mailfrom, rcpttos, reply, relayed):
    proxy = proxy_for(server_address(upstream))
    assert transact(proxy, rcpttos, mailfrom=mailfrom) == reply
    if relayed is None:
        assert upstream.deliveries == []
    else:
        [delivery] = upstream.deliveries
        assert delivery.rcpttos == relayed


def test_upstream_down_gives_451(proxy_for, down_address):
    proxy = proxy_for(down_address)
    assert transact(proxy, ["b@example.com"]) == UPSTREAM_DOWN
    assert transact(proxy, ["b@example.com"]) == UPSTREAM_DOWN  # still serving


def test_refusals_are_printed_after_every_message(upstream, proxy_for, debugstream):
    proxy = proxy_for(server_address(upstream))
    transact(proxy, ["b@example.com"])
    transact(proxy, ["b@example.com", "refuse5@example.com"])
    assert relay_lines(debugstream) == (
        "we got some refusals: {}\n"
        "we got some refusals: {'refuse5@example.com': (550, b'No such user here')}\n"
    )


# -- the wire -----------------------------------------------------------------


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_wire_has_crlf_and_dot_stuffing(upstream, proxy_for, connect, decode_data):
    """Every line end goes upstream as CRLF; lines starting with "." are stuffed."""
    proxy = proxy_for(server_address(upstream), decode_data=decode_data)
    client = connect(proxy)
    assert client.cmd("HELO client").startswith(b"250")
    assert client.cmd("MAIL FROM:<a@example.com>") == b"250 OK\r\n"
    assert client.cmd("RCPT TO:<b@example.com>") == b"250 OK\r\n"
    assert client.cmd("DATA").startswith(b"354")
    body = b"Subject: a\r\n\r\nline1\n.\nline3\rline4\r\r\n..five\r\n.\r\n"
    client.send(body)
    assert client.read_reply() == b"250 OK\r\n"
    assert client.cmd("QUIT").startswith(b"221")
    assert upstream.wire == [
        b"Subject: a\r\nX-Peer: 127.0.0.1\r\n\r\nline1\r\n..\r\nline3\r\nline4\r\n..five"
    ]


SMUGGLED = (
    b"Subject: a\r\n\r\nline1\n.\nMAIL FROM:<evil@example.org>\r\n"
    b"RCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
    b"evil\r\n"
)


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_bare_lf_dot_cannot_smuggle_a_second_message(
    upstream, proxy_for, connect, decode_data
):
    """A bare-LF ``\\n.\\n`` inside the text must not end the upstream DATA."""
    proxy = proxy_for(server_address(upstream), decode_data=decode_data)
    client = connect(proxy)
    assert client.cmd("HELO client").startswith(b"250")
    assert client.cmd("MAIL FROM:<a@example.com>") == b"250 OK\r\n"
    assert client.cmd("RCPT TO:<b@example.com>") == b"250 OK\r\n"
    assert client.cmd("DATA").startswith(b"354")
    assert data_reply_ok(client, SMUGGLED.rstrip(b"\r\n")) == b"250 OK\r\n"
    assert client.cmd("QUIT").startswith(b"221")
    assert upstream.received() == [
        (
            "a@example.com",
            ["b@example.com"],
            (
                b"Subject: a\nX-Peer: 127.0.0.1\n\nline1\n.\nMAIL FROM:<evil@example.org>\n"
                b"RCPT TO:<victim@example.org>\nDATA\nSubject: smuggled\n\nevil"
            ),
        )
    ]


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_8bit_text_is_relayed_as_utf8_with_8bitmime(upstream, proxy_for, decode_data):
    """3.11 raised UnicodeEncodeError in smtplib for non-ASCII str."""
    proxy = proxy_for(server_address(upstream), decode_data=decode_data)
    assert transact(proxy, ["b@example.com"], UTF8_MESSAGE) == (250, b"OK")
    [delivery] = upstream.deliveries
    head, _, body = (
        UTF8_MESSAGE.replace(b"\r\n", b"\n").rstrip(b"\n").partition(b"\n\n")
    )
    assert delivery.data == head + b"\nX-Peer: 127.0.0.1\n\n" + body
    assert "BODY=8BITMIME" in delivery.kwargs["mail_options"]


def test_ascii_text_is_relayed_without_body_parameter(upstream, proxy_for):
    proxy = proxy_for(server_address(upstream))
    assert transact(proxy, ["b@example.com"]) == (250, b"OK")
    [delivery] = upstream.deliveries
    assert [o for o in delivery.kwargs["mail_options"] if o.startswith("BODY")] == []


@pytest.mark.parametrize(
    "mailfrom, rcpt",
    [
        ("j\u00f6@example.com", "b@example.com"),
        ("a@example.com", "b\u00e9@example.com"),
    ],
)
def test_non_ascii_address_is_refused_for_good(
    upstream, proxy_for, connect, debugstream, mailfrom, rcpt
):
    """smtplib cannot send it without SMTPUTF8 (3.11: UnicodeEncodeError)."""
    proxy = proxy_for(server_address(upstream), decode_data=True)
    client = connect(proxy)
    assert client.cmd("HELO client").startswith(b"250")
    assert client.cmd("MAIL FROM:<%s>" % mailfrom) == b"250 OK\r\n"
    assert client.cmd("RCPT TO:<%s>" % rcpt) == b"250 OK\r\n"
    assert client.cmd("DATA").startswith(b"354")
    assert data_reply_ok(client, b"Subject: x\r\n\r\nbody") == (
        b"554 Transaction failed: all recipients refused by the upstream server\r\n"
    )
    assert upstream.deliveries == []
    assert relay_lines(debugstream) == (
        "got <class 'UnicodeEncodeError'>\n"
        "we got some refusals: {%r: (553, b'5.6.7 Non-ASCII address needs SMTPUTF8')}\n"
        % rcpt
    )


def test_failed_quit_does_not_turn_delivery_into_refusal(serve, proxy_for):
    """The upstream server drops the connection after accepting the message."""

    class HangUpChannel(smtpd_compat.SMTPChannel):
        def smtp_QUIT(self, arg):
            self.close()

    class HangUpServer(RecordingServer):
        channel_class = HangUpChannel

    upstream = serve(HangUpServer)
    proxy = proxy_for(server_address(upstream))
    assert transact(proxy, ["b@example.com"]) == (250, b"OK")
    assert len(upstream.deliveries) == 1


# -- an independent SMTP server upstream --------------------------------------


class EnvelopeCollector:
    """aiosmtpd handler keeping every envelope it is given."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def aiosmtpd_upstream():
    """An aiosmtpd server on 127.0.0.1, on a socket bound to an OS port."""
    from aiosmtpd.smtp import SMTP

    collector = EnvelopeCollector()
    loop = asyncio.new_event_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(collector, loop=loop), sock=sock)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[:2], collector
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_relay_to_aiosmtpd(aiosmtpd_upstream, proxy_for, decode_data):
    address, collector = aiosmtpd_upstream
    proxy = proxy_for(address, decode_data=decode_data)
    assert transact(proxy, ["b@example.com"], UTF8_MESSAGE) == (250, b"OK")
    [envelope] = collector.envelopes
    assert envelope.mail_from == "a@example.com"
    assert envelope.rcpt_tos == ["b@example.com"]
    assert envelope.mail_options == [
        "SIZE=%d" % (len(UTF8_MESSAGE) - 2 + 19),  # final CRLF: the end marker
        "BODY=8BITMIME",
    ]
    head, _, body = UTF8_MESSAGE.partition(b"\r\n\r\n")
    assert envelope.original_content == head + b"\r\nX-Peer: 127.0.0.1\r\n\r\n" + body


# -- construction -------------------------------------------------------------


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_smtputf8_is_refused(how):
    sock_map = {}
    args = [("127.0.0.1", 0), ("127.0.0.1", 25), None, sock_map]
    kwargs = {}
    if how == "keyword":
        kwargs["enable_SMTPUTF8"] = True
    else:
        args.append(True)
    with pytest.raises(ValueError) as caught:
        smtpd_compat.PureProxy(*args, **kwargs)
    assert str(caught.value) == "PureProxy does not support SMTPUTF8."
    assert sock_map == {}


# MailmanProxy too: it makes the same check for itself.
PROXIES = [smtpd_compat.PureProxy, smtpd_compat.MailmanProxy]


@pytest.mark.filterwarnings("ignore:MailmanProxy is deprecated:DeprecationWarning")
@pytest.mark.parametrize("proxy_class", PROXIES, ids=lambda cls: cls.__name__)
def test_four_positional_arguments_are_accepted(proxy_class):
    """The fifth is enable_SMTPUTF8; with four there is none to look at."""
    sock_map = {}
    proxy = proxy_class(("127.0.0.1", 0), ("127.0.0.1", 25), 1000, sock_map)
    try:
        assert list(sock_map.values()) == [proxy]
        assert proxy._remoteaddr == ("127.0.0.1", 25)
        assert proxy.data_size_limit == 1000
        assert proxy.enable_SMTPUTF8 is False
    finally:
        proxy.close()


@pytest.mark.filterwarnings("ignore:MailmanProxy is deprecated:DeprecationWarning")
@pytest.mark.parametrize("proxy_class", PROXIES, ids=lambda cls: cls.__name__)
def test_smtputf8_false_as_fifth_positional_argument_is_accepted(proxy_class):
    sock_map = {}
    proxy = proxy_class(
        ("127.0.0.1", 0), ("127.0.0.1", 25), None, sock_map, False, True
    )
    try:
        assert list(sock_map.values()) == [proxy]
        assert proxy.enable_SMTPUTF8 is False
        assert proxy._decode_data is True
    finally:
        proxy.close()


# -- side by side with CPython 3.11 -------------------------------------------

# Runs in a 3.11 interpreter with its smtpd, and here with smtpd_compat.
REFERENCE_SCRIPT = r'''
import importlib
import io
import json
import sys
import warnings


def run(smtpd, upstream, down, cases):
    """Give each case to process_message(); report _deliver() and DEBUGSTREAM."""
    results = []
    for case in cases:
        calls = []

        class Proxy(smtpd.PureProxy):
            def _deliver(self, *args, **kwargs):
                refused = super()._deliver(*args, **kwargs)
                calls.append([[repr(arg) for arg in args], sorted(kwargs), repr(refused)])
                return refused

        remote = tuple(down if case.get("down") else upstream)
        proxy = Proxy(("127.0.0.1", 0), remote, map={}, decode_data=True)
        debug = io.StringIO()
        saved, smtpd.DEBUGSTREAM = smtpd.DEBUGSTREAM, debug
        try:
            proxy.process_message(
                ("192.0.2.7", 4567), case["mailfrom"], list(case["rcpttos"]), case["data"]
            )
        finally:
            smtpd.DEBUGSTREAM = saved
            proxy.close()
        results.append({"calls": calls, "debug": debug.getvalue()})
    return results


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    module = importlib.import_module(sys.argv[1])
    print(json.dumps(run(module, *json.loads(sys.argv[2]))))
'''

REFERENCE_CASES = [
    {
        "mailfrom": "a@example.com",
        "rcpttos": ["b@example.com", "c@example.com"],
        "data": "From: a@example.com\nSubject: relay\n\nfirst\nsecond",
    },
    {
        "mailfrom": "a@example.com",
        "rcpttos": ["b@example.com", "refuse5@example.com", "refuse4@example.com"],
        "data": "Subject: some refused\n\nbody",
    },
    {
        "mailfrom": "a@example.com",
        "rcpttos": ["refuse5a@example.com", "refuse4b@example.com"],
        "data": "Subject: all refused\n\nbody",
    },
    {
        "mailfrom": "reject-data@example.com",
        "rcpttos": ["b@example.com"],
        "data": "S: 1\n\nb",
    },
    {
        "mailfrom": "defer-data@example.com",
        "rcpttos": ["b@example.com"],
        "data": "S: 1\n\nb",
    },
    {
        "mailfrom": "refuse-sender@example.com",
        "rcpttos": ["b@example.com"],
        "data": "S: 1",
    },
    {
        "mailfrom": "a@example.com",
        "rcpttos": ["b@example.com"],
        "data": "S: 1",
        "down": True,
    },
    {
        "mailfrom": "a@example.com",
        "rcpttos": ["b@example.com", "b@example.com"],
        "data": "Subject: only headers",
    },
    {
        "mailfrom": "a@example.com",
        "rcpttos": ["b@example.com"],
        "data": "\nline1\n.\nline3\rline4\r\n..five\n",
    },
    {"mailfrom": "a@example.com", "rcpttos": ["b@example.com"], "data": ""},
]


def reference_python():
    """CPython 3.11: $SMTPD_COMPAT_REFERENCE_PYTHON or the newest pyenv one."""
    python = reference_pythons.reference_python(11)
    if not python:
        pytest.fail("no CPython 3.11 found: set SMTPD_COMPAT_REFERENCE_PYTHON")
    return python


def run_reference_script(command, module, arguments, cwd, env=None):
    """Run REFERENCE_SCRIPT with ``command`` on ``module``; its JSON result."""
    done = subprocess.run(
        [*command, "-c", REFERENCE_SCRIPT, module, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_same_as_python_3_11(upstream, down_address, tmp_path):
    arguments = [server_address(upstream), down_address, REFERENCE_CASES]
    # -I: the standard library's smtpd, whatever the environment holds.
    theirs = run_reference_script(
        [reference_python(), "-I"], "smtpd", arguments, tmp_path
    )
    theirs_upstream = upstream.received()
    del upstream.deliveries[:]
    ours = run_reference_script(
        [sys.executable], "smtpd_compat", arguments, tmp_path, subprocess_env()
    )

    assert ours == theirs
    assert upstream.received() == theirs_upstream
    # What the cases did (so that the comparison compares something).
    assert [result["debug"].splitlines()[0] for result in ours] == [
        "we got some refusals: {}",
        (
            "we got some refusals: {'refuse5@example.com': (550, b'No such user here'),"
            " 'refuse4@example.com': (450, b'Mailbox busy, try later')}"
        ),
        "got SMTPRecipientsRefused",
        "got <class 'smtplib.SMTPDataError'>",
        "got <class 'smtplib.SMTPDataError'>",
        "got <class 'smtplib.SMTPSenderRefused'>",
        "got <class 'ConnectionRefusedError'>",
        "we got some refusals: {}",
        "we got some refusals: {}",
        "we got some refusals: {}",
    ]
    assert len(theirs_upstream) == 7
    assert (
        theirs_upstream[-2][2] == b"X-Peer: 192.0.2.7\n\nline1\n.\nline3\nline4\n..five"
    )
