"""The test kit's TLS and AUTH options (issue 11, section 3).

Controller, CapturingController and the smtpd_server fixture take ``tls``,
``starttls``, ``smtps``, ``auth`` and ``auth_required``; a throw-away CA
made with trustme signs the server's certificate, and ``ca_file`` /
``client_context()`` let clients verify it.
"""

import os
import smtplib
import socket
import ssl
import sys
import threading

import pytest
from conftest import TIMEOUT, requires_ipv6

from smtpd_compat import controller as controller_module
from smtpd_compat.capture import CapturedMessage, CapturingController, CapturingServer
from smtpd_compat.controller import Controller, ControllerError

pytest_plugins = ["pytester"]

PLUGIN = "smtpd_compat.pytest_plugin"
USERS = {"ann": "s3cret", "bob": "pa:ss word"}
BODY = "Subject: kit\r\n\r\nsent through the kit\r\n"
KIT_KEYWORDS = (
    "tls_context",
    "ssl_context",
    "authenticator",
    "auth_required",
    "auth_require_tls",
)


class KeywordRecorder(CapturingServer):
    """Keeps the kit's keywords instead of passing them to SMTPServer.

    Lets the controller's side be checked on its own: which keywords it
    passes, and what it does with the certificates, whatever the server
    makes of them.
    """

    received = []

    def __init__(self, *args, **kwargs):
        seen = {name: kwargs.pop(name) for name in KIT_KEYWORDS if name in kwargs}
        type(self).received.append(seen)
        super().__init__(*args, **kwargs)


@pytest.fixture
def recorder():
    KeywordRecorder.received = []
    return KeywordRecorder


def handshake(client_context, server_context, server_hostname):
    """Run a TLS handshake over a socket pair; return the client's view."""
    left, right = socket.socketpair()
    left.settimeout(TIMEOUT)
    right.settimeout(TIMEOUT)
    errors = []

    def serve():
        try:
            with server_context.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_context.wrap_socket(left, server_hostname=server_hostname) as tls:
            version = tls.version()
            tls.sendall(b"x")
    finally:
        thread.join(TIMEOUT)
        left.close()
        right.close()
    assert not errors, errors
    return version


# -- the controller's side, with a server that only records keywords ---------


def test_no_option_passes_no_new_keyword(recorder):
    with Controller(recorder) as controller:
        assert controller.ca_file is None
        assert controller.tls_mode is None
        with pytest.raises(RuntimeError, match="without tls=True"):
            controller.client_context()
    assert recorder.received == [{}]


@pytest.mark.parametrize("option", ["tls", "starttls"])
def test_starttls_gets_a_tls_context_that_clients_verify(recorder, option):
    with Controller(recorder, **{option: True}) as controller:
        [keywords] = recorder.received
        assert set(keywords) == {"tls_context"}
        context = keywords["tls_context"]
        assert isinstance(context, ssl.SSLContext)
        ca_file = controller.ca_file
        assert ca_file and os.path.isfile(ca_file)
        with open(ca_file, encoding="ascii") as pem:
            assert pem.read().startswith("-----BEGIN CERTIFICATE-----")
        for name in ("localhost", "127.0.0.1", "::1"):
            version = handshake(controller.client_context(), context, name)
            assert version.startswith("TLSv1.")
        by_file = ssl.create_default_context(cafile=ca_file)
        assert handshake(by_file, context, "localhost")
        # Verification stays on: another name is refused.
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(controller.client_context(), context, "example.com")
    assert not os.path.exists(ca_file)
    assert controller.ca_file is None
    # Still usable after stop(), from the CA kept in memory.
    assert handshake(controller.client_context(), context, "localhost")


def test_a_default_context_does_not_trust_the_throwaway_ca(recorder):
    with Controller(recorder, tls=True):
        [keywords] = recorder.received
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(
                ssl.create_default_context(), keywords["tls_context"], "localhost"
            )


def test_each_start_makes_a_new_ca(recorder):
    controller = Controller(recorder, tls=True)
    with controller:
        first_file = controller.ca_file
        first = controller.client_context()
    with controller:
        second_context = recorder.received[1]["tls_context"]
        assert controller.ca_file != first_file
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(first, second_context, "localhost")


