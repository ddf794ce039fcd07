"""Deliberate differences from Python 3.11's smtpd.

In each case 3.11 crashes the channel, hangs, loses or mis-delivers mail.
smtpd_compat answers instead, and every test checks that the very same
connection keeps working afterwards.
"""

import re
import socket
import struct
import sys

import pytest
from conftest import (
    ReadCountingServer,
    RecordingServer,
    data_reply_ok,
    do_transaction,
    send_in_separate_reads,
    wait_for,
)

import smtpd_compat

OK = b"250 OK\r\n"
BAD_SYNTAX = b"500 Error: bad syntax\r\n"
TOO_LONG = b"500 Error: line too long\r\n"
START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
NEED_MAIL = b"503 Error: need MAIL command\r\n"
LOCAL_ERROR = b"451 Requested action aborted: local error in processing\r\n"
MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address>\r\n"
MAIL_SYNTAX_EXT = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
RCPT_SYNTAX = b"501 Syntax: RCPT TO: <address>\r\n"
RCPT_SYNTAX_EXT = b"501 Syntax: RCPT TO: <address> [SP <mail-parameters>]\r\n"


def assert_usable(client):
    assert client.cmd("NOOP") == OK


# --- command lines that are not valid UTF-8 ---------------------------------


@pytest.mark.parametrize("decode_data", [False, True])
@pytest.mark.parametrize(
    "line",
    [
        b"HELO caf\xe9",
        b"NOOP \xff",
        b"MAIL FROM:<\xff@example.com>",
        b"\xff\xfe",
        "\u00c9HLO x".encode("utf-8"),
        "X\u2603 y".encode("utf-8"),
    ],
)
def test_bad_command_bytes(serve, connect, decode_data, line):
    client = connect(serve(decode_data=decode_data))
    assert client.cmd(line) == BAD_SYNTAX
    assert_usable(client)
    assert client.cmd("HELO x").startswith(b"250 ")


def test_bad_bytes_after_greeting(serve, connect):
    server = serve()
    client = connect(server)
    client.cmd("EHLO x")
    assert client.cmd(b"MAIL FROM:<a@b> X=\xff") == BAD_SYNTAX
    assert client.cmd(b"RCPT TO:<\xe9@b>") == BAD_SYNTAX
    assert do_transaction(client, greet=None) == OK
    assert len(server.deliveries) == 1


@pytest.mark.parametrize("decode_data", [False, True])
def test_bad_bytes_in_overlong_line(serve, connect, decode_data):
    client = connect(serve(decode_data=decode_data))
    assert client.cmd(b"NOOP " + b"\xff" * 600) == TOO_LONG
    assert client.cmd(b"HELO " + b"caf\xe9" * 200) == TOO_LONG
    assert_usable(client)


# --- replies that would echo control characters -------------------------------


@pytest.mark.parametrize("enable_SMTPUTF8", [False, True])
@pytest.mark.parametrize(
    "line",
    [
        # 3.11 echoed the bare LF: the client read a second reply, "250 OK"
        b"FOO\n250 OK",
        b"FOO\r250 OK",
        b"FOO\r\r\n250 OK",
        b"X\x00Y",
        b"X\x1bY",
        b"X\x7fY",
    ],
)
def test_control_characters_are_not_echoed(serve, connect, enable_SMTPUTF8, line):
    client = connect(serve(enable_SMTPUTF8=enable_SMTPUTF8))
    if b"\r\r\n" in line:
        # The first CRLF ends the command line (b"FOO\r"); the rest is one more.
        client.send(line + b"\r\n")
        assert client.read_reply() == BAD_SYNTAX
        assert client.read_reply() == b'500 Error: command "250" not recognized\r\n'
    else:
        assert client.cmd(line) == BAD_SYNTAX
    client.send(b"NOOP\r\n")
    # Nothing else came before the NOOP's reply: no forged line.
    assert client.read_reply() == OK
    assert client.buffer == b""


# --- addresses the email parser cannot read ------------------------------------

BAD_ADDRESSES = [
    "<",
    "@",
    "a@",
    "<a@>",
    "a@b@c",
    "<<a@b>>",
    "[1.2.3.4]",
    "a@b.",
    '"',
    "a@b .;1,",
]


