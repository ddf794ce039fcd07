"""AUTH (RFC 4954): the pure helpers of smtpd_compat._auth, then the protocol.

The protocol tests run in plaintext with ``auth_require_tls=False`` (the
exchange is the same with TLS, which tests/test_starttls_server.py covers),
on real sockets through the ``serve``/``connect`` fixtures of conftest.
"""

import hmac
import io
import re

import pytest
from conftest import RecordingServer, do_transaction, wait_for
from tls_support import b64, plain

import smtpd_compat
from smtpd_compat import _auth

USERS = {"ann": "s3cret", "bob": "pässword"}

# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def test_decode_base64_is_strict():
    assert _auth.decode_base64(b64("abc")) == b"abc"
    assert _auth.decode_base64("=") == b""
    for bad in ("not base64!", "YWJj=x", "YQ", "é"):
        with pytest.raises(_auth.AuthError) as info:
            _auth.decode_base64(bad)
        assert info.value.reply == "501 5.5.2 Cannot decode response"


def test_decode_plain():
    assert _auth.decode_plain(b"\0ann\0pw") == ("", "ann", "pw")
    assert _auth.decode_plain(b"z\0ann\0p\xc3\xa4") == ("z", "ann", "pä")
    for bad in (b"ann\0pw", b"\0a\0b\0c", b"", b"\0ann\0\xff"):
        with pytest.raises(_auth.AuthError):
            _auth.decode_plain(bad)


def test_plain_exchange_with_and_without_initial_response():
    exchange = _auth.Exchange("PLAIN", plain("ann", "pw"))
    assert exchange.start() == _auth.Credentials("PLAIN", "ann", "pw")
    exchange = _auth.Exchange("PLAIN", None)
    assert exchange.start() == ""  # "334 " with an empty challenge
    assert exchange.feed(plain("ann", "pw")) == ("PLAIN", "ann", "pw", b"")


def test_plain_for_somebody_else_is_refused():
    exchange = _auth.Exchange("PLAIN", plain("ann", "pw", authzid="root"))
    with pytest.raises(_auth.AuthError) as info:
        exchange.start()
    assert info.value.reply == _auth.FAILED
    # the same authzid as the login is no proxying
    exchange = _auth.Exchange("PLAIN", plain("ann", "pw", authzid="ann"))
    assert exchange.start().login == "ann"


def test_login_exchange():
    exchange = _auth.Exchange("LOGIN", None)
    assert exchange.start() == b64("Username:")
    assert exchange.feed(b64("ann")) == b64("Password:")
    assert exchange.feed(b64("pw")) == ("LOGIN", "ann", "pw", b"")
    exchange = _auth.Exchange("LOGIN", b64("ann"))
    assert exchange.start() == b64("Password:")
    assert exchange.feed(b64("pw")).secret == "pw"


def test_cram_md5_exchange_and_check():
    exchange = _auth.Exchange("CRAM-MD5", None, "mail.example")
    challenge = _auth.decode_base64(exchange.start())
    assert challenge.startswith(b"<") and challenge.endswith(b"@mail.example>")
    digest = hmac.new(b"s3cret", challenge, "md5").hexdigest()
    credentials = exchange.feed(b64("ann " + digest))
    assert credentials == ("CRAM-MD5", "ann", digest, challenge)
    assert _auth.verify(USERS, None, credentials)
    wrong = hmac.new(b"other", challenge, "md5").hexdigest()
    assert not _auth.verify(USERS, None, credentials._replace(secret=wrong))
    assert not _auth.verify(USERS, None, credentials._replace(login="eve"))


def test_cram_md5_challenges_differ():
    assert _auth.cram_md5_challenge("h") != _auth.cram_md5_challenge("h")


def test_cram_md5_challenge_form():
    """<random.timestamp@host> (RFC 2195), in ASCII whatever the host name;
    an Exchange made without one names localhost."""
    challenge = _auth.cram_md5_challenge("m\u00e4il.example")
    assert re.fullmatch(rb"<\d+\.\d+@m\?il\.example>", challenge)
    default = _auth.decode_base64(_auth.Exchange("CRAM-MD5", None).start())
    assert re.fullmatch(rb"<\d+\.\d+@localhost>", default)


def test_cram_md5_response_is_split_at_its_last_space():
    split = _auth.split_cram_md5_response
    assert split(b"john smith 0A1b") == ("john smith", "0a1b")
    for bad in (b"no-space", b" 0a1b", b"ann ", b""):
        with pytest.raises(_auth.AuthError) as info:
            split(bad)
        assert info.value.reply == _auth.CANNOT_DECODE


def test_auth_error_is_its_reply():
    error = _auth.AuthError(_auth.FAILED)
    assert error.reply == _auth.FAILED
    assert error.args == (_auth.FAILED,)


