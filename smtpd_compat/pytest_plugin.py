"""pytest plugin offering the ``smtpd_server`` fixture.

Installed with smtpd-compat, pytest loads it through the ``pytest11``
entry point; without the entry point, enable it with
``-p smtpd_compat.pytest_plugin``.  Nothing else in smtpd_compat imports
pytest.

``smtpd_server`` is a started ``CapturingController`` on a free port of
127.0.0.1, stopped again after the test::

    def test_signup_mail(smtpd_server):
        signup("new.user@example.com", smtp=smtpd_server.address)
        [mail] = smtpd_server.wait_for(1)
        assert mail.message["Subject"] == "Welcome"

Settings, from the weakest to the strongest:

* ini options ``smtpd_server_host``, ``smtpd_server_decode_data``,
  ``smtpd_server_smtputf8``, ``smtpd_server_data_size_limit``,
  ``smtpd_server_tls``, ``smtpd_server_starttls``, ``smtpd_server_smtps``,
  ``smtpd_server_auth`` (``user:password`` words) and
  ``smtpd_server_auth_required``;
* ``@pytest.mark.smtpd_server(...)`` on a module (``pytestmark``), class or
  test function, the closest one winning per keyword.  Its keywords are
  those of ``CapturingController``: ``host``, ``decode_data``,
  ``enable_SMTPUTF8``, ``data_size_limit``, ``server_class`` (a
  CapturingServer subclass), ``tls``, ``starttls``, ``smtps``, ``auth``
  (a mapping user -> password), ``auth_required``, any other argument of
  the server class, and ``ready_timeout``/``stop_timeout``.

``decode_data`` and ``enable_SMTPUTF8`` exclude each other: turning one on
turns off the other where it was turned on at a farther level; both on at
the same level is a usage error (see ``_fixture_options``).  ``tls``,
``starttls`` and ``smtps`` choose the TLS mode together: a marker naming
any of them replaces what farther levels said about all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from .capture import CapturingController

__all__ = ["pytest_addoption", "pytest_configure", "smtpd_server"]

_MARKER = "smtpd_server"
# The two server options that exclude each other.
_EXCLUSIVE = ("decode_data", "enable_SMTPUTF8")
# The keywords choosing the TLS mode, settled as one setting.
_TLS_MODE = ("tls", "starttls", "smtps")
# Boolean ini options of the test kit's TLS and AUTH keywords.
_KIT_FLAGS = {
    "tls": "offer STARTTLS with a throw-away certificate (tls=True)",
    "starttls": "offer STARTTLS with a throw-away certificate (starttls=True)",
    "smtps": "implicit TLS with a throw-away certificate (smtps=True)",
    "auth_required": "refuse MAIL before AUTH (auth_required=True)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini options of the ``smtpd_server`` fixture."""
    parser.addini(
        "smtpd_server_host",
        "address the smtpd_server fixture listens on (default 127.0.0.1)",
        default="127.0.0.1",
    )
    parser.addini(
        "smtpd_server_decode_data",
        "smtpd_server fixture: hand messages over as str (decode_data=True)",
        type="bool",
        default=False,
    )
    parser.addini(
        "smtpd_server_smtputf8",
        "smtpd_server fixture: offer SMTPUTF8 (enable_SMTPUTF8=True)",
        type="bool",
        default=False,
    )
    parser.addini(
        "smtpd_server_data_size_limit",
        "smtpd_server fixture: largest message in bytes, 0 or 'none' for no "
        "limit (default: smtpd's 33554432)",
        default="",
    )
    for name, help_text in _KIT_FLAGS.items():
        parser.addini(
            f"smtpd_server_{name}",
            f"smtpd_server fixture: {help_text}",
            type="bool",
            default=False,
        )
    parser.addini(
        "smtpd_server_auth",
        "smtpd_server fixture: offer AUTH to these users, as user:password "
        "words (auth={user: password})",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``smtpd_server`` marker and check the ini options."""
    _ini_options(config)  # a bad value is a usage error, found at once
    config.addinivalue_line(
        "markers",
        "smtpd_server(**options): options of the smtpd_server fixture "
        "(host, decode_data, enable_SMTPUTF8, data_size_limit, server_class, "
        "tls, starttls, smtps, auth, auth_required, ...)",
    )


def _ini_options(config: pytest.Config) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": config.getini("smtpd_server_host") or "127.0.0.1",
        "decode_data": bool(config.getini("smtpd_server_decode_data")),
        "enable_SMTPUTF8": bool(config.getini("smtpd_server_smtputf8")),
    }
    limit = str(config.getini("smtpd_server_data_size_limit")).strip()
    if limit.lower() == "none":
        options["data_size_limit"] = None
    elif limit:
        try:
            options["data_size_limit"] = int(limit)
        except ValueError:
            raise pytest.UsageError(
                f"smtpd_server_data_size_limit must be a number or 'none', not {limit!r}"
            ) from None
    # Only the settings that are on: with none of them the controller is
    # built exactly as before they existed.
    for name in _KIT_FLAGS:
        if config.getini(f"smtpd_server_{name}"):
            options[name] = True
    users: dict[str, str] = {}
    for word in config.getini("smtpd_server_auth"):
        user, colon, password = word.partition(":")
        if not colon or not user:
            raise pytest.UsageError(
                f"smtpd_server_auth takes user:password words, not {word!r}"
            )
        users[user] = password
    if users:
        options["auth"] = users
    return options


def _describe_mark(mark: pytest.Mark, nodeid: str) -> str:
    arguments = ", ".join(f"{key}={value!r}" for key, value in mark.kwargs.items())
    return f"@pytest.mark.{_MARKER}({arguments}) on {nodeid}"


def _fixture_options(node: pytest.Item) -> dict[str, Any]:
    """The ini settings overridden by the markers, the closest one winning.

    decode_data and enable_SMTPUTF8 cannot both be true.  When a marker
    turns one of them on without naming the other, the other is turned off
    if it was turned on farther away (by the ini options, or by a marker on
    an enclosing class or module).  Both turned on at the same level - by
    one marker, by two markers on the same test, class or module, or by the
    two ini options - is a usage error naming the two sources.
    """
    options = _ini_options(node.config)
    # For each of the two options that is on: (level, description of where
    # it was turned on).  Level 0 is the ini file, then one level per node
    # from the module down to the test.
    turned_on: dict[str, tuple[int, str]] = {}
    for name, ini_name in zip(_EXCLUSIVE, ("decode_data", "smtputf8")):
        if options[name]:
            turned_on[name] = (0, f"the ini option smtpd_server_{ini_name}")
    # iter_markers_with_node() yields the closest marker first: apply the
    # markers from the farthest to the closest, so that the closest wins.
    marks = list(node.iter_markers_with_node(_MARKER))
    levels: dict[int, int] = {}
    for owner, mark in reversed(marks):
        level = levels.setdefault(id(owner), len(levels) + 1)
        if mark.args:
            raise pytest.UsageError(
                f"@pytest.mark.{_MARKER} takes keyword arguments only, got {mark.args!r}"
            )
        for name, other in (_EXCLUSIVE, _EXCLUSIVE[::-1]):
            if (
                mark.kwargs.get(name)
                and other not in mark.kwargs
                and other in turned_on
                and turned_on[other][0] < level
            ):
                options[other] = False
                del turned_on[other]
        if any(name in mark.kwargs for name in _TLS_MODE):
            for name in _TLS_MODE:
                options.pop(name, None)
        options.update(mark.kwargs)
        for name in _EXCLUSIVE:
            if name not in mark.kwargs:
                continue
            if mark.kwargs[name]:
                turned_on[name] = (level, _describe_mark(mark, owner.nodeid))
            else:
                turned_on.pop(name, None)
    if len(turned_on) == len(_EXCLUSIVE):
        name, other = _EXCLUSIVE
        source, other_source = turned_on[name][1], turned_on[other][1]
        where = (
            f"both by {source}"
            if source == other_source
            else f"{name} by {source} and {other} by {other_source}"
        )
        raise pytest.UsageError(
            f"{_MARKER} fixture: decode_data and enable_SMTPUTF8 cannot both "
            f"be true; they are turned on {where}"
        )
    return options


@pytest.fixture
def smtpd_server(request: pytest.FixtureRequest) -> Iterator[CapturingController]:
    """A started CapturingController on a free port, stopped after the test.

    Configure it with the ``smtpd_server`` marker or the ``smtpd_server_*``
    ini options.
    """
    from .capture import CapturingController

    controller = CapturingController(**_fixture_options(request.node))
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
