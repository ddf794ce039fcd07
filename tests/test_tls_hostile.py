"""Hostile clients against STARTTLS, implicit TLS and AUTH (issue 11).

Each case ends by checking that the server is still up and serves the
next client a whole STARTTLS + AUTH session; the server is the test kit's
CapturingController, so an exception escaping the loop would also fail
the test when the controller stops.
"""

import base64
import re
import smtplib
import socket
import ssl
import struct
import time

import pytest
from conftest import TIMEOUT

from smtpd_compat.capture import CapturingController

USERS = {"ann": "s3cret"}
PLAIN_GOOD = base64.b64encode(b"\0ann\0s3cret").decode()
PLAIN_BAD = base64.b64encode(b"\0ann\0wrong").decode()
FINAL_REPLY = re.compile(rb"(?m)^\d{3} [^\r\n]*\r\n")


@pytest.fixture(params=["starttls", "smtps"])
def mode(request):
    return request.param


def start_sink(mode="starttls", **options):
    return CapturingController(
        smtps=mode == "smtps",
        starttls=mode == "starttls",
        auth=USERS,
        auth_required=True,
        **options,
    ).start()


@pytest.fixture
def sink():
    controller = start_sink()
    try:
        yield controller
    finally:
        controller.stop()


def serves_the_next_client(sink, count=1):
    """A whole session by smtplib must still work, and be captured."""
    if sink.tls_mode == "smtps":
        client = smtplib.SMTP_SSL(
            "localhost", sink.port, context=sink.client_context(), timeout=TIMEOUT
        )
    else:
        client = smtplib.SMTP("localhost", sink.port, timeout=TIMEOUT)
        client.starttls(context=sink.client_context())
    with client:
        client.login("ann", "s3cret")
        client.sendmail(
            "next@example.com", ["rcpt@example.com"], "Subject: next\r\n\r\n"
        )
    mails = sink.wait_for(count, timeout=TIMEOUT)
    assert mails[-1].mail_from == "next@example.com"
    assert mails[-1].auth_login == "ann"
    assert sink.running


class Reader:
    """Reads SMTP replies from a plain socket or an SSLSocket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def reply(self):
        """The next reply (all its lines), as bytes."""
        while True:
            match = FINAL_REPLY.search(self.buffer)
            if match:
                reply, self.buffer = (
                    self.buffer[: match.end()],
                    self.buffer[match.end() :],
                )
                return reply
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += chunk

    def code(self):
        return int(self.reply()[:3])


def plain_connection(sink):
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=TIMEOUT)
    reader = Reader(sock)
    assert reader.code() == 220
    return sock, reader


def nothing_more_arrives(sock, wait=0.3):
    """True if no byte (and no hang-up) comes within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        sock.recv(1, socket.MSG_PEEK)  # data, or b"" for a hang-up
    except socket.timeout:
        return True
    finally:
        sock.settimeout(TIMEOUT)
    return False


