"""Real clients (smtplib and swaks) against the command-line server.

The server runs as ``python -m smtpd_compat -n -c capture.CaptureServer``
in a subprocess; ``capture`` is a module written into tmp_path that stores
each message (``N.eml``) and its envelope (``N.json``) in a directory.
"""

import json
import os
import smtplib
import subprocess
import textwrap
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from conftest import TIMEOUT, start_cli, subprocess_env, swaks_session

CAPTURE_MODULE = """
    import json
    import os

    import smtpd_compat


    class CaptureServer(smtpd_compat.SMTPServer):
        count = 0

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            outdir = os.environ["CAPTURE_DIR"]
            CaptureServer.count += 1
            stem = os.path.join(outdir, str(CaptureServer.count))
            with open(stem + ".eml", "wb") as handle:
                handle.write(data)
            envelope = {"mailfrom": mailfrom, "rcpttos": rcpttos}
            envelope.update(kwargs)
            with open(stem + ".tmp", "w", encoding="utf-8") as handle:
                json.dump(envelope, handle)
            os.replace(stem + ".tmp", stem + ".json")
"""

ATTACHMENT = bytes(range(256)) * 40
UTF8_TEXT = "Grüße, café, €, 📧"


class CapturedServer:
    """The CLI server process and the directory it writes messages to."""

    def __init__(self, port, outdir):
        self.port = port
        self.outdir = outdir

    def messages(self):
        """[(envelope dict, message bytes)] in arrival order."""
        found = []
        count = len(
            [name for name in os.listdir(self.outdir) if name.endswith(".json")]
        )
        for number in range(1, count + 1):
            stem = os.path.join(str(self.outdir), str(number))
            with open(stem + ".json", encoding="utf-8") as handle:
                envelope = json.load(handle)
            with open(stem + ".eml", "rb") as handle:
                found.append((envelope, handle.read()))
        return found

    def only_message(self):
        [(envelope, data)] = self.messages()
        return envelope, data


@pytest.fixture
def cli_server(tmp_path):
    """Factory: ``cli_server(*options)`` -> a running CapturedServer."""
    (tmp_path / "capture.py").write_text(textwrap.dedent(CAPTURE_MODULE))
    outdir = tmp_path / "messages"
    outdir.mkdir()
    processes = []

    def start(*options):
        env = subprocess_env(extra_paths=[str(tmp_path)])
        env["CAPTURE_DIR"] = str(outdir)
        process, port = start_cli(
            ["-n", "-c", "capture.CaptureServer", *options], env=env
        )
        processes.append(process)
        return CapturedServer(port, outdir)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            try:
                process.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover
                process.kill()
                process.communicate()


def run_swaks(swaks, server, *arguments):
    """One swaks session that must deliver; its transcript."""
    status, output = swaks_session(swaks, server.port, *arguments)
    assert status == 0, output
    assert "<-  250 OK" in output, output
    return output


def parsed(data):
    return message_from_bytes(data, policy=policy.default)


def attachment_of(message):
    [part] = list(message.iter_attachments())
    return part


# --- smtplib ------------------------------------------------------------------


def test_smtplib_attachment(cli_server):
    server = cli_server()
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.com"
    message["Subject"] = "attachment"
    message.set_content("see the attachment\n")
    message.add_attachment(
        ATTACHMENT, maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        assert client.send_message(message) == {}
    envelope, data = server.only_message()
    assert envelope["mailfrom"] == "sender@example.com"
    assert envelope["rcpttos"] == ["rcpt@example.com"]
    part = attachment_of(parsed(data))
    assert part.get_filename() == "blob.bin"
    assert part.get_content() == ATTACHMENT


def test_smtplib_8bit_body(cli_server):
    server = cli_server()
    body = (
        "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n.leading dot\r\n" % UTF8_TEXT
    ).encode("utf-8")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert client.has_extn("8bitmime")
        assert (
            client.sendmail(
                "sender@example.com",
                ["rcpt@example.com"],
                body,
                mail_options=["BODY=8BITMIME"],
            )
            == {}
        )
    envelope, data = server.only_message()
    assert envelope["mail_options"] == ["BODY=8BITMIME"]
    assert data == body.replace(b"\r\n", b"\n").rstrip(b"\n")
    # the line end before the final "." belongs to the end marker
    assert parsed(data).get_content() == UTF8_TEXT + "\n.leading dot"


def test_smtplib_smtputf8(cli_server):
    server = cli_server("-u")
    sender = "grüße@exämple.com"
    recipient = "café@exämple.com"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = UTF8_TEXT
    message.set_content(UTF8_TEXT + "\n")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert client.has_extn("smtputf8")
        # send_message() asks for SMTPUTF8 itself when an address needs it
        assert client.send_message(message) == {}
    envelope, data = server.only_message()
    assert envelope["mailfrom"] == sender
    assert envelope["rcpttos"] == [recipient]
    assert "SMTPUTF8" in envelope["mail_options"]
    received = parsed(data)
    assert received["Subject"] == UTF8_TEXT
    assert received.get_content() == UTF8_TEXT


def test_smtputf8_needs_the_option(cli_server):
    """Without -u the server does not offer SMTPUTF8; smtplib refuses to send."""
    server = cli_server()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert not client.has_extn("smtputf8")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.sendmail(
                "grüße@exämple.com", ["r@example.com"], b"x", mail_options=["SMTPUTF8"]
            )
    assert server.messages() == []


# --- swaks --------------------------------------------------------------------


def test_swaks_attachment(cli_server, swaks, tmp_path):
    server = cli_server()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(ATTACHMENT)
    run_swaks(swaks, server, "--attach", "@%s" % blob, "--body", "see the attachment")
    envelope, data = server.only_message()
    assert envelope["mailfrom"] == "sender@example.com"
    assert envelope["rcpttos"] == ["rcpt@example.com"]
    message = parsed(data)
    assert message.get_content_type() == "multipart/mixed"
    part = attachment_of(message)
    assert part.get_filename() == "blob.bin"
    assert part.get_content() == ATTACHMENT


def test_swaks_8bit_body(cli_server, swaks):
    server = cli_server()
    run_swaks(
        swaks,
        server,
        "--add-header",
        "Content-Type: text/plain; charset=utf-8",
        "--add-header",
        "Content-Transfer-Encoding: 8bit",
        "--body",
        UTF8_TEXT + "\n.leading dot\n..two dots",
    )
    envelope, data = server.only_message()
    assert envelope["rcpttos"] == ["rcpt@example.com"]
    head, _, body = data.partition(b"\n\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    lines = body.split(b"\n")
    assert UTF8_TEXT.encode("utf-8") in lines
    assert b".leading dot" in lines and b"..two dots" in lines


def test_swaks_pipelined_messages(cli_server, swaks):
    """swaks --pipeline sends MAIL, RCPT and DATA in one go (RFC 2920)."""
    server = cli_server()
    run_swaks(
        swaks,
        server,
        "--pipeline",
        "--to",
        "rcpt@example.com,other@example.com",
        "--body",
        "pipelined",
    )
    envelope, data = server.only_message()
    assert envelope["rcpttos"] == ["rcpt@example.com", "other@example.com"]
    assert data.rstrip(b"\n").endswith(b"pipelined")
