"""decode_data / enable_SMTPUTF8 handling and what process_message receives."""

import socket

import pytest
from conftest import DummyServer, RecordingServer, data_reply_ok

import smtpd_compat

OK = b"250 OK\r\n"


def send_message(
    client, body, mail="MAIL FROM:<a@b>", rcpt="RCPT TO:<c@d>", greeting="EHLO x"
):
    client.cmd(greeting)
    assert client.cmd(mail) == OK
    assert client.cmd(rcpt) == OK
    assert client.cmd("DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    return data_reply_ok(client, body)


# --- decode_data=False (the default) ---------------------------------------


def test_default_gives_bytes_and_options(server, client):
    assert (
        send_message(
            client,
            b"Subject: x\r\n\r\nbody",
            mail="MAIL FROM:<a@b> body=8bitmime size=20",
        )
        == OK
    )
    [delivery] = server.deliveries
    assert isinstance(delivery.data, bytes)
    assert delivery.data == b"Subject: x\n\nbody"
    assert delivery.kwargs == {
        "mail_options": ["BODY=8BITMIME", "SIZE=20"],
        "rcpt_options": [],
    }
    for option in delivery.kwargs["mail_options"]:
        assert type(option) is str


def test_explicit_decode_data_false(serve, connect):
    server = serve(decode_data=False)
    assert send_message(connect(server), b"x") == OK
    assert server.deliveries[0].data == b"x"
    assert set(server.deliveries[0].kwargs) == {"mail_options", "rcpt_options"}


def test_options_empty_after_helo(server, client):
    assert send_message(client, b"x", greeting="HELO x") == OK
    assert server.deliveries[0].kwargs == {"mail_options": [], "rcpt_options": []}


def test_options_with_smtputf8(serve, connect):
    server = serve(enable_SMTPUTF8=True)
    client = connect(server)
    assert (
        send_message(client, b"x", mail="MAIL FROM:<a@b> SMTPUTF8 BODY=8BITMIME") == OK
    )
    assert server.deliveries[0].kwargs == {
        "mail_options": ["SMTPUTF8", "BODY=8BITMIME"],
        "rcpt_options": [],
    }


def test_eight_bit_body_preserved(server, client):
    body = b"caf\xe9 \xff\xfe\x80\r\n\xc3\xa9t\xc3\xa9\r\n\x00\x01\x7f"
    assert send_message(client, body, mail="MAIL FROM:<a@b> BODY=8BITMIME") == OK
    assert (
        server.deliveries[0].data
        == b"caf\xe9 \xff\xfe\x80\n\xc3\xa9t\xc3\xa9\n\x00\x01\x7f"
    )


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"a\r\nb\r\n\r\nc", b"a\nb\n\nc"),
        (b"a\nb", b"a\nb"),
        (b"a\rb", b"a\rb"),
        (b"a\r\r\nb", b"a\r\nb"),
        (b"\r\nleading blank", b"\nleading blank"),
        (b"trailing\r\n", b"trailing\n"),
        (b"x", b"x"),
    ],
)
def test_lines_joined_with_lf(server, client, body, expected):
    assert send_message(client, body) == OK
    assert server.deliveries[0].data == expected


# --- decode_data=True --------------------------------------------------------


def test_decode_data_gives_str_and_no_kwargs(serve, connect):
    server = serve(decode_data=True)
    client = connect(server)
    assert (
        send_message(client, "Subject: caf\u00e9\r\n\r\nna\u00efve".encode("utf-8"))
        == OK
    )
    [delivery] = server.deliveries
    assert isinstance(delivery.data, str)
    assert delivery.data == "Subject: caf\u00e9\n\nna\u00efve"
    assert delivery.kwargs == {}


def test_decode_data_lines_and_dots(serve, connect):
    server = serve(decode_data=True)
    client = connect(server)
    assert send_message(client, b"..a\r\nb\r\n.c\r\nd") == OK
    assert server.deliveries[0].data == ".a\nb\nc\nd"


def test_decode_data_process_message_without_kwargs(serve, connect):
    class Strict(smtpd_compat.SMTPServer):
        def __init__(self, *args, **kwargs):
            self.got = []
            smtpd_compat.SMTPServer.__init__(self, *args, **kwargs)

        def process_message(self, peer, mailfrom, rcpttos, data):
            self.got.append(data)

    server = serve(Strict, decode_data=True)
    assert send_message(connect(server), b"hello") == OK
    assert server.got == ["hello"]


# --- enable_SMTPUTF8 ----------------------------------------------------------


def test_smtputf8_and_decode_data_rejected_by_server():
    message = "decode_data and enable_SMTPUTF8 cannot be set to True at the same time"
    with pytest.raises(ValueError, match="^%s$" % message):
        smtpd_compat.SMTPServer(
            ("127.0.0.1", 0), None, map={}, enable_SMTPUTF8=True, decode_data=True
        )


def test_smtputf8_and_decode_data_rejected_by_channel(private_map, sockpair):
    left = sockpair[0]
    message = "decode_data and enable_SMTPUTF8 cannot be set to True at the same time"
    with pytest.raises(ValueError, match="^%s$" % message):
        smtpd_compat.SMTPChannel(
            DummyServer(),
            left,
            ("127.0.0.1", 1),
            map=private_map,
            enable_SMTPUTF8=True,
            decode_data=True,
        )


