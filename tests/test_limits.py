"""Command-line and message-size limits."""

import pytest
from conftest import ReadCountingServer, data_reply_ok, send_in_separate_reads

import smtpd_compat

OK = b"250 OK\r\n"
TOO_LONG = b"500 Error: line too long\r\n"
TOO_MUCH = b"552 Error: Too much mail data\r\n"
SIZE_EXCEEDED = b"552 Error: message size exceeds fixed maximum message size\r\n"


def mail_line(length, params=""):
    """A ``MAIL FROM:<...@example.com>[ params]`` line of exactly ``length`` bytes."""
    fixed = len("MAIL FROM:<@example.com>") + (len(params) + 1 if params else 0)
    local = "x" * (length - fixed)
    line = "MAIL FROM:<%s@example.com>" % local
    if params:
        line += " " + params
    assert len(line) == length
    return line


def test_class_attribute():
    assert smtpd_compat.SMTPChannel.command_size_limit == 512


def test_helo_mail_line_at_limit(client):
    client.cmd("HELO x")
    assert client.cmd(mail_line(512)) == OK


def test_helo_mail_line_over_limit(client):
    client.cmd("HELO x")
    assert client.cmd(mail_line(513)) == TOO_LONG
    # The over-long line had no effect and the connection is usable.
    assert client.cmd("NOOP") == OK
    assert client.cmd(mail_line(100)) == OK


def test_noop_line_limit(client):
    assert client.cmd("NOOP " + "y" * 507) == b"501 Syntax: NOOP\r\n"
    assert client.cmd("NOOP " + "y" * 508) == TOO_LONG


def test_very_long_line(client):
    assert client.cmd("NOOP " + "z" * 100000) == TOO_LONG
    assert client.cmd("NOOP") == OK


def test_line_limit_before_greeting(client):
    assert client.cmd(mail_line(513)) == TOO_LONG


def test_ehlo_with_size_extends_mail_limit(client):
    client.cmd("EHLO x")
    assert client.cmd(mail_line(538)) == OK
    client.cmd("RSET")
    assert client.cmd(mail_line(539)) == TOO_LONG


def test_ehlo_mail_params_within_limit(client):
    client.cmd("EHLO x")
    assert client.cmd(mail_line(538, "SIZE=100 BODY=8BITMIME")) == OK


def test_ehlo_other_commands_keep_512(client):
    client.cmd("EHLO x")
    assert client.cmd("NOOP " + "y" * 507) == b"501 Syntax: NOOP\r\n"
    assert client.cmd("NOOP " + "y" * 508) == TOO_LONG
    client.cmd("MAIL FROM:<a@b>")
    assert client.cmd("RCPT TO:<%s@example.com>" % ("r" * (512 - 22))) == OK
    assert client.cmd("RCPT TO:<%s@example.com>" % ("r" * (513 - 22))) == TOO_LONG


def test_ehlo_smtputf8_extends_mail_limit(serve, connect):
    client = connect(serve(enable_SMTPUTF8=True))
    client.cmd("EHLO x")
    assert client.cmd(mail_line(548)) == OK
    client.cmd("RSET")
    assert client.cmd(mail_line(549)) == TOO_LONG


def test_ehlo_smtputf8_without_size(serve, connect):
    client = connect(serve(enable_SMTPUTF8=True, data_size_limit=None))
    client.cmd("EHLO x")
    assert client.cmd(mail_line(522)) == OK
    client.cmd("RSET")
    assert client.cmd(mail_line(523)) == TOO_LONG


def test_ehlo_without_size_keeps_512(serve, connect):
    client = connect(serve(data_size_limit=None))
    client.cmd("EHLO x")
    assert client.cmd(mail_line(512)) == OK
    client.cmd("RSET")
    assert client.cmd(mail_line(513)) == TOO_LONG


def test_helo_does_not_extend(serve, connect):
    client = connect(serve(enable_SMTPUTF8=True))
    client.cmd("HELO x")
    assert client.cmd(mail_line(513)) == TOO_LONG


# --- data_size_limit --------------------------------------------------------


def start_data(client, greeting="HELO x"):
    client.cmd(greeting)
    assert client.cmd("MAIL FROM:<a@b>") == OK
    assert client.cmd("RCPT TO:<c@d>") == OK
    assert client.cmd("DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"


def test_data_exactly_at_limit(serve, connect):
    server = serve(data_size_limit=100)
    client = connect(server)
    start_data(client)
    body = b"a" * 48 + b"\r\n" + b"b" * 50
    assert len(body) == 100
    assert data_reply_ok(client, body) == OK
    assert server.deliveries[0].data == b"a" * 48 + b"\n" + b"b" * 50


def test_data_one_over_limit(serve, connect):
    server = serve(data_size_limit=100)
    client = connect(server)
    start_data(client)
    body = b"a" * 48 + b"\r\n" + b"b" * 51
    assert data_reply_ok(client, body) == TOO_MUCH
    assert server.deliveries == []


def test_data_over_limit_after_a_read_that_reached_it(serve, connect):
    """A read that brings the message to exactly the limit, and another with
    one byte more: too much (not a message cut at the limit)."""
    server = serve(ReadCountingServer, data_size_limit=100)
    client = connect(server)
    start_data(client)
    send_in_separate_reads(client, server, b"a" * 100, b"b")
    assert client.cmd(b"\r\n.") == TOO_MUCH
    assert server.deliveries == []


def test_data_far_over_limit(serve, connect):
    server = serve(data_size_limit=1000)
    client = connect(server)
    start_data(client)
    body = (b"x" * 78 + b"\r\n") * 2000
    assert data_reply_ok(client, body) == TOO_MUCH
    assert server.deliveries == []


def test_data_limit_counts_transparent_dots(serve, connect):
    # The limit applies to what the client sends, before dot-unstuffing.
    server = serve(data_size_limit=10)
    client = connect(server)
    start_data(client)
    assert data_reply_ok(client, b"..........") == OK
    assert server.deliveries[0].data == b"........."


def test_mail_size_param_at_limit(serve, connect):
    client = connect(serve(data_size_limit=100))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SIZE=100") == OK


def test_mail_size_param_over_limit(serve, connect):
    client = connect(serve(data_size_limit=100))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SIZE=101") == SIZE_EXCEEDED
    assert client.cmd("MAIL FROM:<a@b> SIZE=99") == OK


def test_mail_size_param_default_limit(client):
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SIZE=33554433") == SIZE_EXCEEDED
    assert client.cmd("MAIL FROM:<a@b> SIZE=33554432") == OK


@pytest.mark.parametrize("limit", [None, 0])
def test_no_data_size_limit(serve, connect, limit):
    server = serve(data_size_limit=limit)
    client = connect(server)
    assert b"SIZE" not in client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SIZE=99999999999999") == OK
    assert client.cmd("RCPT TO:<c@d>") == OK
    assert client.cmd("DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    body = (b"y" * 998 + b"\r\n") * 2000
    assert data_reply_ok(client, body) == OK
    data = server.deliveries[0].data
    # the body ended in CRLF, so the message ends in a newline
    assert len(data) == 999 * 2000
    assert data == (b"y" * 998 + b"\n") * 2000
