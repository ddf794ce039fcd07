"""Reply bytes of every SMTP command, as produced by Python 3.11's smtpd."""

import pytest
from conftest import FQDN, GREETING, RecordingServer, data_reply_ok

import smtpd_compat

FQDN_B = FQDN.encode("ascii")

OK = b"250 OK\r\n"
START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
HELO_FIRST = b"503 Error: send HELO first\r\n"
SUPPORTED = b"EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address>\r\n"
MAIL_SYNTAX_EXT = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
RCPT_SYNTAX = b"501 Syntax: RCPT TO: <address>\r\n"
RCPT_SYNTAX_EXT = b"501 Syntax: RCPT TO: <address> [SP <mail-parameters>]\r\n"


def ehlo_reply(size=33554432, eightbit=True, utf8=False):
    lines = [b"250-" + FQDN_B]
    if size:
        lines.append(b"250-SIZE %d" % size)
    if eightbit:
        lines.append(b"250-8BITMIME")
    if utf8:
        lines.append(b"250-SMTPUTF8")
    lines.append(b"250 HELP")
    return b"".join(line + b"\r\n" for line in lines)


# --- greeting, HELO, EHLO -------------------------------------------------


def test_greeting(client):
    assert client.greeting == GREETING
    assert client.greeting == b"220 " + FQDN_B + b" Python SMTP proxy version 0.3\r\n"


def test_helo(client):
    assert client.cmd("HELO example.org") == b"250 " + FQDN_B + b"\r\n"


def test_helo_lowercase_command(client):
    assert client.cmd("helo example.org") == b"250 " + FQDN_B + b"\r\n"


def test_helo_without_argument(client):
    assert client.cmd("HELO") == b"501 Syntax: HELO hostname\r\n"
    # The failed HELO does not count as a greeting.
    assert client.cmd("HELO example.org") == b"250 " + FQDN_B + b"\r\n"


def test_ehlo_without_argument(client):
    assert client.cmd("EHLO") == b"501 Syntax: EHLO hostname\r\n"
    # nothing else was sent, and no session started
    assert client.cmd("NOOP") == b"250 OK\r\n"
    assert client.cmd("MAIL FROM:<a@b>") == b"503 Error: send HELO first\r\n"


def test_ehlo_default_server(client):
    assert client.cmd("EHLO example.org") == ehlo_reply()


@pytest.mark.parametrize("limit", [None, 0])
def test_ehlo_without_size(serve, connect, limit):
    client = connect(serve(data_size_limit=limit))
    assert client.cmd("EHLO example.org") == ehlo_reply(size=None)


def test_ehlo_custom_size(serve, connect):
    client = connect(serve(data_size_limit=1234))
    assert client.cmd("EHLO example.org") == ehlo_reply(size=1234)


def test_ehlo_decode_data(serve, connect):
    client = connect(serve(decode_data=True))
    assert client.cmd("EHLO example.org") == ehlo_reply(eightbit=False)


def test_ehlo_smtputf8(serve, connect):
    client = connect(serve(enable_SMTPUTF8=True))
    assert client.cmd("EHLO example.org") == ehlo_reply(utf8=True)


def test_ehlo_every_option_off(serve, connect):
    client = connect(serve(data_size_limit=None, decode_data=True))
    assert client.cmd("EHLO x") == (b"250-" + FQDN_B + b"\r\n250 HELP\r\n")


@pytest.mark.parametrize(
    "first,second",
    [("HELO", "HELO"), ("HELO", "EHLO"), ("EHLO", "HELO"), ("EHLO", "EHLO")],
)
def test_duplicate_greeting(client, first, second):
    assert client.cmd(first + " one").startswith(b"250")
    assert client.cmd(second + " two") == b"503 Duplicate HELO/EHLO\r\n"


def test_duplicate_greeting_after_rset(client):
    assert client.cmd("HELO one").startswith(b"250")
    assert client.cmd("RSET") == OK
    assert client.cmd("HELO two") == b"503 Duplicate HELO/EHLO\r\n"


# --- NOOP, QUIT, RSET -----------------------------------------------------


def test_noop(client):
    assert client.cmd("NOOP") == OK


def test_noop_with_argument(client):
    assert client.cmd("NOOP hello") == b"501 Syntax: NOOP\r\n"


def test_quit(client):
    assert client.cmd("QUIT") == b"221 Bye\r\n"
    assert client.read_until_eof() == b""


def test_quit_with_argument(client):
    assert client.cmd("QUIT now please") == b"221 Bye\r\n"
    assert client.read_until_eof() == b""


def test_quit_after_helo(client):
    client.cmd("HELO x")
    assert client.cmd("quit") == b"221 Bye\r\n"
    assert client.read_until_eof() == b""


def test_rset(client):
    assert client.cmd("RSET") == OK


