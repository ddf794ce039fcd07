"""PureProxy end to end: smtplib -> PureProxy -> a real SMTP server.

Both the proxy and the upstream server run on 127.0.0.1, each on its own
asyncore map and loop thread (the ``serve`` fixture), so the proxy's
blocking relay through smtplib talks to a live server.
"""

import io
import smtplib
import socket

import pytest
from conftest import TIMEOUT, RecordingServer, data_reply_ok, server_address

import smtpd_compat

MESSAGE = b"From: a@example.com\r\nSubject: relay\r\n\r\nfirst line\r\nsecond line\r\n"
UTF8_MESSAGE = (
    b"From: a@example.com\r\nSubject: 8bit\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\r\n"
)


class RefusingChannel(smtpd_compat.SMTPChannel):
    """Refuses RCPT for local parts starting with ``refuse4``/``refuse5``."""

    def smtp_RCPT(self, arg):
        address = (arg or "").lower()
        if "<refuse5" in address:
            self.push("550 No such user here")
        elif "<refuse4" in address:
            self.push("450 Mailbox busy, try later")
        else:
            smtpd_compat.SMTPChannel.smtp_RCPT(self, arg)


class RefusingServer(RecordingServer):
    channel_class = RefusingChannel


def free_port():
    """A port nothing listens on (bound by the OS, then released)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


@pytest.fixture
def upstream(serve):
    """The server PureProxy relays to; records what it receives."""
    return serve(RefusingServer)


@pytest.fixture
def proxy_for(serve):
    """Factory: ``proxy_for(upstream_address, **kwargs)`` -> started PureProxy."""

    def start(remote, **kwargs):
        return serve(smtpd_compat.PureProxy, remoteaddr=remote, **kwargs)

    return start


@pytest.fixture
def debugstream(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    return stream


def send_through(proxy, rcpttos, message=MESSAGE, mailfrom="a@example.com"):
    """Send one message with smtplib; return sendmail()'s refused dict."""
    host, port = server_address(proxy)
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
        return client.sendmail(mailfrom, rcpttos, message)


def with_peer_header(message):
    """``message`` as the upstream server should get it (LF line ends)."""
    head, _, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
    return head + b"\nX-Peer: 127.0.0.1\n\n" + body


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
@pytest.mark.parametrize("message", [MESSAGE, UTF8_MESSAGE], ids=["ascii", "8bit"])
def test_relays_message_with_peer_header(upstream, proxy_for, decode_data, message):
    proxy = proxy_for(server_address(upstream), decode_data=decode_data)
    assert send_through(proxy, ["b@example.com", "c@example.com"], message) == {}
    [delivery] = upstream.deliveries
    assert delivery.mailfrom == "a@example.com"
    assert delivery.rcpttos == ["b@example.com", "c@example.com"]
    # smtplib leaves a message that ends in CRLF as it is, so the upstream
    # sees the final line end as well.
    assert delivery.data == with_peer_header(message).rstrip(b"\n")


def test_peer_header_goes_before_first_blank_line_only(upstream, proxy_for):
    message = b"Subject: x\r\n\r\nbody\r\n\r\nnot: a header\r\n"
    send_through(proxy_for(server_address(upstream)), ["b@example.com"], message)
    [delivery] = upstream.deliveries
    assert delivery.data == b"Subject: x\nX-Peer: 127.0.0.1\n\nbody\n\nnot: a header"


def test_upstream_down_gives_4xx(proxy_for, debugstream):
    proxy = proxy_for(("127.0.0.1", free_port()))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send_through(proxy, ["b@example.com"])
    assert 400 <= caught.value.smtp_code < 500


def test_all_recipients_refused_for_good_gives_5xx(upstream, proxy_for):
    proxy = proxy_for(server_address(upstream))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send_through(proxy, ["refuse5a@example.com", "refuse5b@example.com"])
    assert 500 <= caught.value.smtp_code < 600
    assert upstream.deliveries == []


def test_upstream_refusing_the_data_gives_5xx(upstream, proxy_for):
    """process_message() upstream answers 554 after DATA."""
    upstream.status = "554 Message rejected"
    proxy = proxy_for(server_address(upstream))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send_through(proxy, ["b@example.com"])
    assert 500 <= caught.value.smtp_code < 600


def test_all_recipients_refused_for_now_gives_4xx(upstream, proxy_for):
    proxy = proxy_for(server_address(upstream))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send_through(proxy, ["refuse4a@example.com", "refuse4b@example.com"])
    assert 400 <= caught.value.smtp_code < 500
    assert upstream.deliveries == []


def test_mixed_temporary_and_permanent_refusals_give_4xx(upstream, proxy_for):
    """One recipient may still be deliverable later: do not bounce."""
    proxy = proxy_for(server_address(upstream))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send_through(proxy, ["refuse4@example.com", "refuse5@example.com"])
    assert 400 <= caught.value.smtp_code < 500


