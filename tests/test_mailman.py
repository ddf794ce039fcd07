"""MailmanProxy: list mail goes to (a stand-in for) GNU Mailman, the rest is relayed.

The tests write a small ``Mailman`` package into tmp_path with the API
Python 3.10's MailmanProxy used - ``Utils.list_exists()``,
``Message.Message(file)``, ``MailList.MailList(name, lock=0)`` and
``msg.Enqueue(mlist, **flags)`` - recording every call in ``Mailman.CALLS``
(an Enqueue() with a snapshot of the message as it was queued).
``test_same_as_python_3_10`` runs CPython 3.10's own MailmanProxy (in a
3.10 subprocess) and ours on the same cases and compares the calls, the
recipients relayed and the DEBUGSTREAM text.
"""

import importlib
import io
import json
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import reference_pythons
from conftest import TIMEOUT, RecordingServer, server_address, subprocess_env

import smtpd_compat

pytestmark = pytest.mark.filterwarnings(
    "ignore:MailmanProxy is deprecated:DeprecationWarning"
)

FAKE_MAILMAN = {
    "__init__.py": """
        CALLS = []  # every call, in order
        LISTS = {"announce", "dev"}
        # What fails: "list_exists"/"Message": True; "MailList"/"Enqueue": a list.
        FAIL = {}
    """,
    "Utils.py": """
        from Mailman import CALLS, FAIL, LISTS


        def list_exists(listname):
            CALLS.append(("list_exists", listname))
            if FAIL.get("list_exists"):
                raise RuntimeError("list_exists failed")
            return listname in LISTS
    """,
    "MailList.py": """
        from Mailman import CALLS, FAIL


        class MailList:
            def __init__(self, listname, lock=1):
                CALLS.append(("MailList", listname, lock))
                if FAIL.get("MailList") == listname:
                    raise RuntimeError("cannot load " + listname)
                self.internal_name = listname
    """,
    "Message.py": """
        import email
        import email.message

        from Mailman import CALLS, FAIL


        class Message(email.message.Message):
            # Built from a file object, as MailmanProxy builds it.
            def __init__(self, fp):
                email.message.Message.__init__(self)
                text = fp.read()
                CALLS.append(("Message", type(fp).__name__, text))
                if FAIL.get("Message"):
                    raise RuntimeError("cannot parse")
                self.__dict__.update(email.message_from_string(text).__dict__)

            def Enqueue(self, mlist, **flags):
                if FAIL.get("Enqueue") == mlist.internal_name:
                    raise OSError("queue directory not writable")
                snapshot = (list(self.items()), self.get_payload())
                CALLS.append(("Enqueue", mlist.internal_name, flags) + snapshot)
    """,
}

MESSAGE = (
    b"From: poster@example.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Subject: hello list\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"caf\xc3\xa9 for everyone\r\n"
)
# MESSAGE as process_message() gets it, and as it goes upstream.
RECEIVED = MESSAGE.replace(b"\r\n", b"\n").rstrip(b"\n")
HEADERS = [
    ("From", "poster@example.com"),
    ("Date", "Mon, 1 Jan 2024 00:00:00 +0000"),
    ("Subject", "hello list"),
    ("Content-Type", "text/plain; charset=utf-8"),
]

LOCAL_ERROR = (451, b"Requested action aborted: local error in processing")
UPSTREAM_DOWN = (451, b"Requested action aborted: upstream server unavailable")
NO_MAILMAN = (451, b"Requested action aborted: Mailman is not available")
FAILED_AFTER_DELIVERY = (
    554,
    b"Transaction failed: Mailman failed after part of the message was delivered",
)


def forget_mailman():
    for name in list(sys.modules):
        if name == "Mailman" or name.startswith("Mailman."):
            del sys.modules[name]


@pytest.fixture
def fake_root(tmp_path):
    """A directory holding the fake ``Mailman`` package."""
    root = tmp_path / "fake"
    for relative, source in FAKE_MAILMAN.items():
        path = root / "Mailman" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def mailman(fake_root, monkeypatch):
    """The fake Mailman package, importable; yields the module."""
    forget_mailman()
    monkeypatch.syspath_prepend(str(fake_root))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("Mailman")
    finally:
        forget_mailman()


