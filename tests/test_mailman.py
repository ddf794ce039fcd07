"""MailmanProxy: list mail goes to (a fake) GNU Mailman 2, the rest is relayed.

The tests write a small stand-in ``Mailman`` package into tmp_path that
records every call in ``Mailman.CALLS``, run a MailmanProxy in front of a
recording upstream server and send with smtplib.
"""

import email.message
import email.utils
import importlib
import smtplib
import socket
import sys
import textwrap

import pytest
from conftest import TIMEOUT, RecordingServer, server_address

import smtpd_compat

pytestmark = pytest.mark.filterwarnings(
    "ignore:MailmanProxy is deprecated:DeprecationWarning"
)

FAKE_MAILMAN = {
    "__init__.py": """
        CALLS = []
        LISTS = {"announce", "dev"}
    """,
    "Utils.py": """
        from Mailman import CALLS, LISTS

        def list_exists(listname):
            CALLS.append(("list_exists", listname))
            return listname in LISTS
    """,
    "MailList.py": """
        from Mailman import CALLS

        class MailList:
            def __init__(self, listname, lock=1):
                CALLS.append(("MailList", listname, lock))
    """,
    "Message.py": """
        import email.message

        class Message(email.message.Message):
            pass
    """,
    "mm_cfg.py": """
        INQUEUE_DIR = "/fake/qfiles/in"
        CMDQUEUE_DIR = "/fake/qfiles/commands"
        BOUNCEQUEUE_DIR = "/fake/qfiles/bounces"
    """,
    "Queue/__init__.py": "",
    "Queue/sbcache.py": """
        from Mailman import CALLS

        _cache = {}

        class Switchboard:
            def __init__(self, whichq):
                self.whichq = whichq

            def enqueue(self, msg, **metadata):
                CALLS.append(("enqueue", self.whichq, msg, metadata))

        def get_switchboard(whichq):
            return _cache.setdefault(whichq, Switchboard(whichq))
    """,
}

# Everything goes to the incoming queue, whose runner reads the flags.
IN = "/fake/qfiles/in"

MESSAGE = (
    b"From: poster@example.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Subject: hello list\r\n\r\ncaf\xc3\xa9 for everyone\r\n"
)