def test_cram_md5_refuses_an_initial_response_and_a_bad_one():
    with pytest.raises(_auth.AuthError) as info:
        _auth.Exchange("CRAM-MD5", b64("ann x")).start()
    assert info.value.reply == "501 5.5.4 Initial response not allowed for CRAM-MD5"
    exchange = _auth.Exchange("CRAM-MD5", None)
    exchange.start()
    with pytest.raises(_auth.AuthError):
        exchange.feed(b64("no-space-here"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_star_cancels(mechanism):
    exchange = _auth.Exchange(mechanism, None)
    exchange.start()
    with pytest.raises(_auth.AuthError) as info:
        exchange.feed("*")
    assert info.value.reply == "501 5.7.0 Auth aborted"


def test_verify_with_a_mapping_and_a_callable():
    assert _auth.verify(USERS, None, _auth.Credentials("PLAIN", "bob", "pässword"))
    assert not _auth.verify(USERS, None, _auth.Credentials("PLAIN", "bob", "x"))
    assert not _auth.verify(USERS, None, _auth.Credentials("LOGIN", "eve", "x"))
    calls = []

    def check(channel, mechanism, login, password):
        calls.append((channel, mechanism, login, password))
        return login == "ann"

    assert _auth.verify(check, "chan", _auth.Credentials("LOGIN", "ann", "pw"))
    assert not _auth.verify(check, "chan", _auth.Credentials("PLAIN", "eve", "pw"))
    assert calls == [("chan", "LOGIN", "ann", "pw"), ("chan", "PLAIN", "eve", "pw")]
    # CRAM-MD5 is not offered with a callable; it could not check a digest
    assert _auth.mechanisms_for(check) == ("PLAIN", "LOGIN")
    assert _auth.mechanisms_for(USERS) == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert not _auth.verify(check, "c", _auth.Credentials("CRAM-MD5", "ann", "d"))


def test_an_exchange_shows_only_its_mechanism():
    exchange = _auth.Exchange("LOGIN", b64("ann"))
    assert repr(exchange) == "<Exchange LOGIN>"


def test_secrets_stay_out_of_reprs_and_logs():
    credentials = _auth.Credentials("PLAIN", "ann", "s3cret")
    assert repr(credentials) == (
        "Credentials(mechanism='PLAIN', login='ann', secret='***')"
    )
    assert _auth.redacted(b"AUTH PLAIN AGFubgBzM2NyZXQ=") == b"AUTH PLAIN ***"
    assert _auth.redacted(b"AUTH PLAIN two words") == b"AUTH PLAIN ***"
    assert _auth.redacted(b"AUTH LOGIN") == b"AUTH LOGIN"


# --------------------------------------------------------------------------
# The protocol, on real sockets
# --------------------------------------------------------------------------


def auth_server(serve, **kwargs):
    kwargs.setdefault("authenticator", USERS)
    kwargs.setdefault("auth_require_tls", False)
    return serve(**kwargs)


def ehlo_lines(client):
    return client.cmd("EHLO client").decode().split("\r\n")


def only_channel(server):
    channels = wait_for(
        lambda: [
            d
            for d in list(server._map.values())
            if isinstance(d, smtpd_compat.SMTPChannel)
        ]
    )
    [channel] = channels
    return channel


def test_ehlo_offers_auth_with_a_mapping(serve, connect):
    client = connect(auth_server(serve))
    assert "250-AUTH PLAIN LOGIN CRAM-MD5" in ehlo_lines(client)


def test_ehlo_offers_plain_and_login_with_a_callable(serve, connect):
    server = auth_server(serve, authenticator=lambda *args: True)
    assert "250-AUTH PLAIN LOGIN" in ehlo_lines(connect(server))


def test_auth_is_not_offered_in_plaintext_by_default(serve, connect):
    client = connect(serve(authenticator=USERS))
    assert not [line for line in ehlo_lines(client) if "AUTH" in line]
    reply = client.cmd("AUTH PLAIN " + plain("ann", "s3cret"))
    assert reply == (
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )


def test_plain_with_initial_response(serve, connect):
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    reply = client.cmd("AUTH PLAIN " + plain("ann", "s3cret"))
    assert reply == b"235 2.7.0 Authentication successful\r\n"
    assert only_channel(server).auth_login == "ann"


def test_plain_and_login_challenge_forms(serve, connect):
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    assert client.cmd("AUTH PLAIN") == b"334 \r\n"
    assert client.cmd(plain("bob", "pässword")).startswith(b"235 ")
    client = connect(server)
    ehlo_lines(client)
    assert client.cmd("auth login") == b"334 VXNlcm5hbWU6\r\n"
    assert client.cmd(b64("ann")) == b"334 UGFzc3dvcmQ6\r\n"
    assert client.cmd(b64("s3cret")).startswith(b"235 ")


def test_cram_md5_on_the_wire(serve, connect):
    client = connect(auth_server(serve))
    ehlo_lines(client)
    reply = client.cmd("AUTH CRAM-MD5")
    assert reply.startswith(b"334 ")
    challenge = _auth.decode_base64(reply[4:-2].decode())
    digest = hmac.new(b"s3cret", challenge, "md5").hexdigest()
    assert client.cmd(b64("ann " + digest)).startswith(b"235 ")


def test_wrong_password_then_right_then_twice(serve, connect):
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    reply = client.cmd("AUTH PLAIN " + plain("ann", "wrong"))
    assert reply == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert only_channel(server).auth_login is None
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")) == (
        b"503 Already authenticated\r\n"
    )


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        (["AUTH PLAIN *"], b"501 5.7.0 Auth aborted\r\n"),
        (["AUTH PLAIN", "*"], b"501 5.7.0 Auth aborted\r\n"),
        (["AUTH LOGIN", "*"], b"501 5.7.0 Auth aborted\r\n"),
        (["AUTH LOGIN", b64("ann"), "*"], b"501 5.7.0 Auth aborted\r\n"),
        (["AUTH PLAIN !!!"], b"501 5.5.2 Cannot decode response\r\n"),
        (["AUTH PLAIN", "!!!"], b"501 5.5.2 Cannot decode response\r\n"),
        (["AUTH LOGIN", b"\xff\xfe"], b"501 5.5.2 Cannot decode response\r\n"),
        (["AUTH PLAIN " + b64("no-nuls")], b"501 5.5.2 Cannot decode response\r\n"),
        (["AUTH GSSAPI"], b"504 5.5.4 Unrecognized authentication type\r\n"),
        (["AUTH"], b"501 Syntax: AUTH <mechanism> [initial-response]\r\n"),
    ],
)
def test_refusals(serve, connect, lines, reply):
    client = connect(auth_server(serve))
    ehlo_lines(client)
    for line in lines[:-1]:
        assert client.cmd(line).startswith(b"334 ")
    assert client.cmd(lines[-1]) == reply
    # the exchange is over: the next line is a command again
    assert client.cmd("NOOP") == b"250 OK\r\n"


