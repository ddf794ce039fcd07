"""Off means off: without the issue 11 options nothing of TLS or AUTH shows.

The kit's default CapturingController must answer a session that tries
STARTTLS and AUTH byte for byte as CPython 3.11's own smtpd does, and its
server must hand process_message() none of the new keywords.
"""

import base64
import smtplib
import socket
import subprocess
import sys
import textwrap

import pytest
import reference_pythons
from conftest import TIMEOUT

from smtpd_compat import SMTPServer
from smtpd_compat.capture import CapturingController, CapturingServer
from smtpd_compat.controller import Controller

PLAIN = base64.b64encode(b"\0ann\0s3cret")
# One command at a time; each gets exactly one reply.
SESSION = [
    b"EHLO client.example",
    b"STARTTLS",
    b"STARTTLS now",
    b"AUTH PLAIN " + PLAIN,
    b"AUTH LOGIN",
    b"AUTH",
    b"HELP",
    b"HELP AUTH",
    b"HELP STARTTLS",
    b"MAIL FROM:<a@example.com>",
    b"RCPT TO:<b@example.com>",
    b"DATA",
    b"Subject: off\r\n\r\nplain.\r\n.",
    b"HELO again.example",
    b"STARTTLS",
    b"QUIT",
]

REFERENCE_SERVER = textwrap.dedent(
    """
    import asyncore, smtpd, sys

    class Sink(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            return None

    server = Sink(("127.0.0.1", 0), None)
    print(server.socket.getsockname()[1], flush=True)
    asyncore.loop(timeout=0.1)
    """
)


def read_reply(sock, buffer):
    """(one whole reply, what is left) from ``sock``."""
    while True:
        lines = buffer.split(b"\r\n")
        for index, line in enumerate(lines[:-1]):
            if line[3:4] == b" ":
                end = sum(len(part) + 2 for part in lines[: index + 1])
                return buffer[:end], buffer[end:]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; unread {buffer!r}")
        buffer += chunk


def transcript(port):
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        reply, rest = read_reply(sock, b"")
        replies.append(reply)
        for command in SESSION:
            sock.sendall(command + b"\r\n")
            reply, rest = read_reply(sock, rest)
            replies.append(reply)
        assert rest == b""
    return replies


def reference_transcript():
    python = reference_pythons.reference_python(11)
    if not python:
        pytest.fail("no CPython 3.11 found: set SMTPD_COMPAT_REFERENCE_PYTHON")
    # -I: the standard library's smtpd, whatever the environment holds.
    server = subprocess.Popen(
        [python, "-I", "-W", "ignore", "-c", REFERENCE_SERVER],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = int(server.stdout.readline())
        return transcript(port)
    finally:
        server.kill()
        server.communicate(timeout=TIMEOUT)


def test_default_kit_answers_like_python_3_11():
    with CapturingController() as sink:
        ours = transcript(sink.port)
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    theirs = reference_transcript()
    assert ours == theirs
    ehlo = ours[1]
    assert b"STARTTLS" not in ehlo
    assert b"AUTH" not in ehlo
    assert (mail.auth_login, mail.tls) == (None, None)


class KeywordSink(SMTPServer):
    def __init__(self, *args, **kwargs):
        self.calls = []
        super().__init__(*args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.calls.append(sorted(kwargs))


@pytest.mark.parametrize("decode_data", [False, True])
def test_no_new_keywords_reach_process_message(decode_data):
    with Controller(KeywordSink, decode_data=decode_data) as controller:
        with smtplib.SMTP(*controller.address, timeout=TIMEOUT) as client:
            client.sendmail("a@example.com", ["b@example.com"], "x")
        server = controller.server
        assert server.tls_context is None and server.ssl_context is None
        assert server.authenticator is None
    expected = [] if decode_data else ["mail_options", "rcpt_options"]
    assert server.calls == [expected]


def test_default_controller_makes_no_certificates(monkeypatch):
    # Without TLS the kit never needs trustme.
    monkeypatch.setitem(sys.modules, "trustme", None)
    with CapturingController() as sink:
        assert sink.tls_mode is None
        assert sink.ca_file is None
        assert isinstance(sink.server, CapturingServer)
        with pytest.raises(RuntimeError):
            sink.client_context()
