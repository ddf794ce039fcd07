"""smtpd_compat.capture: recording received mail for tests to inspect."""

import dataclasses
import smtplib
import threading
import time
import types

import pytest
from conftest import TIMEOUT, RawClient

from smtpd_compat.capture import CapturedMessage, CapturingController, CapturingServer

PLAIN = (
    "From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nfirst line\r\n"
)


@pytest.fixture
def sinks():
    """Factory for started CapturingControllers, stopped at teardown."""
    started = []

    def start(**kwargs):
        sink = CapturingController(**kwargs)
        started.append(sink)
        return sink.start()

    yield start
    for sink in started:
        sink.stop()


def send(sink, body=PLAIN, sender="a@example.com", rcpts=("b@example.com",), **opts):
    with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client:
        return client.sendmail(sender, list(rcpts), body, **opts)


def raw_transaction(sink, body, mail_from="<a@example.com>", greeting="EHLO me"):
    """Run one transaction byte for byte; return the final reply."""
    client = RawClient(sink.address)
    try:
        client.cmd(greeting)
        assert client.cmd("MAIL FROM:%s" % mail_from).startswith(b"250")
        assert client.cmd("RCPT TO:<b@example.com>").startswith(b"250")
        assert client.cmd("DATA").startswith(b"354")
        client.send(body + b"\r\n.\r\n")
        return client.read_reply()
    finally:
        client.close()