def free_port():
    """A port on 127.0.0.1 that nothing listens on."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


def forget_mailman():
    for name in list(sys.modules):
        if name == "Mailman" or name.startswith("Mailman."):
            del sys.modules[name]


@pytest.fixture
def mailman(tmp_path, monkeypatch):
    """The fake Mailman package, importable; yields its CALLS list."""
    for relative, source in FAKE_MAILMAN.items():
        path = tmp_path / "Mailman" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    forget_mailman()
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("Mailman").CALLS
    finally:
        forget_mailman()


@pytest.fixture
def no_mailman(monkeypatch):
    """Make ``import Mailman`` fail, whatever is installed."""
    forget_mailman()
    monkeypatch.setitem(sys.modules, "Mailman", None)


@pytest.fixture
def upstream(serve):
    return serve(RecordingServer)


@pytest.fixture
def proxy_for(serve, upstream):
    def start(**kwargs):
        return serve(
            smtpd_compat.MailmanProxy, remoteaddr=server_address(upstream), **kwargs
        )

    return start


def send(proxy, rcpttos, message=MESSAGE, mailfrom="sender@example.com"):
    host, port = server_address(proxy)
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
        return client.sendmail(mailfrom, rcpttos, message)


def enqueued(calls):
    """(queue, listname, flags) of each enqueue call, flags without listname."""
    result = []
    for call in calls:
        if call[0] == "enqueue":
            metadata = dict(call[3])
            result.append((call[1], metadata.pop("listname"), metadata))
    return result


def messages(calls):
    return [call[2] for call in calls if call[0] == "enqueue"]


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_list_mail_to_mailman_other_mail_relayed(
    mailman, proxy_for, upstream, decode_data
):
    proxy = proxy_for(decode_data=decode_data)
    rcpttos = [
        "announce@lists.example",
        "person@example.com",
        "Dev-Request@Lists.Example",
        "nolist@lists.example",  # no such list: relayed
        "dev-unknown@lists.example",  # not a list address: relayed
        "dev-owner-x@lists.example",  # too many parts: relayed
    ]
    assert send(proxy, rcpttos) == {}
    assert enqueued(mailman) == [
        (IN, "announce", {"tolist": 1}),
        (IN, "dev", {"torequest": 1}),
    ]
    [delivery] = upstream.deliveries
    assert delivery.mailfrom == "sender@example.com"
    assert delivery.rcpttos == [
        "person@example.com",
        "nolist@lists.example",
        "dev-unknown@lists.example",
        "dev-owner-x@lists.example",
    ]
    assert b"X-Peer: 127.0.0.1\n\ncaf\xc3\xa9 for everyone" in delivery.data
    for msg in messages(mailman):
        assert type(msg).__name__ == "Message"
        assert isinstance(msg, email.message.Message)
        assert msg["Subject"] == "hello list"
        assert msg["From"] == "poster@example.com"
        assert msg["Date"] == "Mon, 1 Jan 2024 00:00:00 +0000"
        if decode_data:
            assert msg.get_payload().rstrip("\r\n") == "caf\u00e9 for everyone"
        else:
            # parsed from bytes: the 8-bit text comes back byte for byte
            body = msg.get_payload(decode=True)
            assert body.rstrip(b"\r\n") == b"caf\xc3\xa9 for everyone"


@pytest.mark.parametrize(
    "local_part, queue, flag",
    [
        ("dev", IN, "tolist"),
        ("dev-admin", IN, "toadmin"),
        ("dev-owner", IN, "toowner"),
        ("dev-request", IN, "torequest"),
        ("dev-join", IN, "tojoin"),
        ("dev-leave", IN, "toleave"),
        ("DEV-Leave", IN, "toleave"),
    ],
)
def test_list_addresses(mailman, proxy_for, upstream, local_part, queue, flag):
    assert send(proxy_for(), [local_part + "@lists.example"]) == {}
    assert enqueued(mailman) == [(queue, "dev", {flag: 1})]
    assert ("list_exists", "dev") in mailman
    assert ("MailList", "dev", 0) in mailman
    assert upstream.deliveries == []


def test_each_list_is_opened_once(mailman, proxy_for):
    send(proxy_for(), ["dev@l.example", "dev-owner@l.example", "announce@l.example"])
    opened = [call for call in mailman if call[0] == "MailList"]
    assert opened == [("MailList", "dev", 0), ("MailList", "announce", 0)]


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_missing_from_and_date_are_added(mailman, proxy_for, decode_data):
    proxy = proxy_for(decode_data=decode_data)
    send(proxy, ["dev@l.example"], b"Subject: bare\r\n\r\nbody\r\n")
    [msg] = messages(mailman)
    assert msg["From"] == "sender@example.com"
    assert email.utils.parsedate_tz(msg["Date"]) is not None
    assert msg["Subject"] == "bare"


def test_refused_relay_recipients_do_not_fail_list_mail(mailman, serve):
    """Upstream down: the list copy is still queued and the client gets 250."""
    proxy = serve(smtpd_compat.MailmanProxy, remoteaddr=("127.0.0.1", free_port()))
    assert send(proxy, ["dev@l.example", "person@example.com"]) == {}
    assert enqueued(mailman) == [(IN, "dev", {"tolist": 1})]


def test_relay_only_recipients_follow_pureproxy_rules(mailman, serve):
    proxy = serve(smtpd_compat.MailmanProxy, remoteaddr=("127.0.0.1", free_port()))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send(proxy, ["person@example.com"])
    assert 400 <= caught.value.smtp_code < 500
    assert enqueued(mailman) == []


def test_without_mailman_every_message_gets_451(no_mailman, proxy_for, upstream):
    proxy = proxy_for()
    for _ in range(2):  # the server survives the first one
        with pytest.raises(smtplib.SMTPDataError) as caught:
            send(proxy, ["dev@l.example", "person@example.com"])
        assert caught.value.smtp_code == 451
        assert b"Mailman is not available" in caught.value.smtp_error
    assert upstream.deliveries == []


def test_construction_warns(upstream):
    sock_map = {}
    with pytest.warns(DeprecationWarning, match="MailmanProxy is deprecated"):
        proxy = smtpd_compat.MailmanProxy(
            ("127.0.0.1", 0), server_address(upstream), map=sock_map
        )
    proxy.close()
    assert isinstance(proxy, smtpd_compat.PureProxy)


def test_construction_needs_no_mailman(no_mailman):
    sock_map = {}
    proxy = smtpd_compat.MailmanProxy(("127.0.0.1", 0), ("127.0.0.1", 25), map=sock_map)
    proxy.close()
    assert sock_map == {}


def test_smtputf8_is_refused():
    sock_map = {}
    with pytest.raises(ValueError, match="SMTPUTF8"):
        smtpd_compat.MailmanProxy(
            ("127.0.0.1", 0), ("127.0.0.1", 25), map=sock_map, enable_SMTPUTF8=True
        )
    assert sock_map == {}