def test_some_recipients_refused(upstream, proxy_for, debugstream):
    proxy = proxy_for(server_address(upstream))
    rcpttos = ["b@example.com", "refuse5@example.com", "refuse4@example.com"]
    # The proxy accepted the message: the client sees no refusal at all.
    assert send_through(proxy, rcpttos) == {}
    [delivery] = upstream.deliveries
    assert delivery.rcpttos == ["b@example.com"]
    assert delivery.data == with_peer_header(MESSAGE).rstrip(b"\n")
    log = debugstream.getvalue()
    assert "refusals" in log
    assert "refuse5@example.com" in log and "550" in log
    assert "refuse4@example.com" in log and "450" in log


def test_deliver_returns_refused_recipients(upstream, proxy_for):
    proxy = proxy_for(server_address(upstream))
    refused = proxy._deliver(
        "a@example.com", ["b@example.com", "refuse5@example.com"], MESSAGE
    )
    assert list(refused) == ["refuse5@example.com"]
    code, text = refused["refuse5@example.com"]
    assert code == 550
    assert b"No such user" in text
    assert upstream.deliveries[0].rcpttos == ["b@example.com"]


def test_deliver_when_upstream_is_down(proxy_for):
    proxy = proxy_for(("127.0.0.1", free_port()))
    refused = proxy._deliver("a@example.com", ["b@x.example", "c@x.example"], MESSAGE)
    assert sorted(refused) == ["b@x.example", "c@x.example"]
    assert all(code == -1 for code, _ in refused.values())


def test_deliver_returns_empty_dict_on_success(upstream, proxy_for):
    proxy = proxy_for(server_address(upstream))
    assert proxy._deliver("a@example.com", ["b@example.com"], MESSAGE) == {}


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_smtputf8_is_refused(how):
    sock_map = {}
    args = [("127.0.0.1", 0), ("127.0.0.1", 25), None, sock_map]
    kwargs = {}
    if how == "keyword":
        kwargs["enable_SMTPUTF8"] = True
    else:
        args.append(True)
    with pytest.raises(ValueError, match="SMTPUTF8"):
        smtpd_compat.PureProxy(*args, **kwargs)
    assert sock_map == {}


SMUGGLED = (
    b"Subject: a\r\n\r\nline1\n.\nMAIL FROM:<evil@example.org>\r\n"
    b"RCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
    b"evil\r\n"
)


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_bare_lf_dot_cannot_smuggle_a_second_message(
    upstream, proxy_for, connect, decode_data
):
    """A bare-LF ``\\n.\\n`` inside the text must not end the upstream DATA."""
    proxy = proxy_for(server_address(upstream), decode_data=decode_data)
    client = connect(proxy)
    assert client.cmd("HELO client").startswith(b"250")
    assert client.cmd("MAIL FROM:<a@example.com>") == b"250 OK\r\n"
    assert client.cmd("RCPT TO:<b@example.com>") == b"250 OK\r\n"
    assert client.cmd("DATA").startswith(b"354")
    assert data_reply_ok(client, SMUGGLED.rstrip(b"\r\n")) == b"250 OK\r\n"
    assert client.cmd("QUIT").startswith(b"221")
    [delivery] = upstream.deliveries
    assert delivery.rcpttos == ["b@example.com"]
    lines = delivery.data.split(b"\n")
    assert lines[:5] == [b"Subject: a", b"X-Peer: 127.0.0.1", b"", b"line1", b"."]
    assert b"MAIL FROM:<evil@example.org>" in lines
    assert lines[-1] == b"evil"


class EnvelopeCollector:
    """aiosmtpd handler keeping every envelope it is given."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def aiosmtpd_upstream():
    """An aiosmtpd server on 127.0.0.1 (an independent SMTP implementation)."""
    from aiosmtpd.controller import Controller

    collector = EnvelopeCollector()
    controller = Controller(
        collector, hostname="127.0.0.1", port=free_port(), ready_timeout=TIMEOUT
    )
    controller.start()
    try:
        yield controller, collector
    finally:
        controller.stop()


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_relay_to_aiosmtpd(aiosmtpd_upstream, proxy_for, decode_data):
    controller, collector = aiosmtpd_upstream
    proxy = proxy_for((controller.hostname, controller.port), decode_data=decode_data)
    assert send_through(proxy, ["b@example.com"], UTF8_MESSAGE) == {}
    [envelope] = collector.envelopes
    assert envelope.mail_from == "a@example.com"
    assert envelope.rcpt_tos == ["b@example.com"]
    received = envelope.original_content.replace(b"\r\n", b"\n")
    assert received == with_peer_header(UTF8_MESSAGE)