def test_the_host_name_is_in_the_certificate(recorder):
    with Controller(recorder, tls=True, host="localhost") as controller:
        [keywords] = recorder.received
        assert handshake(
            controller.client_context(), keywords["tls_context"], "localhost"
        )


def test_auth_passes_a_copy_of_the_mapping(recorder):
    users = dict(USERS)
    with Controller(recorder, auth=users, auth_required=True):
        [keywords] = recorder.received
    assert keywords == {
        "authenticator": USERS,
        "auth_required": True,
        # Without TLS, AUTH has to be offered in plain text to be usable.
        "auth_require_tls": False,
    }
    assert keywords["authenticator"] is not users


def test_auth_with_tls_leaves_auth_require_tls_to_the_server(recorder):
    with Controller(recorder, tls=True, auth=USERS):
        [keywords] = recorder.received
    assert set(keywords) == {"tls_context", "authenticator"}


def test_auth_require_tls_can_be_given(recorder):
    with Controller(recorder, auth=USERS, auth_require_tls=True):
        [keywords] = recorder.received
    assert keywords["auth_require_tls"] is True


def test_auth_required_with_an_own_authenticator(recorder):
    def check(channel, mechanism, login, password):
        return False

    with Controller(recorder, authenticator=check, auth_required=True):
        [keywords] = recorder.received
    assert keywords == {"authenticator": check, "auth_required": True}


CONTEXT_GIVEN = (
    "tls=/starttls=/smtps= make the server's context; "
    "do not give tls_context= or ssl_context= as well"
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"starttls": True, "smtps": True},
            "starttls=True and smtps=True exclude each other",
        ),
        (
            {"auth_required": True},
            "auth_required=True needs auth={user: password}",
        ),
        (
            {"auth": USERS, "authenticator": dict.get},
            "give either auth= or authenticator=, not both",
        ),
        ({"tls": True, "tls_context": None}, CONTEXT_GIVEN),
        ({"smtps": True, "ssl_context": None}, CONTEXT_GIVEN),
    ],
)
def test_contradictory_options(kwargs, message):
    with pytest.raises(TypeError) as info:
        Controller(CapturingServer, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("option", ["tls", "smtps", "auth"])
def test_options_do_not_combine_with_a_factory(option):
    value = USERS if option == "auth" else True
    with pytest.raises(TypeError, match="factory"):
        Controller(factory=lambda addr, map: None, **{option: value})


@pytest.mark.parametrize("option", ["tls", "starttls", "smtps"])
def test_missing_trustme_names_the_extra(monkeypatch, option):
    # None in sys.modules makes "import trustme" fail as if not installed.
    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(ImportError) as info:
        CapturingController(**{option: True})
    assert str(info.value) == (
        "TLS in the smtpd_compat test kit needs the trustme package, which "
        "makes its throw-away certificates: pip install 'smtpd-compat[tls]'"
    )
    assert info.value.name == "trustme"


def test_no_trustme_needed_without_tls(monkeypatch, recorder):
    monkeypatch.setitem(sys.modules, "trustme", None)
    with CapturingController(recorder, auth=USERS) as sink:
        assert sink.ca_file is None


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        ("", []),
        ("0.0.0.0", []),
        ("::", []),
        ("127.0.0.1", []),
        ("localhost", []),
        ("mail.test", ["mail.test"]),
    ],
)
def test_certificate_names_for_a_bound_host(host, extra):
    """Every name a local client may dial, and the host the server was
    bound to (unless a wildcard, or already there)."""
    names = controller_module._certificate_names(host)
    assert names == ["localhost", "127.0.0.1", "::1", *extra]


def test_ca_file_lives_in_a_directory_of_its_own(recorder):
    sink = CapturingController(recorder, tls=True).start()
    try:
        directory, name = os.path.split(sink.ca_file)
        assert name == "ca.pem"
        assert os.path.basename(directory).startswith("smtpd-compat-ca-")
        # A directory removed behind the controller's back is no error.
        os.remove(sink.ca_file)
        os.rmdir(directory)
    finally:
        sink.stop()
    assert not os.path.exists(directory)


def test_client_context_needs_a_started_controller():
    with pytest.raises(RuntimeError, match="^the controller has not been started$"):
        Controller(CapturingServer, tls=True).client_context()