@pytest.mark.parametrize(
    "greeting,reply", [("HELO", MAIL_SYNTAX), ("EHLO", MAIL_SYNTAX_EXT)]
)
@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_mail_unparsable_address(server, client, greeting, reply, address):
    client.cmd(greeting + " x")
    assert client.cmd("MAIL FROM:" + address) == reply
    assert_usable(client)
    # No sender was recorded.
    assert client.cmd("RCPT TO:<a@b>") == NEED_MAIL
    assert do_transaction(client, greet=None) == OK


@pytest.mark.parametrize(
    "greeting,reply", [("HELO", RCPT_SYNTAX), ("EHLO", RCPT_SYNTAX_EXT)]
)
@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_rcpt_unparsable_address(server, client, greeting, reply, address):
    client.cmd(greeting + " x")
    assert client.cmd("MAIL FROM:<s@example.com>") == OK
    assert client.cmd("RCPT TO:" + address) == reply
    assert_usable(client)
    assert client.cmd("DATA") == b"503 Error: need RCPT command\r\n"
    assert client.cmd("RCPT TO:<r@example.com>") == OK
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"x") == OK
    assert server.deliveries[0].rcpttos == ["r@example.com"]


@pytest.mark.parametrize("address", ["<", "<a@>", "<<a@b>>", '"'])
def test_vrfy_unparsable_address(client, address):
    assert client.cmd("VRFY " + address) == b"501 Syntax: VRFY <address>\r\n"
    assert_usable(client)


# --- SIZE parameter --------------------------------------------------------------


@pytest.mark.parametrize("params", ["SIZE", "SIZE=\u00b2", "SIZE=1\u00b2"])
def test_mail_bad_size_value(client, params):
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> " + params) == MAIL_SYNTAX_EXT
    assert_usable(client)
    assert client.cmd("MAIL FROM:<a@b> SIZE=10") == OK


@pytest.mark.parametrize("digits", ["\u0661\u0662", "\uff11\uff12", "12"])
def test_mail_size_in_any_decimal_digits_is_read_as_python_did(serve, connect, digits):
    # int() reads every Unicode decimal digit; 3.11 took SIZE=١٢ as 12.
    client = connect(serve(data_size_limit=12))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SIZE=" + digits) == OK
    client.cmd("RSET")
    too_big = digits[:-1] + chr(ord(digits[-1]) + 1)
    assert client.cmd("MAIL FROM:<a@b> SIZE=" + too_big) == (
        b"552 Error: message size exceeds fixed maximum message size\r\n"
    )


# --- DATA that is not UTF-8 with decode_data=True, split characters -------------


def test_decode_data_invalid_utf8_body(serve, connect):
    server = serve(decode_data=True)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    reply = data_reply_ok(client, b"caf\xe9\r\n\xff")
    assert reply == b"554 Error: message data is not valid UTF-8\r\n"
    assert server.deliveries == []
    assert_usable(client)
    assert client.cmd("RCPT TO:<c@d>") == NEED_MAIL
    assert do_transaction(client, greet=None, body="ok \u00e9".encode("utf-8")) == OK
    assert [d.data for d in server.deliveries] == ["ok \u00e9"]


@pytest.mark.parametrize("decode_data", [False, True])
def test_utf8_split_across_reads(serve, connect, decode_data):
    """Each piece reaches the server in reads of its own (it is not sent
    until the server has read the one before)."""
    server = serve(ReadCountingServer, decode_data=decode_data)
    client = connect(server)
    client.cmd("HELO x")
    line = "MAIL FROM:<j\u00f6rg@example.com>\r\n".encode("utf-8")
    cut = line.index(b"\xc3") + 1
    send_in_separate_reads(client, server, line[:cut], line[cut:])
    assert client.read_reply() == OK
    assert client.cmd("RCPT TO:<r@example.com>") == OK
    assert client.cmd("DATA") == START_DATA
    body = "caf\u00e9 \u65e5\u672c\r\n.\r\n".encode("utf-8")
    # cut inside the two-byte and inside the three-byte character
    assert body[3:5] == b"\xc3\xa9" and body[6:9] == "\u65e5".encode("utf-8")
    send_in_separate_reads(client, server, body[:4], body[4:8], body[8:])
    assert client.read_reply() == OK
    [delivery] = server.deliveries
    assert delivery.mailfrom == "j\u00f6rg@example.com"
    expected = "caf\u00e9 \u65e5\u672c"
    assert delivery.data == (expected if decode_data else expected.encode("utf-8"))
    assert_usable(client)