@pytest.mark.parametrize(
    "decode_data,expected",
    [
        (False, (b"", b"\r\n", ord(b"."), b"\n")),
        (True, ("", "\r\n", ".", "\n")),
    ],
)
def test_private_separators_of_pythons_smtpd(
    private_map, sockpair, decode_data, expected
):
    """_emptystring, _linesep, _dotsep and _newline, which subclasses and
    CPython's own smtplib tests use, hold what they held in 3.11."""
    channel = smtpd_compat.SMTPChannel(
        DummyServer(),
        sockpair[0],
        ("127.0.0.1", 1),
        map=private_map,
        decode_data=decode_data,
    )
    found = (channel._emptystring, channel._linesep, channel._dotsep, channel._newline)
    assert found == expected
    assert [type(value) for value in found] == [type(value) for value in expected]


class EchoChannel(smtpd_compat.SMTPChannel):
    def smtp_ECHO(self, arg):
        self.push("250 " + arg)


class EchoServer(RecordingServer):
    channel_class = EchoChannel


def test_smtputf8_addresses(serve, connect):
    server = serve(enable_SMTPUTF8=True)
    client = connect(server)
    reply = send_message(
        client,
        "Subject: \u00fcber\r\n\r\n\u65e5\u672c".encode("utf-8"),
        mail="MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8",
        rcpt="RCPT TO:<\u00e9l\u00e8ve@\u00e9cole.example>",
    )
    assert reply == OK
    [delivery] = server.deliveries
    assert delivery.mailfrom == "j\u00f6rg@b\u00fccher.example"
    assert delivery.rcpttos == ["\u00e9l\u00e8ve@\u00e9cole.example"]
    assert delivery.data == "Subject: \u00fcber\n\n\u65e5\u672c".encode("utf-8")
    assert delivery.kwargs["mail_options"] == ["SMTPUTF8"]


def test_smtputf8_replies_are_utf8(serve, connect):
    client = connect(serve(EchoServer, enable_SMTPUTF8=True))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SMTPUTF8") == OK
    assert client.cmd(
        "ECHO gr\u00fc\u00df \u2713"
    ) == "250 gr\u00fc\u00df \u2713\r\n".encode("utf-8")
    assert client.cmd("NOOP") == OK


def test_replies_after_an_smtputf8_message_are_ascii_again(serve, connect):
    """The message's reply goes out in UTF-8; what follows is ASCII again:
    a non-ASCII reply then cannot be sent and becomes a 500 (see push())."""

    class GreetingChannel(EchoChannel):
        def smtp_GREET(self, arg):
            self.push("250 gr\u00fc\u00df dich")

    class Server(RecordingServer):
        channel_class = GreetingChannel

    client = connect(serve(Server, enable_SMTPUTF8=True))
    assert send_message(client, b"hi", mail="MAIL FROM:<a@b> SMTPUTF8") == OK
    assert client.cmd("GREET") == b"500 Error: bad syntax\r\n"
    assert client.cmd("ECHO plain") == b"250 plain\r\n"


def test_ascii_replies_without_smtputf8(serve, connect):
    client = connect(serve(EchoServer, enable_SMTPUTF8=True))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b>") == OK
    assert client.cmd("ECHO plain") == b"250 plain\r\n"


def test_smtputf8_flag_set_on_channel(serve, connect):
    channels = []

    class Channel(smtpd_compat.SMTPChannel):
        def __init__(self, *args, **kwargs):
            smtpd_compat.SMTPChannel.__init__(self, *args, **kwargs)
            channels.append(self)

    class Server(smtpd_compat.SMTPServer):
        channel_class = Channel

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            flags.append(channels[0].require_SMTPUTF8)

    flags = []
    client = connect(serve(Server, enable_SMTPUTF8=True))
    client.cmd("EHLO x")
    assert channels[0].require_SMTPUTF8 is False
    assert client.cmd("MAIL FROM:<a@b> SMTPUTF8") == OK
    assert channels[0].require_SMTPUTF8 is True
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"x") == OK
    assert flags == [True]
    # The flag belongs to one transaction.
    assert channels[0].require_SMTPUTF8 is False


def test_smtputf8_flag_cleared_by_rset(serve, connect):
    channels = []

    class Channel(smtpd_compat.SMTPChannel):
        def __init__(self, *args, **kwargs):
            smtpd_compat.SMTPChannel.__init__(self, *args, **kwargs)
            channels.append(self)

    class Server(smtpd_compat.SMTPServer):
        channel_class = Channel

    client = connect(serve(Server, enable_SMTPUTF8=True))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> SMTPUTF8") == OK
    assert channels[0].require_SMTPUTF8 is True
    assert client.cmd("RSET") == OK
    assert channels[0].require_SMTPUTF8 is False


def test_channel_options_stored(private_map, sockpair):
    left = sockpair[0]
    server = DummyServer()
    channel = smtpd_compat.SMTPChannel(
        server, left, ("127.0.0.1", 1), 1000, private_map, True, False
    )
    assert channel.smtp_server is server
    assert channel.conn is left
    assert channel.addr == ("127.0.0.1", 1)
    assert channel.data_size_limit == 1000
    assert channel.enable_SMTPUTF8 is True
    assert channel.require_SMTPUTF8 is False
    assert channel.smtp_state == channel.COMMAND
    assert (channel.COMMAND, channel.DATA) == (0, 1)
    assert channel.seen_greeting == ""
    assert channel.extended_smtp is False
    assert channel.mailfrom is None
    assert channel.rcpttos == []
    assert channel.received_lines == []
    assert channel.received_data == ""
    assert channel.num_bytes == 0
    assert channel.get_terminator() == b"\r\n"
    assert channel.fqdn == socket.getfqdn()