def test_tls_and_smtps_together_mean_implicit_tls():
    assert Controller(CapturingServer, tls=True, smtps=True).tls_mode == "smtps"
    assert Controller(CapturingServer, smtps=True).tls_mode == "smtps"
    assert Controller(CapturingServer, starttls=True).tls_mode == "starttls"


def test_captured_message_defaults():
    message = CapturedMessage(
        peer=None,
        mail_from="a@example.com",
        rcpt_tos=("b@example.com",),
        mail_options=(),
        rcpt_options=(),
        data=b"",
        message=None,
    )
    assert message.auth_login is None
    assert message.tls is None


def test_captured_message_takes_the_server_keywords():
    server = CapturingServer(("127.0.0.1", 0), None, map={})
    try:
        server.process_message(
            "peer", "a@x", ["b@x"], b"x", auth_login="ann", tls_version="TLSv1.3"
        )
    finally:
        server.close()
    [message] = server.messages
    assert (message.auth_login, message.tls) == ("ann", "TLSv1.3")


# -- with the real server ----------------------------------------------------------


def send(client, sender="ann@example.com"):
    client.sendmail(sender, ["you@example.com"], BODY)


def test_starttls_and_login_are_captured():
    with CapturingController(tls=True, auth=USERS, auth_required=True) as sink:
        with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client:
            client.ehlo()
            # Before TLS: no AUTH offered (the production default).
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")
            client.starttls(context=sink.client_context())
            client.ehlo()
            assert client.has_extn("auth")
            client.login("bob", USERS["bob"])
            send(client)
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.auth_login == "bob"
    assert mail.tls in ("TLSv1.2", "TLSv1.3")
    assert mail.message["Subject"] == "kit"


def test_implicit_tls_is_captured():
    with CapturingController(smtps=True, decode_data=True) as sink:
        with smtplib.SMTP_SSL(
            "localhost", sink.port, context=sink.client_context(), timeout=TIMEOUT
        ) as client:
            assert not client.ehlo_or_helo_if_needed()
            assert not client.has_extn("starttls")
            send(client)
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.tls in ("TLSv1.2", "TLSv1.3")
    assert mail.auth_login is None
    assert mail.data == BODY.replace("\r\n", "\n").rstrip("\n")


def test_ca_file_works_for_clients():
    with CapturingController(tls=True) as sink:
        context = ssl.create_default_context(cafile=sink.ca_file)
        with smtplib.SMTP("localhost", sink.port, timeout=TIMEOUT) as client:
            client.starttls(context=context)
            send(client)
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.tls is not None


@requires_ipv6
def test_ipv6_loopback_is_in_the_certificate():
    with CapturingController(tls=True, host="::1") as sink:
        assert sink.host == "::1"
        with smtplib.SMTP("::1", sink.port, timeout=TIMEOUT) as client:
            # smtplib checks the certificate against "::1", the host given.
            client.starttls(context=sink.client_context())
            send(client)
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert mail.tls is not None


def test_auth_without_tls():
    with CapturingController(auth=USERS, auth_required=True) as sink:
        with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                send(client)
            assert refused.value.smtp_code == 530
            client.login("ann", USERS["ann"])
            send(client)
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert (mail.auth_login, mail.tls) == ("ann", None)


def test_a_client_that_verifies_with_default_trust_fails():
    with CapturingController(tls=True) as sink:
        with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client, pytest.raises(
            ssl.SSLCertVerificationError
        ):
            client.starttls(context=ssl.create_default_context())
        # The server is still there for the next client.
        with smtplib.SMTP(*sink.address, timeout=TIMEOUT) as client:
            client.starttls(context=sink.client_context())
            send(client)
        sink.wait_for(1, timeout=TIMEOUT)


def test_smtps_probe_fails_against_a_plaintext_server(monkeypatch):
    """The readiness probe of smtps=True really speaks TLS."""
    controller = CapturingController(smtps=True, ready_timeout=1)
    # A server that ignores ssl_context greets in plain text: the
    # probe's handshake must fail and start() must say so.
    original = controller._build_server

    def plaintext_server(sock_map, certificates):
        return original(sock_map, None)

    monkeypatch.setattr(controller, "_build_server", plaintext_server)
    with pytest.raises(ControllerError) as failed:
        controller.start()
    assert isinstance(failed.value.__cause__, ssl.SSLError)
    assert not controller.running
    assert controller.ca_file is None