def test_auth_before_ehlo_and_during_a_transaction(serve, connect):
    client = connect(auth_server(serve))
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")) == (
        b"503 Error: send HELO first\r\n"
    )
    ehlo_lines(client)
    assert client.cmd("MAIL FROM:<a@example.com>") == b"250 OK\r\n"
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")) == (
        b"503 Error: AUTH not allowed during a mail transaction\r\n"
    )


def test_auth_required_before_mail(serve, connect):
    server = auth_server(serve, auth_required=True)
    client = connect(server)
    ehlo_lines(client)
    assert client.cmd("MAIL FROM:<a@example.com>") == (
        b"530 5.7.0 Authentication required\r\n"
    )
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    assert do_transaction(client, greet=None) == b"250 OK\r\n"
    assert server.deliveries[0].kwargs["auth_login"] == "ann"


def test_megabyte_auth_lines_get_the_line_too_long_reply(serve, connect):
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    huge = "A" * (1 << 20)
    assert client.cmd("AUTH PLAIN " + huge) == b"500 Error: line too long\r\n"
    assert client.cmd("AUTH PLAIN") == b"334 \r\n"
    assert client.cmd(huge) == b"500 Error: line too long\r\n"
    # the exchange ended; the session and the server go on
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    assert do_transaction(connect(server)) == b"250 OK\r\n"


def test_a_long_but_allowed_auth_line(serve, connect):
    long_password = "p" * 8000
    server = auth_server(serve, authenticator={"ann": long_password})
    client = connect(server)
    ehlo_lines(client)
    reply = client.cmd("AUTH PLAIN " + plain("ann", long_password))
    assert reply.startswith(b"235 ")


def test_ten_thousand_failures_on_one_connection(serve, connect):
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    line = ("AUTH PLAIN " + plain("ann", "wrong") + "\r\n").encode()
    failed = b"535 5.7.8 Authentication credentials invalid\r\n"
    for _ in range(10):
        client.send(line * 1000)
        for _ in range(1000):
            assert client.read_reply() == failed
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    assert do_transaction(connect(server)) == b"250 OK\r\n"