def test_rset_with_argument(client):
    assert client.cmd("RSET hi") == b"501 Syntax: RSET\r\n"


def test_rset_clears_envelope_keeps_greeting(client, server):
    client.cmd("HELO x")
    assert client.cmd("MAIL FROM:<a@b>") == OK
    assert client.cmd("RCPT TO:<c@d>") == OK
    assert client.cmd("RSET") == OK
    assert client.cmd("RCPT TO:<c@d>") == b"503 Error: need MAIL command\r\n"
    assert client.cmd("MAIL FROM:<e@f>") == OK
    assert client.cmd("DATA") == b"503 Error: need RCPT command\r\n"
    assert client.cmd("RCPT TO:<g@h>") == OK
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"body") == OK
    assert [(d.mailfrom, d.rcpttos) for d in server.deliveries] == [("e@f", ["g@h"])]


# --- HELP -------------------------------------------------------------------


def test_help(client):
    assert client.cmd("HELP") == b"250 Supported commands: " + SUPPORTED + b"\r\n"


def test_help_unknown_topic(client):
    assert client.cmd("HELP XYZZY") == b"501 Supported commands: " + SUPPORTED + b"\r\n"


@pytest.mark.parametrize(
    "topic,reply",
    [
        ("EHLO", b"250 Syntax: EHLO hostname"),
        ("HELO", b"250 Syntax: HELO hostname"),
        ("MAIL", b"250 Syntax: MAIL FROM: <address>"),
        ("RCPT", b"250 Syntax: RCPT TO: <address>"),
        ("DATA", b"250 Syntax: DATA"),
        ("RSET", b"250 Syntax: RSET"),
        ("NOOP", b"250 Syntax: NOOP"),
        ("QUIT", b"250 Syntax: QUIT"),
        ("VRFY", b"250 Syntax: VRFY <address>"),
        ("mail", b"250 Syntax: MAIL FROM: <address>"),
        ("vrfy", b"250 Syntax: VRFY <address>"),
    ],
)
def test_help_topics(client, topic, reply):
    assert client.cmd("HELP " + topic) == reply + b"\r\n"


@pytest.mark.parametrize("greeting", ["HELO", "EHLO"])
def test_help_mail_rcpt_extended(client, greeting):
    client.cmd(greeting + " x")
    suffix = b" [SP <mail-parameters>]" if greeting == "EHLO" else b""
    assert (
        client.cmd("HELP MAIL")
        == b"250 Syntax: MAIL FROM: <address>" + suffix + b"\r\n"
    )
    assert (
        client.cmd("HELP RCPT") == b"250 Syntax: RCPT TO: <address>" + suffix + b"\r\n"
    )
    assert client.cmd("HELP DATA") == b"250 Syntax: DATA\r\n"


# --- VRFY, EXPN -------------------------------------------------------------


def test_vrfy_without_argument(client):
    assert client.cmd("VRFY") == b"501 Syntax: VRFY <address>\r\n"


@pytest.mark.parametrize(
    "arg", ["<a@example.com>", "a@example.com", "postmaster", "<>"]
)
def test_vrfy(client, arg):
    assert client.cmd("VRFY " + arg) == (
        b"252 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )


def test_vrfy_needs_no_helo(client):
    assert client.cmd("vrfy <x@y>").startswith(b"252 ")


@pytest.mark.parametrize("line", ["EXPN", "EXPN list", "expn <a@b>"])
def test_expn(client, line):
    assert client.cmd(line) == b"502 EXPN not implemented\r\n"


# --- MAIL / RCPT ------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["MAIL FROM:<a@b>", "RCPT TO:<a@b>", "DATA", "MAIL", "RCPT", "DATA x"]
)
def test_send_helo_first(client, line):
    assert client.cmd(line) == HELO_FIRST


@pytest.mark.parametrize(
    "line,address",
    [
        ("MAIL FROM:<a@example.com>", "a@example.com"),
        ("MAIL FROM:a@example.com", "a@example.com"),
        ("MAIL FROM: <a@example.com>", "a@example.com"),
        ("MAIL FROM:   a@example.com", "a@example.com"),
        ("mail from:<a@example.com>", "a@example.com"),
        ("MAIL from:<A@Example.COM>", "A@Example.COM"),
        ("MAIL FROM:<>", "<>"),
        ('MAIL FROM:<"a b"@example.com>', '"a b"@example.com'),
        ('MAIL FROM:"quoted"@example.com', "quoted@example.com"),
        ("MAIL FROM:<first.last@sub.example.com>", "first.last@sub.example.com"),
    ],
)
def test_mail_addresses(client, server, line, address):
    client.cmd("HELO x")
    assert client.cmd(line) == OK
    assert client.cmd("RCPT TO:<r@example.com>") == OK
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"x") == OK
    assert server.deliveries[0].mailfrom == address