# --- empty message ----------------------------------------------------------------


@pytest.mark.parametrize("decode_data", [False, True])
def test_empty_message(serve, connect, decode_data):
    server = serve(decode_data=decode_data)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    assert client.cmd(".") == OK
    [delivery] = server.deliveries
    assert delivery.data == ("" if decode_data else b"")
    assert_usable(client)


def test_empty_message_pipelined(server, client):
    client.send(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nNOOP\r\n")
    replies = [client.read_reply() for _ in range(6)]
    assert replies[1:] == [OK, OK, START_DATA, OK, OK]
    assert server.deliveries[0].data == b""


# --- after "552 Too much mail data" -------------------------------------------------


def test_state_after_too_much_data(serve, connect):
    server = serve(data_size_limit=50)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"z" * 51) == b"552 Error: Too much mail data\r\n"
    assert client.cmd("NOOP") == OK
    assert client.cmd("RCPT TO:<x@y>") == NEED_MAIL
    assert client.cmd("DATA") == b"503 Error: need RCPT command\r\n"
    assert (
        do_transaction(
            client, greet=None, mailfrom="n@b", rcpts=("m@d",), body=b"small"
        )
        == OK
    )
    assert [(d.mailfrom, d.rcpttos, d.data) for d in server.deliveries] == [
        ("n@b", ["m@d"], b"small")
    ]


# --- QUIT ends the session --------------------------------------------------------------


def test_nothing_runs_after_quit(server, client):
    client.cmd("HELO x")
    client.send(
        b"QUIT\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
        b"Subject: sneaky\r\n\r\nbody\r\n.\r\nNOOP\r\n"
    )
    assert client.read_until_eof() == b"221 Bye\r\n"
    assert server.deliveries == []


# --- rcpt_options of refused recipients ---------------------------------------------


def test_refused_rcpt_options_not_passed(server, client):
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<s@x>") == OK
    assert client.cmd("RCPT TO:<a@b>") == OK
    assert client.cmd("RCPT TO:<b@c> FOO=1") == (
        b"555 RCPT TO parameters not recognized or not implemented\r\n"
    )
    assert client.cmd("RCPT TO:<c@d> A=") == RCPT_SYNTAX_EXT
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"x") == OK
    [delivery] = server.deliveries
    assert delivery.rcpttos == ["a@b"]
    assert delivery.kwargs == {"mail_options": [], "rcpt_options": []}
    assert_usable(client)


# --- command size limits are per channel -----------------------------------------------


def mail_line(length):
    local = "x" * (length - len("MAIL FROM:<@example.com>"))
    return "MAIL FROM:<%s@example.com>" % local


def test_command_size_limits_per_channel(server, connect):
    first = connect(server)
    assert first.cmd("EHLO first").startswith(b"250-")
    second = connect(server)
    assert second.cmd("HELO second").startswith(b"250 ")
    assert first.cmd(mail_line(530)) == OK
    assert second.cmd(mail_line(530)) == TOO_LONG
    assert second.cmd(mail_line(512)) == OK
    third = connect(server)
    assert third.cmd("EHLO third").startswith(b"250-")
    assert third.cmd(mail_line(538)) == OK
    first.cmd("RSET")
    assert first.cmd(mail_line(538)) == OK
    assert_usable(first)


def test_command_size_limits_class_attribute(server, connect):
    """The class table is still there, and sessions leave it alone."""
    limits = smtpd_compat.SMTPChannel.command_size_limits
    assert smtpd_compat.SMTPChannel.command_size_limit == 512
    assert limits.default_factory() == 512
    before = dict(limits)  # never limits[...]: that would add the key
    client = connect(server)
    assert client.cmd("EHLO x").startswith(b"250-")  # SIZE: MAIL may grow by 26
    assert client.cmd(mail_line(538)) == OK
    assert dict(limits) == before