def test_credentials_never_reach_debugstream_or_repr(serve, connect, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    initial = plain("ann", "s3cret")
    assert client.cmd("AUTH PLAIN " + initial).startswith(b"235 ")
    channel = only_channel(server)
    texts = [repr(channel), repr(server), str(vars(channel))]
    client = connect(server)
    ehlo_lines(client)
    client.cmd("AUTH LOGIN")
    client.cmd(b64("bob"))
    client.cmd(b64("pässword"))
    client.cmd("QUIT")
    log = stream.getvalue()
    assert "Data: b'AUTH PLAIN ***'" in log
    assert "Data: b'AUTH LOGIN'" in log
    assert log.count("Data: b'***'") == 2
    for text in [log, *texts]:
        for secret in ("s3cret", initial, b64("pässword"), "pässword", b64("bob")):
            assert secret not in text


def test_message_text_that_looks_like_auth_is_logged_as_sent(
    serve, connect, monkeypatch
):
    """Only AUTH commands are hidden: a message is shown on DEBUGSTREAM
    as 3.11 shows it, even where a line of it reads like one."""
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    client = connect(auth_server(serve))
    ehlo_lines(client)
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    body = b"AUTH PLAIN not-a-secret\r\n\r\nbody"
    assert do_transaction(client, body=body, greet=None) == b"250 OK\r\n"
    assert "Data: %r\n" % body in stream.getvalue()


def test_an_authenticator_that_raises_gets_451(serve, connect):
    def broken(channel, mechanism, login, password):
        raise RuntimeError("database down")

    server = auth_server(serve, authenticator=broken)
    server.log_info = lambda *args: None  # keep the report off stdout
    client = connect(server)
    ehlo_lines(client)
    reply = client.cmd("AUTH PLAIN " + plain("ann", "x"))
    assert reply == b"451 Requested action aborted: local error in processing\r\n"
    assert client.cmd("NOOP") == b"250 OK\r\n"


def test_callable_gets_the_channel_and_the_mechanism(serve, connect):
    calls = []

    def check(channel, mechanism, login, password):
        calls.append((type(channel), mechanism, login, password))
        return True

    client = connect(auth_server(serve, authenticator=check))
    ehlo_lines(client)
    assert client.cmd("AUTH LOGIN " + b64("ann")).startswith(b"334 ")
    assert client.cmd(b64("pw")).startswith(b"235 ")
    assert calls == [(smtpd_compat.SMTPChannel, "LOGIN", "ann", "pw")]


class FourArgumentServer(smtpd_compat.SMTPServer):
    def __init__(self, *args, **kwargs):
        self.got = []
        super().__init__(*args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data):
        self.got.append(mailfrom)


class NamedKeywordServer(FourArgumentServer):
    def process_message(self, peer, mailfrom, rcpttos, data, auth_login=None):
        self.got.append(auth_login)


@pytest.mark.parametrize(
    ("server_class", "expected"),
    [(FourArgumentServer, ["a@example.com"]), (NamedKeywordServer, ["ann"])],
)
def test_handler_keywords_only_where_taken(serve, connect, server_class, expected):
    server = auth_server(serve, server_class=server_class, decode_data=True)
    client = connect(server)
    ehlo_lines(client)
    assert client.cmd("AUTH PLAIN " + plain("ann", "s3cret")).startswith(b"235 ")
    assert do_transaction(client, greet=None) == b"250 OK\r\n"
    assert server.got == expected


def test_kwargs_handler_gets_auth_login_but_no_tls_version(serve, connect):
    server = auth_server(serve)
    client = connect(server)
    ehlo_lines(client)
    assert do_transaction(client, greet=None) == b"250 OK\r\n"
    assert server.deliveries[0].kwargs == {
        "mail_options": [],
        "rcpt_options": [],
        "auth_login": None,
    }


def test_off_means_off(server, connect, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    client = connect(server)
    lines = ehlo_lines(client)
    assert not [line for line in lines if "AUTH" in line or "STARTTLS" in line]
    initial = plain("ann", "s3cret")
    assert client.cmd("AUTH PLAIN " + initial) == (
        b'500 Error: command "AUTH" not recognized\r\n'
    )
    assert client.cmd("STARTTLS") == b'500 Error: command "STARTTLS" not recognized\r\n'
    assert do_transaction(client, greet=None) == b"250 OK\r\n"
    assert server.deliveries[0].kwargs == {"mail_options": [], "rcpt_options": []}
    # As 3.11: every line on DEBUGSTREAM as it came.
    assert "Data: b'AUTH PLAIN %s'" % initial in stream.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"auth_required": True}, "auth_required needs an authenticator"),
        ({"require_starttls": True}, "require_starttls needs a tls_context"),
    ],
)
def test_inconsistent_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match="^%s$" % message):
        RecordingServer(("127.0.0.1", 0), None, map={}, **kwargs)


def test_help_names_auth_when_it_is_on(serve, connect):
    client = connect(auth_server(serve))
    assert client.cmd("HELP") == (
        b"250 Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY AUTH\r\n"
    )
    assert client.cmd("HELP auth") == (
        b"250 Syntax: AUTH <mechanism> [initial-response]\r\n"
    )
    assert client.cmd("HELP STARTTLS").startswith(b"501 Supported commands: ")