@pytest.mark.parametrize(
    "line,address",
    [
        ("RCPT TO:<r@example.com>", "r@example.com"),
        ("RCPT TO:r@example.com", "r@example.com"),
        ("rcpt to: <r@example.com>", "r@example.com"),
        ('RCPT TO:<"x y"@example.com>', '"x y"@example.com'),
    ],
)
def test_rcpt_addresses(client, server, line, address):
    client.cmd("HELO x")
    assert client.cmd("MAIL FROM:<a@b>") == OK
    assert client.cmd(line) == OK
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"x") == OK
    assert server.deliveries[0].rcpttos == [address]


@pytest.mark.parametrize(
    "greeting,reply", [("HELO", MAIL_SYNTAX), ("EHLO", MAIL_SYNTAX_EXT)]
)
@pytest.mark.parametrize(
    "line",
    ["MAIL", "MAIL FROM:", "MAIL FROM", "MAIL TO:<a@b>", "MAIL <a@b>", "MAIL FROM: "],
)
def test_mail_syntax_errors(client, greeting, reply, line):
    client.cmd(greeting + " x")
    assert client.cmd(line) == reply


@pytest.mark.parametrize(
    "greeting,reply", [("HELO", RCPT_SYNTAX), ("EHLO", RCPT_SYNTAX_EXT)]
)
@pytest.mark.parametrize(
    "line", ["RCPT", "RCPT TO:", "RCPT TO", "RCPT FROM:<a@b>", "RCPT <a@b>"]
)
def test_rcpt_syntax_errors(client, greeting, reply, line):
    client.cmd(greeting + " x")
    assert client.cmd("MAIL FROM:<a@b>") == OK
    assert client.cmd(line) == reply


def test_mail_params_need_ehlo(client):
    client.cmd("HELO x")
    assert client.cmd("MAIL FROM:<a@b> SIZE=10") == MAIL_SYNTAX


def test_rcpt_params_need_ehlo(client):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    assert client.cmd("RCPT TO:<c@d> FOO=1") == RCPT_SYNTAX


@pytest.mark.parametrize(
    "params",
    [
        "SIZE=1000",
        "size=1000",
        "BODY=7BIT",
        "BODY=8BITMIME",
        "body=8bitmime",
        "SIZE=0",
        "SIZE=10 BODY=8BITMIME",
        "BODY=7BIT  SIZE=5",
    ],
)
def test_mail_accepted_params(client, params):
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> " + params) == OK


@pytest.mark.parametrize(
    "params,reply",
    [
        ("BODY=BINARYMIME", b"501 Error: BODY can only be one of 7BIT, 8BITMIME\r\n"),
        ("BODY=", MAIL_SYNTAX_EXT),
        ("SIZE=abc", MAIL_SYNTAX_EXT),
        ("SIZE=-5", MAIL_SYNTAX_EXT),
        ("SIZE=", MAIL_SYNTAX_EXT),
        ("A-B=1", MAIL_SYNTAX_EXT),
        ("=5", MAIL_SYNTAX_EXT),
        ("FOO=1", b"555 MAIL FROM parameters not recognized or not implemented\r\n"),
        ("FOO", b"555 MAIL FROM parameters not recognized or not implemented\r\n"),
        ("SMTPUTF8", b"555 MAIL FROM parameters not recognized or not implemented\r\n"),
        (
            "SIZE=10 XYZ=1",
            b"555 MAIL FROM parameters not recognized or not implemented\r\n",
        ),
    ],
)
def test_mail_refused_params(client, params, reply):
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> " + params) == reply
    # Nothing was recorded: a proper MAIL still succeeds afterwards.
    assert client.cmd("MAIL FROM:<a@b>") == OK


def test_mail_body_param_with_decode_data(serve, connect):
    client = connect(serve(decode_data=True))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> BODY=8BITMIME") == (
        b"555 MAIL FROM parameters not recognized or not implemented\r\n"
    )


def test_mail_smtputf8_param(serve, connect):
    client = connect(serve(enable_SMTPUTF8=True))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SMTPUTF8=yes") == (
        b"501 Error: SMTPUTF8 takes no arguments\r\n"
    )
    assert client.cmd("MAIL FROM:<a@b> SMTPUTF8") == OK


@pytest.mark.parametrize("params", ["FOO=1", "NOTIFY=NEVER", "X"])
def test_rcpt_params_refused(client, params):
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<a@b>")
    assert client.cmd("RCPT TO:<c@d> " + params) == (
        b"555 RCPT TO parameters not recognized or not implemented\r\n"
    )


@pytest.mark.parametrize("params", ["A=", "@X", "X_Y"])
def test_rcpt_params_bad_syntax(client, params):
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<a@b>")
    assert client.cmd("RCPT TO:<c@d> " + params) == RCPT_SYNTAX_EXT