def test_command_size_table_stops_growing(server, connect):
    """Python's smtpd stored a limit for every verb a client sent; the table
    keeps 256 of them, and the limits in it still hold when it is full."""
    client = connect(server)
    assert client.cmd("EHLO x").startswith(b"250-")  # MAIL: 512 + 26
    [channel] = [
        d for d in list(server._map.values()) if isinstance(d, smtpd_compat.SMTPChannel)
    ]
    verbs = ["XV%03d" % number for number in range(300)]
    client.send("".join(verb + "\r\n" for verb in verbs).encode())
    for verb in verbs:
        assert client.read_reply() == (
            b'500 Error: command "%s" not recognized\r\n' % verb.encode()
        )
    limits = channel.command_size_limits
    assert len(limits) == 256
    assert limits["MAIL"] == 538
    assert "XV254" in limits and "XV255" not in limits
    unknown = b'500 Error: command "XNEW" not recognized\r\n'
    assert client.cmd("XNEW " + "y" * 507) == unknown  # 512 bytes
    assert client.cmd("XNEW " + "y" * 508) == TOO_LONG
    assert len(limits) == 256
    assert client.cmd(mail_line(538)) == OK


def test_ehlo_twice_on_other_connections_does_not_grow_limit(server, connect):
    clients = [connect(server) for _ in range(3)]
    for client in clients:
        client.cmd("EHLO x")
    assert clients[0].cmd(mail_line(538)) == OK
    clients[0].cmd("RSET")
    assert clients[0].cmd(mail_line(539)) == TOO_LONG


# --- process_message signatures and results --------------------------------------------


class NoKwargsServer(smtpd_compat.SMTPServer):
    def __init__(self, *args, **kwargs):
        self.got = []
        smtpd_compat.SMTPServer.__init__(self, *args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data):
        self.got.append((mailfrom, rcpttos, data))


def test_process_message_without_kwargs(serve, connect):
    server = serve(NoKwargsServer)
    client = connect(server)
    assert do_transaction(client, greet=b"EHLO x") == OK
    assert server.got == [("a@example.com", ["b@example.com"], b"Subject: hi\n\nhello")]
    assert_usable(client)


class FailingServer(RecordingServer):
    result = None

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        RecordingServer.process_message(self, peer, mailfrom, rcpttos, data, **kwargs)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


#: asyncore's report of an exception, as the default handle_error() writes
#: it (with log_info, on stdout); smtpd_compat keeps the connection open
#: all the same.
REPORT = re.compile(
    r"error: uncaptured python exception, closing channel"
    r" <(?P<channel>[\w.]+) connected 127\.0\.0\.1:\d+ at 0x[0-9a-f]+>"
    r" \((?P<kind><class '[\w.]+'>):(?P<value>.*?)"
    r" (?P<where>\[[^]]+\](?: \[[^]]+\])*)\)\n\Z"
)


def assert_one_report(capsys, channel, kind, value):
    # The 451 reply may leave before handle_error() writes its report.
    out, err = [], []

    def report_line_written():
        captured = capsys.readouterr()
        out.append(captured.out)
        err.append(captured.err)
        return "".join(out).endswith("\n")

    assert wait_for(report_line_written)
    assert "".join(err) == ""
    match = REPORT.match("".join(out))
    assert match, out
    assert (match["channel"], match["kind"], match["value"]) == (channel, kind, value)


def _start_data(client):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA


class AddsBytes:
    """A reply object whose ``+ "\\r\\n"`` gives bytes."""

    def __add__(self, other):
        return b"250 OK" + other.encode()


class AddsText:
    """A reply object whose ``+ "\\r\\n"`` gives the reply's text."""

    def __add__(self, other):
        return "250 Taken as text" + other


class AddsTextWithoutLineEnd:
    """The same, leaving out what it is given: the reply gets its CRLF."""

    def __add__(self, other):
        return "250 Taken as text"


@pytest.mark.parametrize("result", [AddsText(), AddsTextWithoutLineEnd()])
def test_reply_object_that_adds_up_to_text_is_sent(serve, connect, result):
    """Python's smtpd sent bytes(status + "\\r\\n"): such an object worked."""
    server = serve(FailingServer)
    server.result = result
    client = connect(server)
    _start_data(client)
    assert client.cmd("body\r\n.") == b"250 Taken as text\r\n"
    assert client.cmd("NOOP") == b"250 OK\r\n"


