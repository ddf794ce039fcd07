"""STARTTLS (RFC 3207) and implicit TLS (SMTPS) on SMTPServer, with AUTH.

Real clients (smtplib) and raw sockets on 127.0.0.1, certificates from a
throw-away trustme CA that the clients verify.  Besides the happy paths:
plaintext pipelined after STARTTLS must never run, garbage instead of a
ClientHello and a client that stops mid-handshake cost that connection
only, and TLS channels never use sendmsg().
"""

import io
import smtplib
import socket
import ssl
import struct
import time

import pytest
from conftest import TIMEOUT, RecordingServer, do_transaction, wait_for
from tls_support import (
    Certificates,
    TLSLineClient,
    connection_closed,
    plain,
    starttls,
)

import smtpd_compat

USERS = {"ann": "s3cret"}
MESSAGE = "Subject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def certs(tmp_path):
    return Certificates(tmp_path)


def tls_server(serve, certs, **kwargs):
    kwargs.setdefault("tls_context", certs.server_context())
    return serve(**kwargs)


def address(server):
    return server.socket.getsockname()[:2]


def channels_of(server):
    return [
        d for d in list(server._map.values()) if isinstance(d, smtpd_compat.SMTPChannel)
    ]


# --------------------------------------------------------------------------
# smtplib, as code in production uses it
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_starttls_and_login(serve, certs, mechanism):
    server = tls_server(serve, certs, authenticator=USERS, auth_required=True)
    with smtplib.SMTP(*address(server), timeout=TIMEOUT) as client:
        client.starttls(context=certs.client_context())
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        assert "starttls" not in client.esmtp_features
        client.user, client.password = "ann", "s3cret"
        method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        code, _ = client.auth(mechanism, method, initial_response_ok=False)
        assert code == 235
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    [delivery] = server.deliveries
    assert delivery.kwargs["auth_login"] == "ann"
    assert delivery.kwargs["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_smtplib_login_picks_a_mechanism(serve, certs):
    server = tls_server(serve, certs, authenticator=USERS)
    with smtplib.SMTP(*address(server), timeout=TIMEOUT) as client:
        client.starttls(context=certs.client_context())
        client.login("ann", "s3cret")
    # AUTH is not offered in plaintext (auth_require_tls=True by default)
    with smtplib.SMTP(*address(server), timeout=TIMEOUT) as client, pytest.raises(
        smtplib.SMTPNotSupportedError
    ):
        client.login("ann", "s3cret")


def test_smtplib_wrong_password(serve, certs):
    server = tls_server(serve, certs, authenticator=USERS)
    with smtplib.SMTP(*address(server), timeout=TIMEOUT) as client:
        client.starttls(context=certs.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("ann", "wrong")
        assert info.value.smtp_code == 535


def test_smtp_ssl_implicit_tls(serve, certs):
    server = serve(ssl_context=certs.server_context(), authenticator=USERS)
    context = certs.client_context()
    with smtplib.SMTP_SSL(*address(server), timeout=TIMEOUT, context=context) as client:
        code, _ = client.ehlo()
        assert code == 250
        assert "starttls" not in client.esmtp_features
        assert "auth" in client.esmtp_features
        client.login("ann", "s3cret")
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert server.deliveries[0].kwargs["auth_login"] == "ann"
    assert server.deliveries[0].kwargs["tls_version"].startswith("TLS")


def test_channel_tls_facts(serve, certs, connect):
    server = tls_server(serve, certs)
    raw = connect(server)
    [channel] = wait_for(lambda: channels_of(server))
    assert (channel.tls_version, channel.cipher, channel.peercert) == (None,) * 3
    tls = starttls(raw, certs.client_context())
    assert tls.cmd("EHLO x").startswith(b"250")
    assert channel.tls_version == tls.sock.version()
    assert channel.cipher == tls.sock.cipher()
    assert channel.peercert is None  # no client certificate was asked for
    assert isinstance(channel.socket, ssl.SSLSocket)
    assert channel.conn is channel.socket


def test_client_certificate_is_on_the_channel(serve, certs, connect):
    context = certs.server_context()
    context.verify_mode = ssl.CERT_REQUIRED
    certs.ca.configure_trust(context)
    server = tls_server(serve, certs, tls_context=context)
    client_context = certs.client_context()
    certs.ca.issue_cert("client.example").configure_cert(client_context)
    tls = starttls(connect(server), client_context)
    assert tls.cmd("EHLO x").startswith(b"250")
    [channel] = channels_of(server)
    assert ("DNS", "client.example") in channel.peercert["subjectAltName"]


# --------------------------------------------------------------------------
# The protocol around STARTTLS
# --------------------------------------------------------------------------


def test_ehlo_before_and_after_tls(serve, certs, connect):
    server = tls_server(serve, certs, authenticator=USERS)
    raw = connect(server)
    before = raw.cmd("EHLO x").decode()
    assert "250-STARTTLS\r\n" in before
    assert "AUTH" not in before
    tls = starttls(raw, certs.client_context())
    after = tls.cmd("EHLO x").decode()
    assert "STARTTLS" not in after
    assert "250-AUTH PLAIN LOGIN CRAM-MD5\r\n" in after


def test_session_starts_over_after_tls(serve, certs, connect):
    server = tls_server(serve, certs)
    raw = connect(server)
    assert raw.cmd("EHLO x").startswith(b"250")
    assert raw.cmd("MAIL FROM:<a@example.com>") == b"250 OK\r\n"
    tls = starttls(raw, certs.client_context())
    # no new greeting; the envelope and the EHLO are forgotten
    assert tls.cmd("RCPT TO:<b@example.com>") == b"503 Error: send HELO first\r\n"
    assert tls.cmd("EHLO x").startswith(b"250")
    assert tls.cmd("RCPT TO:<b@example.com>") == b"503 Error: need MAIL command\r\n"
    assert do_transaction(tls, greet=None) == b"250 OK\r\n"


def test_starttls_replies(serve, certs, connect):
    server = tls_server(serve, certs)
    raw = connect(server)
    assert raw.cmd("STARTTLS now") == b"501 Syntax error (no parameters allowed)\r\n"
    tls = starttls(raw, certs.client_context())
    assert tls.cmd("STARTTLS") == b"503 5.5.1 Error: TLS already active\r\n"
    assert tls.cmd("NOOP") == b"250 OK\r\n"


def test_implicit_tls_does_not_offer_starttls(serve, certs):
    server = serve(ssl_context=certs.server_context())
    sock = socket.create_connection(address(server), timeout=TIMEOUT)
    tls = TLSLineClient(
        certs.client_context().wrap_socket(sock, server_hostname="localhost")
    )
    try:
        assert tls.read_reply().startswith(b"220 ")
        assert b"STARTTLS" not in tls.cmd("EHLO x")
        assert (
            tls.cmd("STARTTLS") == b'500 Error: command "STARTTLS" not recognized\r\n'
        )
    finally:
        tls.close()


def test_require_starttls(serve, certs, connect):
    server = tls_server(serve, certs, require_starttls=True)
    raw = connect(server)
    must = b"530 Must issue a STARTTLS command first\r\n"
    assert raw.cmd("EHLO x").startswith(b"250")
    assert raw.cmd("NOOP") == b"250 OK\r\n"
    for command in ("MAIL FROM:<a@example.com>", "RSET", "VRFY a", "XFOO"):
        assert raw.cmd(command) == must
    tls = starttls(raw, certs.client_context())
    assert tls.cmd("EHLO x").startswith(b"250")
    assert do_transaction(tls, greet=None) == b"250 OK\r\n"


def test_auth_before_tls_gets_538(serve, certs, connect):
    server = tls_server(serve, certs, authenticator=USERS)
    raw = connect(server)
    raw.cmd("EHLO x")
    assert raw.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"538 5.7.11 ")
    tls = starttls(raw, certs.client_context())
    tls.cmd("EHLO x")
    assert tls.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")


def test_authentication_is_forgotten_with_starttls(serve, certs, connect):
    server = tls_server(
        serve, certs, authenticator=USERS, auth_require_tls=False, auth_required=True
    )
    raw = connect(server)
    raw.cmd("EHLO x")
    assert raw.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    tls = starttls(raw, certs.client_context())
    tls.cmd("EHLO x")
    assert tls.cmd("MAIL FROM:<a@example.com>").startswith(b"530 ")


# --------------------------------------------------------------------------
# Hostile clients
# --------------------------------------------------------------------------


class RecordingChannel(smtpd_compat.SMTPChannel):
    """Records XTEST commands: proof of which commands ran."""

    def smtp_XTEST(self, arg):
        self.smtp_server.ran.append(arg)
        self.push("250 XTEST done")


class UnbatchedChannel(RecordingChannel):
    """Overrides push(): replies go out one send() each, as in 3.11."""

    def push(self, msg):
        smtpd_compat.SMTPChannel.push(self, msg)


class InjectionServer(RecordingServer):
    channel_class = RecordingChannel

    def __init__(self, *args, **kwargs):
        self.ran = []
        super().__init__(*args, **kwargs)


class UnbatchedInjectionServer(InjectionServer):
    channel_class = UnbatchedChannel


@pytest.mark.parametrize("server_class", [InjectionServer, UnbatchedInjectionServer])
def test_plaintext_pipelined_after_starttls_never_runs(
    serve, certs, connect, server_class
):
    server = tls_server(serve, certs, server_class=server_class)
    raw = connect(server)
    assert raw.cmd("EHLO x").startswith(b"250")
    raw.send(b"STARTTLS\r\nXTEST injected\r\nMAIL FROM:<evil@example.com>\r\n")
    assert raw.read_reply() == b"220 Ready to start TLS\r\n"
    assert raw.buffer == b""
    wrapped = certs.client_context().wrap_socket(raw.sock, server_hostname="localhost")
    raw.sock = wrapped
    tls = TLSLineClient(wrapped)
    assert tls.cmd("EHLO x").startswith(b"250")
    assert tls.cmd("RCPT TO:<b@example.com>") == b"503 Error: need MAIL command\r\n"
    assert tls.cmd("XTEST encrypted") == b"250 XTEST done\r\n"
    assert server.ran == ["encrypted"]


@pytest.mark.parametrize("smtps", [False, True])
def test_garbage_instead_of_a_client_hello(serve, certs, connect, smtps):
    context = certs.server_context()
    server = serve(**({"ssl_context": context} if smtps else {"tls_context": context}))
    server.log_info = lambda *args: pytest.fail("reported: %r" % (args,))
    if smtps:
        sock = socket.create_connection(address(server), timeout=TIMEOUT)
    else:
        raw = connect(server)
        assert raw.cmd("STARTTLS").startswith(b"220")
        sock = raw.sock
    try:
        sock.sendall(b"EHLO this is no ClientHello\r\n" * 20)
        assert connection_closed(sock)
    finally:
        sock.close()
    assert wait_for(lambda: not channels_of(server) and len(server._map) == 1)
    # the server goes on
    good = smtplib.SMTP(*address(server), timeout=TIMEOUT) if not smtps else None
    if good is None:
        good = smtplib.SMTP_SSL(
            *address(server), timeout=TIMEOUT, context=certs.client_context()
        )
    else:
        good.starttls(context=certs.client_context())
    with good:
        good.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert len(server.deliveries) == 1


@pytest.mark.parametrize("smtps", [False, True])
@pytest.mark.parametrize("partial", [b"", b"\x16\x03\x01\x02\x00\x01"])
def test_client_stopping_mid_handshake_is_dropped(
    serve, certs, connect, smtps, partial
):
    context = certs.server_context()
    options = {"ssl_context": context} if smtps else {"tls_context": context}
    server = serve(idle_timeout=0.5, **options)
    if smtps:
        sock = socket.create_connection(address(server), timeout=TIMEOUT)
    else:
        raw = connect(server)
        assert raw.cmd("STARTTLS").startswith(b"220")
        sock = raw.sock
    try:
        sock.sendall(partial)
        # meanwhile another client is served in full
        with (
            smtplib.SMTP_SSL(
                *address(server), timeout=TIMEOUT, context=certs.client_context()
            )
            if smtps
            else smtplib.SMTP(*address(server), timeout=TIMEOUT)
        ) as other:
            if not smtps:
                other.starttls(context=certs.client_context())
            other.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        started = time.monotonic()
        assert connection_closed(sock)
        assert time.monotonic() - started < 3
    finally:
        sock.close()
    assert wait_for(lambda: len(server._map) == 1)


def test_without_idle_timeout_a_stalled_handshake_waits(serve, certs, connect):
    server = tls_server(serve, certs)
    raw = connect(server)
    assert raw.cmd("STARTTLS").startswith(b"220")
    assert not connection_closed(raw.sock, timeout=1.0)
    assert len(server._map) == 2  # the server and the handshake


def test_tls_records_split_byte_by_byte(serve, certs):
    """Every TLS byte in its own TCP segment: partial records must wait."""
    server = tls_server(serve, certs)
    sock = socket.create_connection(address(server), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        raw = sock.makefile("rb")
        assert raw.readline().startswith(b"220 ")
        sock.sendall(b"STARTTLS\r\n")
        assert raw.readline() == b"220 Ready to start TLS\r\n"
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = certs.client_context().wrap_bio(
            incoming, outgoing, server_hostname="localhost"
        )

        def flush_bytewise():
            data = outgoing.read()
            for index in range(len(data)):
                sock.send(data[index : index + 1])

        def pump(operation):
            while True:
                try:
                    return operation()
                except ssl.SSLWantReadError:
                    flush_bytewise()
                    chunk = sock.recv(65536)
                    assert chunk, "server closed"
                    incoming.write(chunk)

        pump(tls.do_handshake)
        flush_bytewise()
        tls.write(b"EHLO x\r\nNOOP\r\n")
        flush_bytewise()
        received = b""
        while not received.endswith(b"250 OK\r\n"):
            received += pump(lambda: tls.read(65536))
        assert received.startswith(b"250-")
    finally:
        sock.close()


class SmallReadsChannel(smtpd_compat.SMTPChannel):
    # Legacy code sets tiny read sizes: the rest of a TLS record stays in
    # the SSLSocket, where select() cannot see it.
    ac_in_buffer_size = 7


class SmallReadsServer(RecordingServer):
    channel_class = SmallReadsChannel


def test_decrypted_input_left_in_the_tls_layer_is_read(serve, certs, connect):
    server = tls_server(serve, certs, server_class=SmallReadsServer)
    tls = starttls(connect(server), certs.client_context())
    tls.send(b"EHLO x\r\n" + b"NOOP\r\n" * 20)  # one TLS record
    assert tls.read_reply().startswith(b"250-")
    for _ in range(20):
        assert tls.read_reply() == b"250 OK\r\n"


class SendRecordingChannel(smtpd_compat.SMTPChannel):
    def send(self, data):
        self.smtp_server.sent.append(bytes(data))
        return smtpd_compat.SMTPChannel.send(self, data)


class SendRecordingServer(RecordingServer):
    channel_class = SendRecordingChannel

    def __init__(self, *args, **kwargs):
        self.sent = []
        super().__init__(*args, **kwargs)


def test_an_overridden_send_sees_the_clear_text(serve, certs, connect):
    server = tls_server(serve, certs, server_class=SendRecordingServer)
    tls = starttls(connect(server), certs.client_context())
    assert tls.cmd("NOOP") == b"250 OK\r\n"
    assert server.sent[-1] == b"250 OK\r\n"
    assert b"220 Ready to start TLS\r\n" in server.sent


def test_tls_channels_never_use_sendmsg(serve, certs, connect, monkeypatch):
    calls = []
    original = ssl.SSLSocket.sendmsg

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLSocket, "sendmsg", spy)
    server = tls_server(serve, certs)
    tls = starttls(connect(server), certs.client_context())
    # many replies to one read: batched, but sent with send()
    tls.send(b"EHLO x\r\n" + b"NOOP\r\n" * 50)
    assert tls.read_reply().startswith(b"250-")
    for _ in range(50):
        assert tls.read_reply() == b"250 OK\r\n"
    assert calls == []


class FlakyAcceptServer(RecordingServer):
    """handle_accepted() fails for the first TLS connection only."""

    failed = False

    def handle_accepted(self, conn, addr):
        if not self.failed:
            self.failed = True
            raise RuntimeError("no channel for you")
        super().handle_accepted(conn, addr)


def test_a_failing_handle_accepted_after_the_handshake(serve, certs):
    server = serve(server_class=FlakyAcceptServer, ssl_context=certs.server_context())
    reports = []
    server.log_info = lambda message, kind="info": reports.append((kind, message))
    context = certs.client_context()
    sock = socket.create_connection(address(server), timeout=TIMEOUT)
    try:
        tls = context.wrap_socket(sock, server_hostname="localhost")
        assert connection_closed(tls)
    finally:
        sock.close()
    [(kind, message)] = wait_for(lambda: reports)
    assert kind == "error"
    assert "RuntimeError" in message
    assert "no channel for you" in message
    with smtplib.SMTP_SSL(*address(server), timeout=TIMEOUT, context=context) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert len(server.deliveries) == 1


def test_handshake_failures_are_on_debugstream(serve, certs, connect, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    server = tls_server(serve, certs)
    raw = connect(server)
    assert raw.cmd("STARTTLS").startswith(b"220")
    raw.sock.sendall(b"no ClientHello\r\n" * 10)
    assert connection_closed(raw.sock)
    assert wait_for(lambda: "TLS handshake failed:" in stream.getvalue())


def test_idle_timeout_over_tls_sends_an_encrypted_421(serve, certs, connect):
    server = tls_server(serve, certs, idle_timeout=0.5)
    tls = starttls(connect(server), certs.client_context())
    assert tls.cmd("EHLO x").startswith(b"250")
    started = time.monotonic()
    assert tls.read_reply().startswith(b"421 ")
    assert time.monotonic() - started < 3
    assert connection_closed(tls.sock)
    assert wait_for(lambda: len(server._map) == 1)


def test_help_names_starttls_when_it_is_on(serve, certs, connect):
    client = connect(tls_server(serve, certs))
    assert client.cmd("HELP").endswith(b" VRFY STARTTLS\r\n")
    assert client.cmd("HELP STARTTLS") == b"250 Syntax: STARTTLS\r\n"


def test_clients_resetting_at_once_cost_nothing(serve, certs):
    """Connect and reset at once, 50 times: no report, the server goes on."""
    server = serve(ssl_context=certs.server_context())
    server.log_info = lambda *args: pytest.fail("reported: %r" % (args,))
    for _ in range(50):
        sock = socket.create_connection(address(server), timeout=TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    context = certs.client_context()
    with smtplib.SMTP_SSL(*address(server), timeout=TIMEOUT, context=context) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert wait_for(lambda: len(server._map) == 1)


# --------------------------------------------------------------------------
# What DEBUGSTREAM and handle_accepted() get around a TLS handshake
# --------------------------------------------------------------------------

NOT_A_CLIENT_HELLO = b"EHLO this is no ClientHello\r\n" * 10


def handshake_error(context, data):
    """The text of the error a server-side handshake on ``data`` ends with.

    Done in memory with the same context, so the expected text follows the
    OpenSSL and Python at hand (the reason and the _ssl.c line differ).
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(data)
    with pytest.raises(ssl.SSLError) as info:
        tls.do_handshake()
    return str(info.value)


def debug_lines(stream):
    """The whole lines printed on ``stream`` so far (a line may be half out)."""
    return [
        line[:-1]
        for line in stream.getvalue().splitlines(keepends=True)
        if line.endswith("\n")
    ]


def test_starttls_handshake_failure_line(serve, certs, connect, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    context = certs.server_context()
    server = serve(tls_context=context)
    raw = connect(server)
    peer = raw.local_address
    assert raw.cmd("STARTTLS").startswith(b"220")
    raw.sock.sendall(NOT_A_CLIENT_HELLO)
    assert connection_closed(raw.sock)
    expected = "TLS handshake failed: %r %s" % (
        peer,
        handshake_error(context, NOT_A_CLIENT_HELLO),
    )
    assert expected.startswith("TLS handshake failed: ('127.0.0.1', ")
    wait_for(lambda: debug_lines(stream)[-1:] == [expected])
    assert debug_lines(stream)[-1:] == [expected]
    mentions = [line for line in debug_lines(stream) if "handshake" in line.lower()]
    assert mentions == [expected]
    assert wait_for(lambda: len(server._map) == 1)


def test_smtps_handshake_failure_lines(serve, certs, monkeypatch):
    context = certs.server_context()
    server = serve(ssl_context=context)
    stream = io.StringIO()  # after the server's own "started at" lines
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    sock = socket.create_connection(address(server), timeout=TIMEOUT)
    try:
        peer = sock.getsockname()
        sock.sendall(NOT_A_CLIENT_HELLO)
        assert connection_closed(sock)
    finally:
        sock.close()
    expected = [
        "Incoming TLS connection from ('127.0.0.1', %d)" % peer[1],
        "TLS handshake failed: ('127.0.0.1', %d) %s"
        % (peer[1], handshake_error(context, NOT_A_CLIENT_HELLO)),
    ]
    wait_for(lambda: debug_lines(stream) == expected)
    assert debug_lines(stream) == expected
    assert wait_for(lambda: len(server._map) == 1)


class AddressRecordingServer(RecordingServer):
    """Keeps the address handle_accepted() is given for each connection."""

    def __init__(self, *args, **kwargs):
        self.accepted_from = []
        super().__init__(*args, **kwargs)

    def handle_accepted(self, conn, addr):
        self.accepted_from.append(addr)
        super().handle_accepted(conn, addr)


def test_smtps_hands_the_client_address_to_handle_accepted(serve, certs, monkeypatch):
    server = serve(
        server_class=AddressRecordingServer, ssl_context=certs.server_context()
    )
    stream = io.StringIO()  # after the server's own "started at" lines
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    context = certs.client_context()
    with smtplib.SMTP_SSL(*address(server), timeout=TIMEOUT, context=context) as client:
        peer = client.sock.getsockname()
        assert client.noop()[0] == 250
    assert server.accepted_from == [peer]
    assert debug_lines(stream)[:2] == [
        "Incoming TLS connection from %r" % (peer,),
        "Incoming connection from %r" % (peer,),
    ]


def test_extensions_repr(serve, certs):
    """What the server turned on; never the authenticator (passwords)."""
    starttls_server = serve(tls_context=certs.server_context(), authenticator=USERS)
    smtps_server = serve(ssl_context=certs.server_context())
    assert repr(smtpd_compat._Extensions.of(starttls_server)) == (
        "<_Extensions tls=True smtps=False auth=('PLAIN', 'LOGIN', 'CRAM-MD5')>"
    )
    assert repr(smtpd_compat._Extensions.of(smtps_server)) == (
        "<_Extensions tls=False smtps=True auth=()>"
    )
    assert "s3cret" not in repr(smtpd_compat._Extensions.of(starttls_server))