def test_restart_with_tls_serves_again():
    controller = CapturingController(smtps=True)
    for _ in range(2):
        with controller:
            with smtplib.SMTP_SSL(
                "127.0.0.1",
                controller.port,
                context=controller.client_context(),
                timeout=TIMEOUT,
            ) as client:
                send(client)
            controller.wait_for(1, timeout=TIMEOUT)


# -- the pytest fixture ---------------------------------------------------------

FIXTURE_TESTS = """
import smtplib

import pytest

USERS = {"ann": "s3cret"}


def send(server, login=None, smtps=False):
    if smtps:
        client = smtplib.SMTP_SSL(
            "localhost", server.port, context=server.client_context(), timeout=5
        )
    else:
        client = smtplib.SMTP(*server.address, timeout=5)
    with client:
        if not smtps and server.tls_mode == "starttls":
            client.starttls(context=server.client_context())
        if login:
            client.login(*login)
        client.sendmail("a@example.com", ["b@example.com"], "Subject: x\\r\\n\\r\\nx")


@pytest.mark.smtpd_server(tls=True, auth=USERS, auth_required=True)
def test_marker_tls_and_auth(smtpd_server):
    send(smtpd_server, login=("ann", "s3cret"))
    [mail] = smtpd_server.wait_for(1)
    assert mail.auth_login == "ann"
    assert mail.tls.startswith("TLSv1")


@pytest.mark.smtpd_server(smtps=True)
def test_marker_smtps(smtpd_server):
    send(smtpd_server, smtps=True)
    [mail] = smtpd_server.wait_for(1)
    assert mail.tls.startswith("TLSv1")


def test_default_is_plain(smtpd_server):
    assert smtpd_server.tls_mode is None
    assert smtpd_server.ca_file is None
    send(smtpd_server)
    [mail] = smtpd_server.wait_for(1)
    assert (mail.tls, mail.auth_login) == (None, None)
"""


def run_pytest(pytester, *args):
    # -p works whether or not pytest also found the plugin's entry point.
    return pytester.runpytest_subprocess(
        "-p", PLUGIN, "-p", "no:cacheprovider", "--strict-markers", *args, timeout=60
    )


def test_fixture_markers(pytester):
    pytester.makepyfile(test_inner=FIXTURE_TESTS)
    result = run_pytest(pytester)
    result.assert_outcomes(passed=3)


INI_TESTS = """
import pytest


def test_ini_settings(smtpd_server):
    assert smtpd_server.tls_mode == "starttls"
    assert smtpd_server.server_kwargs["authenticator"] == {
        "ann": "s3cret", "bob": "a:b", "carl": "with space"
    }
    assert smtpd_server.server_kwargs["auth_required"] is True


@pytest.mark.smtpd_server(smtps=True)
def test_marker_mode_replaces_the_ini_mode(smtpd_server):
    assert smtpd_server.tls_mode == "smtps"


@pytest.mark.smtpd_server(tls=False)
def test_marker_turns_tls_off(smtpd_server):
    assert smtpd_server.tls_mode is None
    assert smtpd_server.ca_file is None


@pytest.mark.smtpd_server(starttls=True)
class TestClass:
    @pytest.mark.smtpd_server(smtps=True)
    def test_closest_mode_wins(self, smtpd_server):
        assert smtpd_server.tls_mode == "smtps"
"""


def test_ini_settings(pytester):
    pytester.makeini(
        """
        [pytest]
        smtpd_server_tls = true
        smtpd_server_auth = ann:s3cret bob:a:b "carl:with space"
        smtpd_server_auth_required = true
        """
    )
    pytester.makepyfile(test_inner=INI_TESTS)
    result = run_pytest(pytester)
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize("name", ["smtps", "starttls"])
def test_ini_mode_flags(pytester, name):
    pytester.makeini(f"[pytest]\nsmtpd_server_{name} = true\n")
    pytester.makepyfile(
        test_inner=f"""
def test_mode(smtpd_server):
    assert smtpd_server.tls_mode == {name!r}
    assert smtpd_server.ca_file
"""
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=1)


def test_bad_ini_auth_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nsmtpd_server_auth = ann\n")
    pytester.makepyfile(test_inner="def test_nothing(): pass")
    result = run_pytest(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*smtpd_server_auth takes user:password words*"])