@pytest.mark.parametrize(
    "result,kind,value",
    [
        (RuntimeError("boom"), "<class 'RuntimeError'>", "boom"),
        (ValueError("bad"), "<class 'ValueError'>", "bad"),
        # The exceptions Python's smtpd raised while building these
        # replies, to the letter.
        (b"250 OK", "<class 'TypeError'>", "can't concat str to bytes"),
        (
            123,
            "<class 'TypeError'>",
            "unsupported operand type(s) for +: 'int' and 'str'",
        ),
        (AddsBytes(), "<class 'TypeError'>", "encoding without a string argument"),
        (
            "250 gr\u00fc\u00df dich",
            "<class 'UnicodeEncodeError'>",
            (
                "'ascii' codec can't encode characters in position 6-7: "
                "ordinal not in range(128)"
            ),
        ),
        (
            "250 ok\n250 forged",
            "<class 'ValueError'>",
            "process_message() returned an unsendable reply: '250 ok\\n250 forged'",
        ),
    ],
)
def test_process_message_failures(serve, connect, capsys, result, kind, value):
    server = serve(FailingServer)
    server.result = result
    client = connect(server)
    _start_data(client)
    assert data_reply_ok(client, b"x") == LOCAL_ERROR
    assert_one_report(capsys, "smtpd_compat.SMTPChannel", kind, value)
    assert client.cmd("RCPT TO:<c@d>") == NEED_MAIL
    assert_usable(client)
    server.result = None
    assert do_transaction(client, greet=None) == OK
    assert len(server.deliveries) == 2
    assert capsys.readouterr() == ("", "")


def test_utf8_status_in_smtputf8_transaction(serve, connect):
    """3.11 reset SMTPUTF8 before sending the status, and then crashed."""
    server = serve(FailingServer, enable_SMTPUTF8=True)
    server.result = "250 Accept\u00e9"
    client = connect(server)
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SMTPUTF8") == OK
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"x") == "250 Accept\u00e9\r\n".encode("utf-8")
    assert len(server.deliveries) == 1
    # The next transaction does not use SMTPUTF8: the same status cannot be
    # sent, and is refused before the client is told anything else.
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"x") == LOCAL_ERROR
    assert_usable(client)


class ErrorSeeingChannel(smtpd_compat.SMTPChannel):
    seen = []

    def handle_error(self):
        ErrorSeeingChannel.seen.append(sys.exc_info()[0])


class ErrorSeeingServer(FailingServer):
    channel_class = ErrorSeeingChannel


def test_handle_error_sees_exception(serve, connect):
    ErrorSeeingChannel.seen = []
    server = serve(ErrorSeeingServer)
    server.result = RuntimeError("boom")
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"x") == LOCAL_ERROR
    assert_usable(client)
    assert ErrorSeeingChannel.seen == [RuntimeError]


class CrashingCommandChannel(smtpd_compat.SMTPChannel):
    def smtp_CRASH(self, arg):
        raise KeyError(arg)


class CrashingCommandServer(RecordingServer):
    channel_class = CrashingCommandChannel


def test_failing_custom_command_keeps_connection(serve, connect, capsys):
    server = serve(CrashingCommandServer)
    client = connect(server)
    assert client.cmd("CRASH now") == LOCAL_ERROR
    assert_one_report(
        capsys, "test_differences.CrashingCommandChannel", "<class 'KeyError'>", "'now'"
    )
    assert_usable(client)
    assert do_transaction(client) == OK
    assert capsys.readouterr() == ("", "")


# --- abrupt disconnects ------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True])
def test_disconnect_mid_data(server, connect, reset):
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    client.send(b"Subject: half\r\n\r\nthe first half of the")
    if reset:
        client.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    client.close()
    # The server drops the channel and keeps serving.
    assert wait_for(lambda: len(server._map) == 1)
    other = connect(server)
    assert do_transaction(other) == OK
    assert [d.data for d in server.deliveries] == [b"Subject: hi\n\nhello"]
