"""The name-mangled ``_SMTPChannel__*`` attributes kept for old subclasses."""

import warnings

import pytest
from conftest import DummyServer, RecordingServer

import smtpd_compat

ALIASES = [
    ("server", "smtp_server"),
    ("line", "received_lines"),
    ("state", "smtp_state"),
    ("greeting", "seen_greeting"),
    ("mailfrom", "mailfrom"),
    ("rcpttos", "rcpttos"),
    ("data", "received_data"),
    ("fqdn", "fqdn"),
    ("peer", "peer"),
    ("conn", "conn"),
    ("addr", "addr"),
]


def _regenerated_channel_class():
    """SMTPChannel with its aliases made again by the module's generator.

    The module makes them once, on import; making them again in a test
    lets coverage and mutation testing trace the generator to the tests.
    """
    aliases = {
        "_SMTPChannel__" + old: smtpd_compat._deprecated_alias(old, new)
        for old, new in ALIASES
    }
    return type("SMTPChannel", (smtpd_compat.SMTPChannel,), aliases)


@pytest.fixture(params=["made on import", "made again"])
def channel(request, private_map, sockpair):
    if request.param == "made on import":
        channel_class = smtpd_compat.SMTPChannel
    else:
        channel_class = _regenerated_channel_class()
    return channel_class(
        DummyServer(), sockpair[0], ("127.0.0.1", 2525), map=private_map
    )


@pytest.mark.parametrize("old,new", ALIASES)
def test_alias_docstring(old, new):
    made_again = _regenerated_channel_class()
    for channel_class in smtpd_compat.SMTPChannel, made_again:
        alias = vars(channel_class)["_SMTPChannel__" + old]
        assert alias.__doc__ == "Deprecated alias of %s." % new


def test_eleven_aliases_exist():
    for old, new in ALIASES:
        assert isinstance(
            getattr(smtpd_compat.SMTPChannel, "_SMTPChannel__" + old), property
        ), old


@pytest.mark.parametrize("old,new", ALIASES)
def test_get_warns_and_reads(channel, old, new):
    marker = object()
    setattr(channel, new, marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(channel, "_SMTPChannel__" + old)
    assert value is marker
    assert len(caught) == 1
    assert caught[0].category is DeprecationWarning
    assert caught[0].filename == __file__
    assert str(caught[0].message) == (
        "Access to __%s attribute on SMTPChannel is deprecated, use '%s' instead"
        % (old, new)
    )


@pytest.mark.parametrize("old,new", ALIASES)
def test_set_warns_and_writes(channel, old, new):
    marker = object()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setattr(channel, "_SMTPChannel__" + old, marker)
    assert getattr(channel, new) is marker
    assert len(caught) == 1
    assert caught[0].category is DeprecationWarning
    assert caught[0].filename == __file__
    assert str(caught[0].message) == (
        "Setting __%s attribute on SMTPChannel is deprecated, set '%s' instead"
        % (old, new)
    )


def test_greeting_texts_are_pythons():
    """The issue's example, spelled out: programs filter on these texts."""
    channel = smtpd_compat.SMTPChannel.__new__(smtpd_compat.SMTPChannel)
    channel.seen_greeting = "x"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ = channel._SMTPChannel__greeting
        channel._SMTPChannel__greeting = "y"
    get_text = (
        "Access to __greeting attribute on SMTPChannel is deprecated, "
        "use 'seen_greeting' instead"
    )
    set_text = (
        "Setting __greeting attribute on SMTPChannel is deprecated, "
        "set 'seen_greeting' instead"
    )
    assert [str(w.message) for w in caught] == [get_text, set_text]


def test_plain_attribute_syntax(channel):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = channel._SMTPChannel__server
        channel._SMTPChannel__greeting = "client.example"
    assert server is channel.smtp_server
    assert channel.seen_greeting == "client.example"
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert {w.filename for w in caught} == {__file__}


def test_warning_is_an_error_when_asked(channel):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(DeprecationWarning):
            _ = channel._SMTPChannel__state


class LegacyChannel(smtpd_compat.SMTPChannel):
    """A subclass written against the pre-3.3 private attribute names."""

    def smtp_WHO(self, arg):
        # Inside this class ``self.__peer`` would mangle to ``_LegacyChannel__peer``,
        # so old code reached the base class attributes explicitly.
        peer = self._SMTPChannel__peer
        self._SMTPChannel__greeting = arg
        self._SMTPChannel__mailfrom = "legacy@example.com"
        self.push("250 %s:%d" % peer[:2])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_subclass_uses_aliases(serve, connect):
    class Server(RecordingServer):
        channel_class = LegacyChannel

    server = serve(Server)
    client = connect(server)
    reply = client.cmd("WHO old.example")
    host, port = client.local_address[:2]
    assert reply == ("250 %s:%d\r\n" % (host, port)).encode("ascii")
    # Greeting and sender were set through the aliases: no HELO needed, and
    # a MAIL command is now a nested one.
    assert client.cmd("MAIL FROM:<a@b>") == b"503 Error: nested MAIL command\r\n"
    assert client.cmd("RCPT TO:<r@example.com>") == b"250 OK\r\n"
    assert client.cmd("RSET") == b"250 OK\r\n"
    assert client.cmd("MAIL FROM:<a@b>") == b"250 OK\r\n"
    assert server.deliveries == []


def test_subclass_alias_warning_points_at_subclass(channel):
    class Sub(smtpd_compat.SMTPChannel):
        def peek(self):
            return self._SMTPChannel__fqdn

    channel.__class__ = Sub
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert channel.peek() == channel.fqdn
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert caught[0].lineno == Sub.peek.__code__.co_firstlineno + 1