def closed_by_server(sock, within=TIMEOUT):
    """Read until the server hangs up; fail if it does not in time."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def client_hello(hostname="localhost"):
    """The bytes of a real ClientHello, made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(
        incoming, outgoing, server_hostname=hostname
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# -- STARTTLS injection --------------------------------------------------------


def test_plaintext_pipelined_after_starttls_does_not_run(sink):
    sock, reader = plain_connection(sink)
    with sock:
        sock.sendall(
            b"EHLO attacker\r\nSTARTTLS\r\n"
            # All of this is plain text that arrived before the handshake:
            # it must be thrown away, never run inside the TLS session.
            b"AUTH PLAIN " + PLAIN_GOOD.encode() + b"\r\n"
            b"MAIL FROM:<injected@example.com>\r\n"
            b"RCPT TO:<victim@example.com>\r\n"
            b"DATA\r\nSubject: injected\r\n\r\n.\r\n"
        )
        assert reader.code() == 250  # EHLO
        assert reader.reply() == b"220 Ready to start TLS\r\n"
        assert reader.buffer == b""
        assert nothing_more_arrives(sock)
        with sink.client_context().wrap_socket(
            sock, server_hostname="localhost"
        ) as tls:
            tls_reader = Reader(tls)
            tls.sendall(b"NOOP\r\n")
            # Only the NOOP's reply: no answer to any injected command.
            assert tls_reader.reply() == b"250 OK\r\n"
            assert tls_reader.buffer == b""
            # The session started over: no EHLO yet, no login, no envelope.
            tls.sendall(b"RCPT TO:<victim@example.com>\r\n")
            assert tls_reader.code() == 503
            tls.sendall(b"EHLO client\r\nMAIL FROM:<a@example.com>\r\n")
            assert tls_reader.code() == 250
            assert tls_reader.code() == 530  # not logged in: AUTH did not run
    serves_the_next_client(sink)
    assert [m.mail_from for m in sink.messages] == ["next@example.com"]


def test_starttls_pipelined_with_plaintext_in_separate_reads(sink):
    """The plain text arrives after the server has answered STARTTLS."""
    sock, reader = plain_connection(sink)
    with sock:
        sock.sendall(b"EHLO attacker\r\nSTARTTLS\r\n")
        assert reader.code() == 250
        assert reader.code() == 220
        sock.sendall(b"MAIL FROM:<injected@example.com>\r\n")
        # The server now expects a ClientHello: plain text is a failed
        # handshake, and the connection ends without running anything.
        assert closed_by_server(sock)
    serves_the_next_client(sink)
    assert [m.mail_from for m in sink.messages] == ["next@example.com"]


# -- broken handshakes -----------------------------------------------------------


GARBAGE = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
    pytest.param(bytes(range(256)) * 4, id="binary"),
    pytest.param(b"\x16\x03\x01\xff\xff" + b"\0" * 2000, id="bad-record-length"),
    pytest.param(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", id="short-hello"),
]


def start_handshake(sink, mode):
    """A connection at the point where the server waits for a ClientHello."""
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=TIMEOUT)
    if mode == "starttls":
        reader = Reader(sock)
        assert reader.code() == 220
        sock.sendall(b"EHLO client\r\nSTARTTLS\r\n")
        assert reader.code() == 250
        assert reader.code() == 220
    return sock


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_instead_of_a_client_hello(mode, garbage):
    sink = start_sink(mode)
    try:
        with start_handshake(sink, mode) as sock:
            sock.sendall(garbage)
            assert closed_by_server(sock)
        serves_the_next_client(sink)
    finally:
        sink.stop()


def test_client_stopping_mid_handshake_does_not_block_others(mode):
    sink = start_sink(mode)
    try:
        hello = client_hello()
        stalled = []
        for cut in (0, 1, 5, len(hello) // 2, len(hello) - 1):
            sock = start_handshake(sink, mode)
            stalled.append(sock)
            sock.sendall(hello[:cut])
        # The loop never waits for them: others are served meanwhile.
        serves_the_next_client(sink)
        serves_the_next_client(sink, count=2)
        for sock in stalled:
            sock.close()
        serves_the_next_client(sink, count=3)
    finally:
        sink.stop()


def test_client_stopping_mid_handshake_is_dropped_by_the_idle_timeout(mode):
    sink = start_sink(mode, idle_timeout=0.5)
    try:
        hello = client_hello()
        with start_handshake(sink, mode) as sock:
            sock.sendall(hello[: len(hello) // 2])
            started = time.monotonic()
            assert closed_by_server(sock, within=TIMEOUT)
            assert time.monotonic() - started < TIMEOUT
        serves_the_next_client(sink)
    finally:
        sink.stop()


def test_client_gone_right_after_starttls(sink):
    for _ in range(20):
        with start_handshake(sink, "starttls") as sock:
            # RST rather than FIN: SO_LINGER with a zero timeout.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    serves_the_next_client(sink)


# -- AUTH abuse ----------------------------------------------------------------------


def tls_session(sink):
    """An SSLSocket after STARTTLS and EHLO, with its Reader."""
    sock = start_handshake(sink, "starttls")
    tls = sink.client_context().wrap_socket(sock, server_hostname="localhost")
    reader = Reader(tls)
    tls.sendall(b"EHLO client\r\n")
    assert reader.code() == 250
    return tls, reader


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([b"AUTH PLAIN " + b"A" * 1_000_000], id="initial-response"),
        pytest.param([b"AUTH LOGIN", b"A" * 1_000_000], id="login-answer"),
        pytest.param([b"AUTH PLAIN", b"Q" * 1_000_000], id="plain-answer"),
        pytest.param([b"AUTH " + b"X" * 1_000_000], id="mechanism"),
    ],
)
def test_one_megabyte_auth_line(sink, lines):
    tls, reader = tls_session(sink)
    with tls:
        codes = []
        for line in lines:
            tls.sendall(line + b"\r\n")
            codes.append(reader.code())
        assert codes[:-1] == [334] * (len(lines) - 1)
        assert codes[-1] in (500, 501, 504)
        # The connection goes on; the login works afterwards.
        tls.sendall(b"AUTH PLAIN " + PLAIN_GOOD.encode() + b"\r\n")
        assert reader.code() == 235
    serves_the_next_client(sink)


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        pytest.param([b"AUTH PLAIN !!!!"], 501, id="plain-ir-not-base64"),
        pytest.param([b"AUTH PLAIN QUJD="], 501, id="plain-ir-bad-padding"),
        pytest.param([b"AUTH PLAIN", b"%%%"], 501, id="plain-answer-not-base64"),
        pytest.param([b"AUTH LOGIN", b"@@@@"], 501, id="login-user-not-base64"),
        pytest.param(
            [b"AUTH LOGIN", base64.b64encode(b"ann"), b"a b c"],
            501,
            id="login-password-not-base64",
        ),
        pytest.param([b"AUTH CRAM-MD5", b"*-*"], 501, id="cram-not-base64"),
        pytest.param(
            [b"AUTH PLAIN " + base64.b64encode(b"no nul bytes")], 501, id="plain-no-nul"
        ),
        pytest.param(
            [b"AUTH PLAIN " + base64.b64encode(b"\0\xff\xfe\0x")],
            501,
            id="plain-not-utf8",
        ),
        pytest.param([b"AUTH PLAIN", b"*"], 501, id="cancel"),
        pytest.param([b"AUTH NTLM"], 504, id="unknown-mechanism"),
    ],
)
def test_bad_auth_responses(sink, lines, code):
    tls, reader = tls_session(sink)
    with tls:
        codes = []
        for line in lines:
            tls.sendall(line + b"\r\n")
            codes.append(reader.code())
        assert codes == [334] * (len(lines) - 1) + [code]
        tls.sendall(b"MAIL FROM:<a@example.com>\r\n")
        assert reader.code() == 530  # still not logged in
    serves_the_next_client(sink)