def test_bytes_mode_records_envelope_options_and_exact_data(sinks):
    sink = sinks()
    send(sink, rcpts=("b@example.com", "c@example.com"), mail_options=["BODY=8BITMIME"])
    [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.peer[0] == "127.0.0.1"
    assert mail.mail_from == "a@example.com"
    assert mail.rcpt_tos == ("b@example.com", "c@example.com")
    assert "BODY=8BITMIME" in mail.mail_options
    assert mail.rcpt_options == ()
    assert mail.data == PLAIN.replace("\r\n", "\n").rstrip("\n").encode("ascii")
    assert mail.message["Subject"] == "hello"
    assert mail.message.get_content() == "first line"


def test_raw_data_keeps_what_process_message_got(sinks):
    """Dot-stuffing is undone, line ends become LF, nothing else changes."""
    sink = sinks()
    reply = raw_transaction(sink, b"Subject: dots\r\n\r\n..leading dot\r\n.\tx \r\nend")
    assert reply == b"250 OK\r\n"
    [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.data == b"Subject: dots\n\n.leading dot\n\tx \nend"


def test_decode_data_gives_text_and_still_parses_8bit_bodies(sinks):
    sink = sinks(decode_data=True)
    body = (
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "Grüße aus Köln\r\n"
    ).encode()
    send(sink, body)
    [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert isinstance(mail.data, str)
    assert mail.data.endswith("Grüße aus Köln")
    assert mail.mail_options == ()  # smtpd does not pass them with decode_data
    assert mail.message["Subject"] == "Grüße"
    assert mail.message.get_content() == "Grüße aus Köln"


def test_smtputf8_addresses_and_raw_utf8_headers(sinks):
    sink = sinks(enable_SMTPUTF8=True)
    body = (
        "From: Jörg <jörg@exämple.com>\r\n"
        "To: Zoë <zoë@example.com>\r\n"
        "Subject: Grüße ✓\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "ça va\r\n"
    ).encode()
    send(
        sink,
        body,
        sender="jörg@exämple.com",
        rcpts=("zoë@example.com",),
        mail_options=["SMTPUTF8"],
    )
    [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.mail_from == "jörg@exämple.com"
    assert mail.rcpt_tos == ("zoë@example.com",)
    assert "SMTPUTF8" in mail.mail_options
    assert mail.data == body.replace(b"\r\n", b"\n").rstrip(b"\n")
    assert mail.message["Subject"] == "Grüße ✓"
    [author] = mail.message["From"].addresses
    assert (author.display_name, author.username, author.domain) == (
        "Jörg",
        "jörg",
        "exämple.com",
    )
    assert mail.message.get_content() == "ça va"


def test_header_bytes_that_are_not_utf8_are_kept_not_fatal(sinks):
    sink = sinks()
    reply = raw_transaction(sink, "Subject: caf\xe9\r\n\r\nbody".encode("latin-1"))
    assert reply == b"250 OK\r\n"
    [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.data == b"Subject: caf\xe9\n\nbody"
    assert mail.message["Subject"].startswith("caf")


def test_messages_come_in_arrival_order(sinks):
    sink = sinks()
    with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client:
        for number in range(3):
            client.sendmail(
                "a@example.com", ["b@example.com"], "Subject: %d\r\n\r\nx" % number
            )
    mails = sink.wait_for(3, timeout=TIMEOUT)
    assert [mail.message["Subject"] for mail in mails] == ["0", "1", "2"]


def test_wait_for_counts_all_messages_since_start_or_clear(sinks):
    sink = sinks()
    send(sink)
    assert len(sink.wait_for(1, timeout=TIMEOUT)) == 1
    assert len(sink.wait_for(1, timeout=0)) == 1  # already there: no waiting
    send(sink)
    assert len(sink.wait_for(2, timeout=TIMEOUT)) == 2
    sink.clear()
    assert sink.messages == []
    send(sink)
    assert len(sink.wait_for(1, timeout=TIMEOUT)) == 1


def test_wait_for_timeout_says_what_arrived(sinks):
    sink = sinks()
    send(sink)
    sink.wait_for(1, timeout=TIMEOUT)
    with pytest.raises(TimeoutError) as info:
        sink.wait_for(2, timeout=0.1)
    assert str(info.value) == (
        "expected 2 messages within 0.1 s, 1 arrived: "
        "message from a@example.com to b@example.com, Subject: hello"
    )


def test_wait_for_wakes_when_mail_arrives_from_another_thread(sinks):
    sink = sinks()
    sender = threading.Thread(target=send, args=(sink,))
    sender.start()
    try:
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    finally:
        sender.join(TIMEOUT)
    assert mail.message["Subject"] == "hello"


def test_concurrent_senders_lose_nothing(sinks):
    sink = sinks()
    senders, per_sender = 4, 5

    def send_batch(batch):
        with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client:
            for number in range(per_sender):
                subject = "%d-%d" % (batch, number)
                client.sendmail(
                    "a@x.example", ["b@x.example"], "Subject: %s\r\n\r\n." % subject
                )

    threads = [
        threading.Thread(target=send_batch, args=(batch,)) for batch in range(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    mails = sink.wait_for(senders * per_sender, timeout=TIMEOUT)
    subjects = {mail.message["Subject"] for mail in mails}
    assert len(subjects) == senders * per_sender == len(mails)


def test_messages_is_a_copy_and_records_are_frozen(sinks):
    sink = sinks()
    send(sink)
    mails = sink.wait_for(1, timeout=TIMEOUT)
    mails.clear()
    assert len(sink.messages) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        sink.messages[0].mail_from = "someone@else.example"


def test_records_compare_by_envelope_and_data():
    def record(data):
        return CapturedMessage(
            peer=("127.0.0.1", 1),
            mail_from="a@example.com",
            rcpt_tos=("b@example.com",),
            mail_options=(),
            rcpt_options=(),
            data=data,
            message=None,
        )

    assert record(b"x") == record(b"x")
    assert record(b"x") != record(b"y")
    assert "message=" not in repr(record(b"x"))


def test_subclass_can_refuse_after_recording(sinks):
    class RefusingServer(CapturingServer):
        def process_message(self, *args, **kwargs):
            super().process_message(*args, **kwargs)
            return "550 No such user here"

    sink = sinks(server_class=RefusingServer)
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(sink)
    assert info.value.smtp_code == 550
    assert len(sink.messages) == 1


def test_server_usable_without_the_controller():
    """CapturingServer is a plain SMTPServer: any loop may drive it."""
    server = CapturingServer(("127.0.0.1", 0), None, map={})
    try:
        server.process_message(
            ("127.0.0.1", 1), "a@example.com", ["b@example.com"], b"x"
        )
        [mail] = server.wait_for(1, timeout=0)
        assert mail.data == b"x"
    finally:
        server.close()


def test_controller_methods_need_a_started_server():
    sink = CapturingController()
    message = "^the controller has not been started$"
    with pytest.raises(RuntimeError, match=message):
        _ = sink.messages
    with pytest.raises(RuntimeError, match=message):
        sink.wait_for(1, timeout=0)
    with pytest.raises(RuntimeError, match=message):
        sink.clear()


def test_messages_stay_readable_after_stop():
    with CapturingController() as sink:
        send(sink)
        sink.wait_for(1, timeout=TIMEOUT)
    assert len(sink.messages) == 1


@pytest.fixture
def server():
    """A CapturingServer fed by calling process_message() directly."""
    server = CapturingServer(("127.0.0.1", 0), None, map={})
    yield server
    server.close()


def test_shortfall_lists_each_message_received(server):
    server.process_message(("127.0.0.1", 1), "a@b", ["c@d", "e@f"], b"Subject: Hi\n\nx")
    server.process_message(("127.0.0.1", 1), "a@b", ["c@d"], b"no headers")
    with pytest.raises(TimeoutError) as info:
        server.wait_for(3, timeout=0)
    assert str(info.value) == (
        "expected 3 messages within 0 s, 2 arrived: "
        "message from a@b to c@d, e@f, Subject: Hi; "
        "message from a@b to c@d, Subject: (none)"
    )
    server.clear()
    with pytest.raises(TimeoutError) as info:
        server.wait_for(1, timeout=0)
    assert str(info.value) == "expected 1 message within 0 s, 0 arrived"


class JumpingClock:
    """monotonic() that moves an hour on at each reading."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        self.now += 3600
        return self.now


def test_wait_for_defaults_to_one_message_within_five_seconds(
    server, sinks, monkeypatch
):
    """(A clock that jumps makes every wait time out at once.)"""
    monkeypatch.setattr(
        "smtpd_compat.capture.time",
        types.SimpleNamespace(monotonic=JumpingClock().monotonic),
    )
    expected = "^expected 1 message within 5 s, 0 arrived$"
    with pytest.raises(TimeoutError, match=expected):
        server.wait_for()
    with pytest.raises(TimeoutError, match=expected):
        sinks().wait_for()


def test_wait_for_waits_out_its_last_second(server):
    """A message that comes while less than a second is left is still
    taken."""
    timer = threading.Timer(
        0.05,
        server.process_message,
        (("127.0.0.1", 1), "a@b", ["c@d"], b"late"),
    )
    started = time.monotonic()
    timer.start()
    try:
        [mail] = server.wait_for(1, timeout=0.9)
    finally:
        timer.join(TIMEOUT)
    assert mail.data == b"late"
    assert time.monotonic() - started < 0.9


def test_every_option_and_text_data_are_kept(server):
    """Envelope parameters as passed, and text (decode_data=True) whose
    bytes were not UTF-8 (kept as surrogate escapes) parsed as bytes."""
    server.process_message(
        ("127.0.0.1", 1),
        "a@b",
        ["c@d"],
        "Subject: raw\n\n\udcff",
        mail_options=["BODY=8BITMIME"],
        rcpt_options=["NOTIFY=NEVER"],
    )
    [mail] = server.messages
    assert mail.mail_options == ("BODY=8BITMIME",)
    assert mail.rcpt_options == ("NOTIFY=NEVER",)
    assert mail.message.get_payload(decode=True) == b"\xff"