def test_nested_mail(client):
    client.cmd("HELO x")
    assert client.cmd("MAIL FROM:<a@b>") == OK
    assert client.cmd("MAIL FROM:<c@d>") == b"503 Error: nested MAIL command\r\n"


def test_need_mail(client):
    client.cmd("HELO x")
    assert client.cmd("RCPT TO:<a@b>") == b"503 Error: need MAIL command\r\n"


def test_need_rcpt(client):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    assert client.cmd("DATA") == b"503 Error: need RCPT command\r\n"


def test_data_with_argument(client):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA now") == b"501 Syntax: DATA\r\n"
    assert client.cmd("DATA") == START_DATA


# --- DATA -------------------------------------------------------------------


def test_full_transaction(client, server):
    assert client.cmd("HELO client.example") == b"250 " + FQDN_B + b"\r\n"
    assert client.cmd("MAIL FROM:<from@example.com>") == OK
    assert client.cmd("RCPT TO:<one@example.com>") == OK
    assert client.cmd("RCPT TO:<two@example.com>") == OK
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"Subject: test\r\n\r\nline one\r\nline two") == OK
    assert client.cmd("QUIT") == b"221 Bye\r\n"
    [delivery] = server.deliveries
    assert delivery.peer == client.local_address
    assert delivery.mailfrom == "from@example.com"
    assert delivery.rcpttos == ["one@example.com", "two@example.com"]
    assert delivery.data == b"Subject: test\n\nline one\nline two"
    assert delivery.kwargs == {"mail_options": [], "rcpt_options": []}


def test_data_sent_in_pieces(client, server):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == START_DATA
    for piece in (b"first ", b"line\r", b"\nsecond\r\n", b".", b"\r\n"):
        client.send(piece)
    assert client.read_reply() == OK
    assert server.deliveries[0].data == b"first line\nsecond"


def test_dot_unstuffing(client, server):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    body = b"..leading dot\r\nmiddle . dot\r\n...three\r\n..\r\nend."
    assert data_reply_ok(client, body) == OK
    assert server.deliveries[0].data == b".leading dot\nmiddle . dot\n..three\n.\nend."


def test_state_reset_after_data(client, server):
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"one") == OK
    # Back in command state with a clean envelope, greeting kept.
    assert client.cmd("RCPT TO:<c@d>") == b"503 Error: need MAIL command\r\n"
    assert client.cmd("MAIL FROM:<e@f>") == OK
    assert client.cmd("RCPT TO:<g@h>") == OK
    assert client.cmd("DATA") == START_DATA
    assert data_reply_ok(client, b"two") == OK
    assert [(d.mailfrom, d.rcpttos, d.data) for d in server.deliveries] == [
        ("a@b", ["c@d"], b"one"),
        ("e@f", ["g@h"], b"two"),
    ]


@pytest.mark.parametrize("status", ["550 No such user here", "250 Queued as 12345"])
def test_process_message_status(serve, connect, status):
    server = serve()
    server.status = status
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"x") == status.encode("ascii") + b"\r\n"
    assert client.cmd("NOOP") == OK


def test_pipelined_commands(client, server):
    client.send(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nNOOP\r\n")
    assert client.read_reply() == b"250 " + FQDN_B + b"\r\n"
    assert client.read_reply() == OK
    assert client.read_reply() == OK
    assert client.read_reply() == OK


# --- dispatching --------------------------------------------------------------


class XyzzyChannel(smtpd_compat.SMTPChannel):
    def smtp_XYZZY(self, arg):
        self.push("250 Nothing happens (%s)" % (arg,))


class XyzzyServer(RecordingServer):
    channel_class = XyzzyChannel


def test_custom_command(serve, connect):
    client = connect(serve(XyzzyServer))
    assert client.cmd("XYZZY") == b"250 Nothing happens (None)\r\n"
    assert client.cmd("xyzzy  plugh  ") == b"250 Nothing happens (plugh)\r\n"
    assert client.cmd("NOOP") == OK


@pytest.mark.parametrize(
    "line,name",
    [
        ("FOO", b"FOO"),
        ("foo bar", b"FOO"),
        ("Bogus:<a@b>", b"BOGUS:<A@B>"),
        ("XYZZY", b"XYZZY"),
        ("MAILFROM:<a@b>", b"MAILFROM:<A@B>"),
    ],
)
def test_unknown_command(client, line, name):
    assert client.cmd(line) == b'500 Error: command "' + name + b'" not recognized\r\n'
    assert client.cmd("NOOP") == OK


def test_empty_line(client):
    assert client.cmd("") == b"500 Error: bad syntax\r\n"
    assert client.cmd("NOOP") == OK