@pytest.fixture
def no_mailman(monkeypatch):
    """Make ``import Mailman`` fail, whatever is installed."""
    forget_mailman()
    monkeypatch.setitem(sys.modules, "Mailman", None)


class RefusingChannel(smtpd_compat.SMTPChannel):
    def smtp_RCPT(self, arg):
        if "<refuse5" in (arg or "").lower():
            self.push("550 No such user here")
        else:
            smtpd_compat.SMTPChannel.smtp_RCPT(self, arg)


class Upstream(RecordingServer):
    channel_class = RefusingChannel


@pytest.fixture
def upstream(serve):
    return serve(Upstream)


@pytest.fixture
def down_address():
    """An address where nothing listens: a bound socket that never listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()
    finally:
        sock.close()


@pytest.fixture
def proxy_for(serve, upstream):
    def start(remote=None, **kwargs):
        return serve(
            smtpd_compat.MailmanProxy,
            remoteaddr=tuple(remote or server_address(upstream)),
            **kwargs,
        )

    return start


def transact(proxy, rcpttos, message=MESSAGE, mailfrom="sender@example.com"):
    """One transaction through ``proxy``; the (code, text) reply to DATA."""
    with smtplib.SMTP(*server_address(proxy), timeout=TIMEOUT) as client:
        assert client.ehlo()[0] == 250
        assert client.mail(mailfrom) == (250, b"OK")
        for rcpt in rcpttos:
            assert client.rcpt(rcpt) == (250, b"OK")
        return client.data(message)


def enqueued(mailman):
    """(list, flags) of each Enqueue() call."""
    return [call[1:3] for call in mailman.CALLS if call[0] == "Enqueue"]


def relayed(upstream):
    return [(d.mailfrom, d.rcpttos, d.data) for d in upstream.deliveries]


# -- where each recipient goes ------------------------------------------------


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
        "dev-owner-x@lists.example",  # too many hyphens: relayed
    ]
    assert transact(proxy, rcpttos) == (250, b"OK")
    if decode_data:
        text = RECEIVED.decode("utf-8")
    else:
        # As the email package decodes bytes (then the payload is decoded
        # by its charset).
        text = RECEIVED.decode("ascii", "surrogateescape")
    payload = "caf\u00e9 for everyone"
    assert mailman.CALLS == [
        ("list_exists", "announce"),
        ("list_exists", "person"),
        ("list_exists", "dev"),
        ("list_exists", "nolist"),
        ("list_exists", "dev"),
        ("Message", "StringIO", text),
        ("MailList", "announce", 0),
        ("MailList", "dev", 0),
        ("Enqueue", "announce", {"tolist": 1}, HEADERS, payload),
        ("Enqueue", "dev", {"torequest": 1}, HEADERS, payload),
    ]
    # Relayed as received: no X-Peer header (as in Python 3.10).
    assert relayed(upstream) == [
        (
            "sender@example.com",
            [
                "person@example.com",
                "nolist@lists.example",
                "dev-unknown@lists.example",
                "dev-owner-x@lists.example",
            ],
            RECEIVED,
        )
    ]


def test_8bit_bytes_in_any_charset_survive(mailman, proxy_for):
    message = b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nd\xe9j\xe0 vu\r\n"
    assert transact(proxy_for(), ["dev@l.example"], message) == (250, b"OK")
    text = "Content-Type: text/plain; charset=iso-8859-1\n\nd\udce9j\udce0 vu"
    assert [c for c in mailman.CALLS if c[0] == "Message"] == [
        ("Message", "StringIO", text)
    ]
    [(_, _, _, _, payload)] = [c for c in mailman.CALLS if c[0] == "Enqueue"]
    assert payload == "d\u00e9j\u00e0 vu"


def test_every_list_address_shares_one_message(mailman, proxy_for, upstream):
    """-join/-leave add a Subject: header to the one message, as in 3.10."""
    rcpttos = [
        "dev@l.example",
        "dev-admin@l.example",
        "dev-owner@l.example",
        "dev-request@l.example",
        "dev-join@l.example",
        "DEV-Leave@l.example",
        "announce-join@l.example",
    ]
    assert transact(proxy_for(), rcpttos) == (250, b"OK")
    subscribe = HEADERS + [("Subject", "subscribe")]
    unsubscribe = subscribe + [("Subject", "unsubscribe")]
    assert [c[1:4] for c in mailman.CALLS if c[0] == "Enqueue"] == [
        ("dev", {"tolist": 1}, HEADERS),
        ("dev", {"toadmin": 1}, HEADERS),
        ("dev", {"toowner": 1}, HEADERS),
        ("dev", {"torequest": 1}, HEADERS),
        ("dev", {"torequest": 1}, subscribe),
        ("dev", {"torequest": 1}, unsubscribe),
        ("announce", {"torequest": 1}, unsubscribe + [("Subject", "subscribe")]),
    ]
    opened = [call for call in mailman.CALLS if call[0] == "MailList"]
    assert opened == [("MailList", "dev", 0), ("MailList", "announce", 0)]
    assert upstream.deliveries == []


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_missing_from_and_date_are_added(mailman, proxy_for, decode_data):
    proxy = proxy_for(decode_data=decode_data)
    before = int(time.time())
    assert transact(proxy, ["dev@l.example"], b"Subject: bare\r\n\r\nbody\r\n") == (
        250,
        b"OK",
    )
    after = int(time.time())
    [(_, _, _, headers, _)] = [c for c in mailman.CALLS if c[0] == "Enqueue"]
    name, date = headers.pop()
    assert (name, date) == ("Date", date)
    assert date in {time.ctime(second) for second in range(before, after + 1)}
    assert headers == [("Subject", "bare"), ("From", "sender@example.com")]


def test_present_from_and_date_are_kept(mailman, proxy_for):
    assert transact(proxy_for(), ["dev@l.example"]) == (250, b"OK")
    [(_, _, _, headers, _)] = [c for c in mailman.CALLS if c[0] == "Enqueue"]
    assert headers == HEADERS


def test_order_of_the_steps(mailman, serve, upstream):
    """Everything that can fail before anything went on comes first."""

    class Proxy(smtpd_compat.MailmanProxy):
        def _deliver(self, mailfrom, rcpttos, data):
            mailman.CALLS.append(("_deliver", list(rcpttos)))
            return smtpd_compat.MailmanProxy._deliver(self, mailfrom, rcpttos, data)

    proxy = serve(Proxy, remoteaddr=server_address(upstream), decode_data=True)
    rcpttos = [
        "dev@l.example",
        "person@example.com",
        "announce@l.example",
        "dev-owner@l.example",
    ]
    assert transact(proxy, rcpttos) == (250, b"OK")
    assert [call[:3] for call in mailman.CALLS] == [
        ("list_exists", "dev"),
        ("list_exists", "person"),
        ("list_exists", "announce"),
        ("list_exists", "dev"),
        ("Message", "StringIO", RECEIVED.decode()),
        ("MailList", "dev", 0),
        ("MailList", "announce", 0),
        ("_deliver", ["person@example.com"]),
        ("Enqueue", "dev", {"tolist": 1}),
        ("Enqueue", "announce", {"tolist": 1}),
        ("Enqueue", "dev", {"toowner": 1}),
    ]


class Recorder(smtpd_compat.MailmanProxy):
    """Records _deliver() calls and returns ``self.result`` (no relay)."""

    result = {}

    def __init__(self, *args, **kwargs):
        self.calls = []
        smtpd_compat.MailmanProxy.__init__(self, *args, **kwargs)

    def _deliver(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


@pytest.mark.parametrize(
    "rcpttos, forwarded, debug",
    [
        (
            ["dev@l.example", "person@example.com", "Announce-Owner@L.example"],
            ["person@example.com"],
            (
                "forwarding recips: person@example.com\n"
                "we got refusals: {}\n"
                "sending message to dev@l.example\n"
                "sending message to Announce-Owner@L.example\n"
            ),
        ),
        (
            ["dev@l.example", "dev@l.example"],
            [],
            (
                "forwarding recips: \n"
                "sending message to dev@l.example\n"
                "sending message to dev@l.example\n"
            ),
        ),
        (
            ["a@example.com", "b@example.com"],
            ["a@example.com", "b@example.com"],
            "forwarding recips: a@example.com b@example.com\nwe got refusals: {}\n",
        ),
    ],
)
def test_deliver_call_and_debugstream(mailman, monkeypatch, rcpttos, forwarded, debug):
    # A copy: process_message() empties the list, and the parameter is
    # shared by every run of the test in one process (mutmut runs it again).
    rcpttos = list(rcpttos)
    proxy = Recorder(("127.0.0.1", 0), ("127.0.0.1", 9), map={}, decode_data=True)
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    data = RECEIVED.decode()
    try:
        assert (
            proxy.process_message(("192.0.2.7", 1), "s@example.com", rcpttos, data)
            is None
        )
    finally:
        proxy.close()
    # The list recipients leave the list, as in Python 3.10.
    assert rcpttos == forwarded
    if forwarded:
        [(args, kwargs)] = proxy.calls
        assert args == ("s@example.com", forwarded, data)
        assert args[1] is rcpttos
        assert kwargs == {}
    else:
        assert proxy.calls == []
    assert stream.getvalue() == debug


@pytest.mark.parametrize(
    "rcpttos, found, asked",
    [
        # Past an address with two hyphens, the others are still looked at.
        (
            ["dev-owner-x@l.example", "dev@l.example", "announce-leave@l.example"],
            [
                ("dev@l.example", "dev", ""),
                ("announce-leave@l.example", "announce", "leave"),
            ],
            ["dev", "announce"],
        ),
        (
            ["a-b-c@l.example", "Dev-Admin@L.example"],
            [("Dev-Admin@L.example", "dev", "admin")],
            ["dev"],
        ),
        (
            ["dev-unknown@l.example", "nolist@l.example", "x-y-z@l.example"],
            [],
            ["dev", "nolist"],
        ),
    ],
)
def test_mailman_recipients(rcpttos, found, asked):
    calls = []

    def list_exists(listname):
        calls.append(listname)
        return listname in {"announce", "dev"}

    assert smtpd_compat._mailman_recipients(rcpttos, list_exists) == found
    assert calls == asked


def test_date_comes_from_the_clock_time_time_reads(mailman, monkeypatch):
    """time.ctime(time.time()), as in 3.10: a frozen time.time() freezes Date:."""
    message_class = importlib.import_module("Mailman.Message").Message
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 1700000000.0)
        msg = smtpd_compat._mailman_message(
            message_class, "Subject: x\n\nbody", "s@example.com"
        )
    assert msg.items() == [
        ("Subject", "x"),
        ("From", "s@example.com"),
        ("Date", time.ctime(1700000000.0)),
    ]


# -- failures: nothing twice, nothing lost silently ----------------------------


def test_without_mailman_every_message_gets_451(no_mailman, proxy_for, upstream):
    proxy = proxy_for()
    assert transact(proxy, ["dev@l.example", "person@example.com"]) == NO_MAILMAN
    assert transact(proxy, ["person@example.com"]) == NO_MAILMAN  # still serving
    assert upstream.deliveries == []


def test_without_mailman_the_import_error_is_printed(no_mailman, monkeypatch):
    proxy = Recorder(("127.0.0.1", 0), ("127.0.0.1", 9), map={}, decode_data=True)
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    rcpttos = ["dev@l.example", "person@example.com"]
    try:
        status = proxy.process_message(
            ("192.0.2.7", 1), "s@example.com", rcpttos, "Subject: x\n\nbody"
        )
    finally:
        proxy.close()
    assert status == "%d %s" % (NO_MAILMAN[0], NO_MAILMAN[1].decode())
    assert stream.getvalue() == (
        "cannot import Mailman: import of Mailman halted; None in sys.modules\n"
    )
    assert rcpttos == ["dev@l.example", "person@example.com"]
    assert proxy.calls == []


@pytest.mark.parametrize(
    "failure, report",
    [
        ({"list_exists": True}, "RuntimeError'>:list_exists failed"),
        ({"Message": True}, "RuntimeError'>:cannot parse"),
        ({"MailList": "announce"}, "RuntimeError'>:cannot load announce"),
    ],
)
def test_failure_before_anything_went_on_is_retried(
    mailman, proxy_for, upstream, capsys, failure, report
):
    proxy = proxy_for()
    rcpttos = ["dev@l.example", "person@example.com", "announce@l.example"]
    mailman.FAIL.update(failure)
    assert transact(proxy, rcpttos) == LOCAL_ERROR
    assert upstream.deliveries == []
    assert enqueued(mailman) == []
    assert report in capsys.readouterr().out
    # The client tries again later, when Mailman works: all once.
    mailman.FAIL.clear()
    assert transact(proxy, rcpttos) == (250, b"OK")
    assert [d.rcpttos for d in upstream.deliveries] == [["person@example.com"]]
    assert enqueued(mailman) == [("dev", {"tolist": 1}), ("announce", {"tolist": 1})]


def test_upstream_down_leaves_lists_alone(mailman, proxy_for, upstream, down_address):
    """The relay comes before the queueing: a 451 from it duplicates nothing."""
    proxy = proxy_for(down_address)
    rcpttos = ["dev@l.example", "person@example.com"]
    assert transact(proxy, rcpttos) == UPSTREAM_DOWN
    assert enqueued(mailman) == []
    # The upstream server is back when the client tries again.
    proxy._remoteaddr = server_address(upstream)
    assert transact(proxy, rcpttos) == (250, b"OK")
    assert [d.rcpttos for d in upstream.deliveries] == [["person@example.com"]]
    assert enqueued(mailman) == [("dev", {"tolist": 1})]


def test_upstream_down_without_list_recipients(mailman, proxy_for, down_address):
    assert transact(proxy_for(down_address), ["person@example.com"]) == UPSTREAM_DOWN
    assert enqueued(mailman) == []


def test_relay_refusing_every_recipient_for_good_spares_list_mail(
    mailman, proxy_for, upstream
):
    rcpttos = ["refuse5@example.com", "dev@l.example"]
    assert transact(proxy_for(), rcpttos) == (250, b"OK")
    assert upstream.deliveries == []
    assert enqueued(mailman) == [("dev", {"tolist": 1})]


def test_relay_refusing_for_good_without_list_recipients(mailman, proxy_for, upstream):
    assert transact(proxy_for(), ["refuse5@example.com"]) == (
        554,
        b"Transaction failed: all recipients refused by the upstream server",
    )


def test_mailman_failing_after_relay_fails_for_good(
    mailman, proxy_for, upstream, capsys
):
    """A 4xx would make the client send the relayed copy again."""
    mailman.FAIL["Enqueue"] = "dev"
    assert transact(proxy_for(), ["person@example.com", "dev@l.example"]) == (
        FAILED_AFTER_DELIVERY
    )
    assert [d.rcpttos for d in upstream.deliveries] == [["person@example.com"]]
    assert enqueued(mailman) == []
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception")
    assert "OSError'>:queue directory not writable" in out


def test_mailman_failing_after_queueing_a_copy_fails_for_good(
    mailman, proxy_for, upstream
):
    mailman.FAIL["Enqueue"] = "announce"
    assert transact(proxy_for(), ["dev@l.example", "announce@l.example"]) == (
        FAILED_AFTER_DELIVERY
    )
    assert enqueued(mailman) == [("dev", {"tolist": 1})]
    assert upstream.deliveries == []


def test_first_enqueue_failing_is_retried(mailman, proxy_for, upstream):
    """Nothing went on yet: the client may try again, and nothing doubles."""
    mailman.FAIL["Enqueue"] = "dev"
    proxy = proxy_for()
    rcpttos = ["dev@l.example", "announce@l.example", "refuse5@example.com"]
    assert transact(proxy, rcpttos) == LOCAL_ERROR
    mailman.FAIL.clear()
    assert transact(proxy, rcpttos) == (250, b"OK")
    assert enqueued(mailman) == [("dev", {"tolist": 1}), ("announce", {"tolist": 1})]
    assert upstream.deliveries == []


# -- construction ---------------------------------------------------------------


def test_construction_warns(upstream):
    sock_map = {}
    with pytest.warns(DeprecationWarning) as warned:
        proxy = smtpd_compat.MailmanProxy(
            ("127.0.0.1", 0), server_address(upstream), map=sock_map
        )
    proxy.close()
    assert [str(w.message) for w in warned] == [
        "MailmanProxy is deprecated and will be removed in future"
    ]
    assert warned[0].filename == __file__
    assert isinstance(proxy, smtpd_compat.PureProxy)


def test_construction_needs_no_mailman(no_mailman):
    sock_map = {}
    proxy = smtpd_compat.MailmanProxy(("127.0.0.1", 0), ("127.0.0.1", 25), map=sock_map)
    proxy.close()
    assert sock_map == {}


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_smtputf8_is_refused_after_the_warning(how):
    sock_map = {}
    args = [("127.0.0.1", 0), ("127.0.0.1", 25), None, sock_map]
    kwargs = {}
    if how == "keyword":
        kwargs["enable_SMTPUTF8"] = True
    else:
        args.append(True)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError) as caught:
        smtpd_compat.MailmanProxy(*args, **kwargs)
    assert str(caught.value) == "MailmanProxy does not support SMTPUTF8."
    assert sock_map == {}


def test_deprecation_warning_text():
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        proxy = smtpd_compat.MailmanProxy(("127.0.0.1", 0), ("127.0.0.1", 25), map={})
    proxy.close()
    assert [(str(w.message), w.category) for w in warned] == [
        ("MailmanProxy is deprecated and will be removed in future", DeprecationWarning)
    ]


def test_deprecation_warning_through_the_module_warn(monkeypatch):
    """The module's ``warn`` with stacklevel 2: the warning names the caller.

    (test_construction_warns checks the file it names; under mutmut a
    trampoline stands between the caller and __init__.)
    """
    calls = []
    monkeypatch.setattr(smtpd_compat, "warn", lambda *a, **k: calls.append((a, k)))
    proxy = smtpd_compat.MailmanProxy(("127.0.0.1", 0), ("127.0.0.1", 25), map={})
    proxy.close()
    assert calls == [
        (
            (
                "MailmanProxy is deprecated and will be removed in future",
                DeprecationWarning,
            ),
            {"stacklevel": 2},
        )
    ]


# -- side by side with CPython 3.10 ------------------------------------------------

# Runs in a 3.10 interpreter with its smtpd, and in another with smtpd_compat.
REFERENCE_SCRIPT = r'''
import importlib
import io
import json
import sys
import time
import warnings


def snapshot(call):
    """The call, with a Date: made by time.ctime() replaced by "<ctime>"."""
    call = list(call)
    if call[0] == "Enqueue":
        headers = []
        for name, value in call[3]:
            if name == "Date":
                try:
                    time.strptime(value)
                except ValueError:
                    pass
                else:
                    value = "<ctime>"
            headers.append([name, value])
        call[3] = headers
    return call


def run(smtpd, fake_root, cases):
    sys.path.insert(0, fake_root)
    import Mailman

    results = []
    for case in cases:
        del Mailman.CALLS[:]
        delivered = []

        class Proxy(smtpd.MailmanProxy):
            def _deliver(self, *args, **kwargs):
                delivered.append([[repr(arg) for arg in args], sorted(kwargs)])
                return {r: (code, text.encode()) for r, (code, text) in case["refused"].items()}

        proxy = Proxy(("127.0.0.1", 0), ("127.0.0.1", 9), map={}, decode_data=True)
        debug = io.StringIO()
        saved, smtpd.DEBUGSTREAM = smtpd.DEBUGSTREAM, debug
        rcpttos = list(case["rcpttos"])
        try:
            proxy.process_message(("192.0.2.7", 4567), case["mailfrom"], rcpttos, case["data"])
        finally:
            smtpd.DEBUGSTREAM = saved
            proxy.close()
        calls = {}
        for call in Mailman.CALLS:
            calls.setdefault(call[0], []).append(snapshot(call))
        results.append(
            {"calls": calls, "delivered": delivered, "rcpttos": rcpttos, "debug": debug.getvalue()}
        )
    return results


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    module = importlib.import_module(sys.argv[1])
    print(json.dumps(run(module, *json.loads(sys.argv[2]))))
'''

DATA = "From: poster@example.com\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: hi\n\nbody"
REFERENCE_CASES = [
    {
        "rcpttos": [
            "announce@lists.example",
            "person@example.com",
            "Dev-Request@Lists.Example",
            "nolist@lists.example",
            "dev-unknown@lists.example",
            "dev-owner-x@lists.example",
            "-admin@lists.example",
        ],
        "refused": {},
    },
    {
        "rcpttos": [
            "dev@l.example",
            "dev-admin@l.example",
            "dev-owner@l.example",
            "dev-request@l.example",
            "dev-join@l.example",
            "DEV-Leave@l.example",
            "announce-join@l.example",
        ],
        "refused": {},
    },
    {"rcpttos": ["dev@l.example"], "data": "Subject: bare\n\nbody", "refused": {}},
    {"rcpttos": ["dev@l.example"], "data": "From:\nSubject: x\n\nb", "refused": {}},
    {"rcpttos": ["person@example.com"], "refused": {"person@example.com": [550, "no"]}},
    {
        "rcpttos": ["dev@l.example", "dev@l.example", "person@example.com"],
        "refused": {},
    },
    {
        "rcpttos": ["a@example.com", "b@example.com", "dev@l.example"],
        "refused": {"a@example.com": [550, "no"]},
    },
]
for _case in REFERENCE_CASES:
    _case.setdefault("data", DATA)
    _case.setdefault("mailfrom", "sender@example.com")


def reference_python_3_10():
    """CPython 3.10: $SMTPD_COMPAT_REFERENCE_PYTHON_3_10 or the newest pyenv one."""
    python = reference_pythons.reference_python(10)
    if not python:
        pytest.fail("no CPython 3.10 found: set SMTPD_COMPAT_REFERENCE_PYTHON_3_10")
    return python


def run_reference_script(command, module, arguments, cwd, env=None):
    """Run REFERENCE_SCRIPT with ``command`` on ``module``; its JSON result."""
    done = subprocess.run(
        [*command, "-c", REFERENCE_SCRIPT, module, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_same_as_python_3_10(fake_root, tmp_path):
    arguments = [str(fake_root), REFERENCE_CASES]
    # -I: the standard library's smtpd, whatever the environment holds.
    theirs = run_reference_script(
        [reference_python_3_10(), "-I"], "smtpd", arguments, tmp_path
    )
    ours = run_reference_script(
        [sys.executable], "smtpd_compat", arguments, tmp_path, subprocess_env()
    )
    assert ours == theirs
    # What the cases did (so that the comparison compares something).
    assert [len(result["calls"].get("Enqueue", [])) for result in ours] == [
        2,
        7,
        1,
        1,
        0,
        2,
        1,
    ]
    assert [result["rcpttos"] for result in ours][-1] == [
        "a@example.com",
        "b@example.com",
    ]
    assert ours[2]["calls"]["Enqueue"][0][3] == [
        ["Subject", "bare"],
        ["From", "sender@example.com"],
        ["Date", "<ctime>"],
    ]
