"""The smtpd_server fixture's settings, worked out without running pytest.

test_pytest_plugin.py runs the plugin for real (with pytester, often in a
child process); here its pure parts - the ini options it declares, how it
reads them, and how markers override them - are called directly with
stand-ins for pytest's parser, config and test node.
"""

import types

import pytest

from smtpd_compat import pytest_plugin

INI_DEFAULTS = {
    "smtpd_server_host": "127.0.0.1",
    "smtpd_server_decode_data": False,
    "smtpd_server_smtputf8": False,
    "smtpd_server_data_size_limit": "",
    "smtpd_server_tls": False,
    "smtpd_server_starttls": False,
    "smtpd_server_smtps": False,
    "smtpd_server_auth_required": False,
    "smtpd_server_auth": [],
}


class StandInConfig:
    """getini() answers from INI_DEFAULTS overridden by ``ini``."""

    def __init__(self, **ini):
        self.ini = dict(INI_DEFAULTS, **ini)
        self.ini_lines = []

    def getini(self, name):
        return self.ini[name]

    def addinivalue_line(self, name, line):
        self.ini_lines.append((name, line))


class StandInNode:
    """A test item whose markers are given closest first, as pytest does."""

    def __init__(self, config, *marks):
        self.config = config
        self.marks = marks

    def iter_markers_with_node(self, name=None):
        for owner, mark in self.marks:
            if name is None or mark.name == name:
                yield owner, mark


def owner(nodeid):
    return types.SimpleNamespace(nodeid=nodeid)


TEST = owner("test_mail.py::test_it")
MODULE = owner("test_mail.py")


def mark(**kwargs):
    """An @pytest.mark.smtpd_server(**kwargs), as the node gives it."""
    return types.SimpleNamespace(name="smtpd_server", args=(), kwargs=kwargs)


def ini_options(**ini):
    return pytest_plugin._ini_options(StandInConfig(**ini))


def test_declared_ini_options_as_pytest_help_shows_them():
    declared = []

    class StandInParser:
        def addini(self, name, help, type=None, default=None):
            declared.append((name, help, type, default))

    pytest_plugin.pytest_addoption(StandInParser())
    fixture = "smtpd_server fixture: "
    assert declared == [
        (
            "smtpd_server_host",
            "address the smtpd_server fixture listens on (default 127.0.0.1)",
            None,
            "127.0.0.1",
        ),
        (
            "smtpd_server_decode_data",
            fixture + "hand messages over as str (decode_data=True)",
            "bool",
            False,
        ),
        (
            "smtpd_server_smtputf8",
            fixture + "offer SMTPUTF8 (enable_SMTPUTF8=True)",
            "bool",
            False,
        ),
        (
            "smtpd_server_data_size_limit",
            fixture + "largest message in bytes, 0 or 'none' for no limit "
            "(default: smtpd's 33554432)",
            None,
            "",
        ),
        (
            "smtpd_server_tls",
            fixture + "offer STARTTLS with a throw-away certificate (tls=True)",
            "bool",
            False,
        ),
        (
            "smtpd_server_starttls",
            fixture + "offer STARTTLS with a throw-away certificate (starttls=True)",
            "bool",
            False,
        ),
        (
            "smtpd_server_smtps",
            fixture + "implicit TLS with a throw-away certificate (smtps=True)",
            "bool",
            False,
        ),
        (
            "smtpd_server_auth_required",
            fixture + "refuse MAIL before AUTH (auth_required=True)",
            "bool",
            False,
        ),
        (
            "smtpd_server_auth",
            fixture + "offer AUTH to these users, as user:password words "
            "(auth={user: password})",
            "args",
            [],
        ),
    ]
    assert set(INI_DEFAULTS) == {name for name, *_ in declared}


def test_configure_registers_the_marker():
    config = StandInConfig()
    pytest_plugin.pytest_configure(config)
    assert config.ini_lines == [
        (
            "markers",
            (
                "smtpd_server(**options): options of the smtpd_server fixture "
                "(host, decode_data, enable_SMTPUTF8, data_size_limit, "
                "server_class, tls, starttls, smtps, auth, auth_required, ...)"
            ),
        )
    ]


def test_ini_defaults_give_the_controller_defaults():
    assert ini_options() == {
        "host": "127.0.0.1",
        "decode_data": False,
        "enable_SMTPUTF8": False,
    }
    # An empty host setting means the default too.
    assert ini_options(smtpd_server_host="")["host"] == "127.0.0.1"


def test_every_ini_option_read():
    options = ini_options(
        smtpd_server_host="::1",
        smtpd_server_smtputf8=True,
        smtpd_server_data_size_limit=" 1024 ",
        smtpd_server_tls=True,
        smtpd_server_auth_required=True,
        smtpd_server_auth=["ann:pw", "bob:a:b", "eve:"],
    )
    assert options == {
        "host": "::1",
        "decode_data": False,
        "enable_SMTPUTF8": True,
        "data_size_limit": 1024,
        "tls": True,
        "auth_required": True,
        "auth": {"ann": "pw", "bob": "a:b", "eve": ""},
    }


@pytest.mark.parametrize("spelling", ["none", "None", "NONE"])
def test_ini_size_none_means_no_limit(spelling):
    options = ini_options(smtpd_server_data_size_limit=spelling)
    assert "data_size_limit" in options
    assert options["data_size_limit"] is None


@pytest.mark.parametrize("word", ["ann", ":pw", ""])
def test_ini_auth_words_need_a_user_and_a_colon(word):
    message = "smtpd_server_auth takes user:password words, not %r" % word
    with pytest.raises(pytest.UsageError) as info:
        ini_options(smtpd_server_auth=["ann:pw", word])
    assert str(info.value) == message


def fixture_options(config, *marks):
    return pytest_plugin._fixture_options(StandInNode(config, *marks))


def test_only_smtpd_server_markers_count():
    other = types.SimpleNamespace(name="other", args=(), kwargs={"host": "elsewhere"})
    options = fixture_options(StandInConfig(), (TEST, other))
    assert options["host"] == "127.0.0.1"


def test_a_marker_naming_one_tls_mode_replaces_all_three():
    config = StandInConfig(smtpd_server_tls=True)
    assert fixture_options(config, (TEST, mark(host="h")))["tls"] is True
    options = fixture_options(config, (TEST, mark(smtps=True)))
    assert options["smtps"] is True
    assert "tls" not in options
    assert "smtps" in fixture_options(StandInConfig(), (TEST, mark(smtps=True)))


def test_decode_data_turned_off_where_smtputf8_is_turned_on():
    config = StandInConfig(smtpd_server_decode_data=True)
    options = fixture_options(
        config, (TEST, mark(decode_data=False, enable_SMTPUTF8=True))
    )
    assert options["decode_data"] is False
    assert options["enable_SMTPUTF8"] is True
    # Turning off what nothing turned on is allowed too.
    options = fixture_options(StandInConfig(), (MODULE, mark(decode_data=False)))
    assert options["decode_data"] is False
