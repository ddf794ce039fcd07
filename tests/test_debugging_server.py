"""What DebuggingServer prints for each received message."""

from conftest import data_reply_ok

import smtpd_compat

OK = b"250 OK\r\n"
START = "---------- MESSAGE FOLLOWS ----------\n"
END = "------------ END MESSAGE ------------\n"

BODY = b"Subject: hi\r\nFrom: x\r\n\r\nbody caf\xc3\xa9\r\n..dot\r\n\r\nend"


def deliver(client, mail="MAIL FROM:<a@b>", greeting="EHLO x", body=BODY):
    client.cmd(greeting)
    assert client.cmd(mail) == OK
    assert client.cmd("RCPT TO:<c@d>") == OK
    assert client.cmd("DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    return data_reply_ok(client, body)


def test_bytes_output(serve, connect, capsys):
    client = connect(serve(smtpd_compat.DebuggingServer))
    assert deliver(client) == OK
    assert client.cmd("QUIT") == b"221 Bye\r\n"
    out = capsys.readouterr().out
    assert out == (
        START + "b'Subject: hi'\n"
        "b'From: x'\n"
        "b'X-Peer: 127.0.0.1'\n"
        "b''\n"
        "b'body caf\\xc3\\xa9'\n"
        "b'.dot'\n"
        "b''\n"
        "b'end'\n" + END
    )


def test_bytes_output_with_mail_options(serve, connect, capsys):
    client = connect(serve(smtpd_compat.DebuggingServer))
    assert deliver(client, mail="MAIL FROM:<a@b> BODY=8BITMIME size=100") == OK
    out = capsys.readouterr().out
    assert out.startswith(
        START + "mail options: ['BODY=8BITMIME', 'SIZE=100']\nb'Subject: hi'\n"
    )
    assert out.endswith("b'end'\n" + END)


def test_str_output(serve, connect, capsys):
    client = connect(serve(smtpd_compat.DebuggingServer, decode_data=True))
    assert deliver(client, greeting="HELO x") == OK
    out = capsys.readouterr().out
    assert out == (
        START + "Subject: hi\n"
        "From: x\n"
        "X-Peer: 127.0.0.1\n"
        "\n"
        "body caf\u00e9\n"
        ".dot\n"
        "\n"
        "end\n" + END
    )


def test_no_blank_line_no_peer_header(serve, connect, capsys):
    client = connect(serve(smtpd_compat.DebuggingServer))
    assert deliver(client, body=b"just one line\r\nand another") == OK
    out = capsys.readouterr().out
    assert out == START + "b'just one line'\nb'and another'\n" + END


def test_two_messages(serve, connect, capsys):
    client = connect(serve(smtpd_compat.DebuggingServer, decode_data=True))
    assert deliver(client, body=b"one") == OK
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    assert data_reply_ok(client, b"\r\ntwo") == OK
    out = capsys.readouterr().out
    assert out == START + "one\n" + END + START + "X-Peer: 127.0.0.1\n\ntwo\n" + END


def test_process_message_direct_options(capsys):
    server = smtpd_compat.DebuggingServer(("127.0.0.1", 0), None, map={})
    try:
        result = server.process_message(
            ("10.1.2.3", 4567),
            "a@b",
            ["c@d"],
            b"H: v\n\nbody",
            mail_options=["BODY=8BITMIME"],
            rcpt_options=["NOTIFY=NEVER"],
        )
    finally:
        server.close()
    assert result is None
    assert capsys.readouterr().out == (
        START + "mail options: ['BODY=8BITMIME']\n"
        "rcpt options: ['NOTIFY=NEVER']\n\n"
        "b'H: v'\nb'X-Peer: 10.1.2.3'\nb''\nb'body'\n" + END
    )


def test_process_message_direct_only_rcpt_options(capsys):
    server = smtpd_compat.DebuggingServer(("127.0.0.1", 0), None, map={})
    try:
        server.process_message(
            ("10.1.2.3", 4567),
            "a@b",
            ["c@d"],
            b"x",
            mail_options=[],
            rcpt_options=["X=1"],
        )
    finally:
        server.close()
    assert capsys.readouterr().out == START + "rcpt options: ['X=1']\n\nb'x'\n" + END


def test_process_message_direct_str(capsys):
    server = smtpd_compat.DebuggingServer(("127.0.0.1", 0), None, map={})
    try:
        server.process_message(("10.1.2.3", 4567), "a@b", ["c@d"], "a\rb\n\nc")
    finally:
        server.close()
    assert capsys.readouterr().out == START + "a\nb\nX-Peer: 10.1.2.3\n\nc\n" + END
