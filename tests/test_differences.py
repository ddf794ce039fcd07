"""Deliberate differences from Python 3.11's smtpd.

In each case 3.11 crashes the channel, hangs, loses or mis-delivers mail.
smtpd_compat answers instead, and every test checks that the very same
connection keeps working afterwards.
"""

import socket
import struct
import sys
import time

import pytest
from conftest import RecordingServer, data_reply_ok, do_transaction, wait_for

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


@pytest.mark.parametrize(
    "params", ["SIZE", "SIZE=\u00b2", "SIZE=\u0663", "SIZE=1\u00b2"]
)
def test_mail_bad_size_value(client, params):
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> " + params) == MAIL_SYNTAX_EXT
    assert_usable(client)
    assert client.cmd("MAIL FROM:<a@b> SIZE=10") == OK


# --- DATA that is not UTF-8 with decode_data=True, split characters -------------


def test_decode_data_invalid_utf8_body(serve, connect):
    server = serve(decode_data=True)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    reply = data_reply_ok(client, b"caf\xe9\r\n\xff")
    assert reply.startswith(b"5")
    assert server.deliveries == []
    assert_usable(client)
    assert client.cmd("RCPT TO:<c@d>") == NEED_MAIL
    assert do_transaction(client, greet=None, body="ok \u00e9".encode("utf-8")) == OK
    assert [d.data for d in server.deliveries] == ["ok \u00e9"]


@pytest.mark.parametrize("decode_data", [False, True])
def test_utf8_split_across_sends(serve, connect, decode_data):
    server = serve(decode_data=decode_data)
    client = connect(server)
    client.cmd("HELO x")
    line = "MAIL FROM:<j\u00f6rg@example.com>\r\n".encode("utf-8")
    cut = line.index(b"\xc3") + 1
    client.send(line[:cut])
    time.sleep(0.05)
    client.send(line[cut:])
    assert client.read_reply() == OK
    assert client.cmd("RCPT TO:<r@example.com>") == OK
    assert client.cmd("DATA") == START_DATA
    body = "caf\u00e9 \u65e5\u672c\r\n.\r\n".encode("utf-8")
    # cut inside the two-byte and inside the three-byte character
    assert body[3:5] == b"\xc3\xa9" and body[6:9] == "\u65e5".encode("utf-8")
    client.send(body[:4])
    time.sleep(0.05)
    client.send(body[4:8])
    time.sleep(0.05)
    client.send(body[8:])
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


def test_command_size_limits_class_attribute():
    limits = smtpd_compat.SMTPChannel.command_size_limits
    assert limits["MAIL"] == 512 or "MAIL" not in limits
    assert smtpd_compat.SMTPChannel.command_size_limit == 512


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


@pytest.mark.parametrize(
    "result",
    [
        RuntimeError("boom"),
        ValueError("bad"),
        b"250 OK",
        123,
        "250 gr\u00fc\u00df dich",
    ],
)
def test_process_message_failures(serve, connect, capsys, result):
    server = serve(FailingServer)
    server.result = result
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"x") == LOCAL_ERROR
    assert client.cmd("RCPT TO:<c@d>") == NEED_MAIL
    assert_usable(client)
    server.result = None
    assert do_transaction(client, greet=None) == OK
    assert len(server.deliveries) == 2


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
    assert_usable(client)
    assert do_transaction(client) == OK


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