ATTEMPTS = 10_000


def test_ten_thousand_failed_auth_attempts_on_one_connection(sink):
    tls, reader = tls_session(sink)
    started = time.monotonic()
    with tls:
        batch = (b"AUTH PLAIN " + PLAIN_BAD.encode() + b"\r\n") * 500
        codes = []
        # Pipelined in batches of 500, each read before the next is sent.
        for _ in range(ATTEMPTS // 500):
            tls.sendall(batch)
            codes.extend(reader.code() for _ in range(500))
        assert len(codes) == ATTEMPTS
        assert set(codes) == {535}
        # Still the same session: the right password is taken.
        tls.sendall(b"AUTH PLAIN " + PLAIN_GOOD.encode() + b"\r\n")
        assert reader.code() == 235
    print(f"\n{ATTEMPTS} failed AUTH: {time.monotonic() - started:.1f} s")
    serves_the_next_client(sink)


# -- TLS records cut into single bytes ----------------------------------------------


class ByteByByte:
    """A TLS client (on memory BIOs) that sends each byte on its own."""

    def __init__(self, sock, context):
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )
        self.sent = 0
        self.buffer = b""

    def _flush(self):
        data = self.outgoing.read()
        for index in range(len(data)):
            self.sock.sendall(data[index : index + 1])
            # A pause now and then, so the server does read partial records.
            if index % 16 == 0:
                time.sleep(0.001)
        self.sent += len(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server hung up")
        self.incoming.write(chunk)

    def handshake(self):
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            else:
                self._flush()
                return

    def send(self, data):
        self.tls.write(data)
        self._flush()

    def code(self):
        while True:
            match = FINAL_REPLY.search(self.buffer)
            if match:
                reply, self.buffer = (
                    self.buffer[: match.end()],
                    self.buffer[match.end() :],
                )
                return int(reply[:3])
            try:
                self.buffer += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._fill()


def test_tls_records_split_byte_by_byte(mode):
    sink = start_sink(mode)
    try:
        sock = start_handshake(sink, mode)
        with sock:
            client = ByteByByte(sock, sink.client_context())
            client.handshake()
            if mode == "smtps":
                assert client.code() == 220
            for line, code in [
                (b"EHLO client", 250),
                (b"AUTH PLAIN " + PLAIN_GOOD.encode(), 235),
                (b"MAIL FROM:<bytes@example.com>", 250),
                (b"RCPT TO:<rcpt@example.com>", 250),
                (b"DATA", 354),
                (b"Subject: split\r\n\r\none byte at a time\r\n.", 250),
                (b"QUIT", 221),
            ]:
                client.send(line + b"\r\n")
                assert client.code() == code, line
            assert client.sent > 500
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
        assert mail.mail_from == "bytes@example.com"
        assert mail.auth_login == "ann"
        assert mail.data == b"Subject: split\n\none byte at a time"
        serves_the_next_client(sink, count=2)
    finally:
        sink.stop()
