"""The command line's TLS and AUTH options (issue 11, section 2).

``--tls-cert FILE --tls-key FILE`` (STARTTLS), ``--smtps`` (implicit TLS),
``--require-starttls`` and ``--auth-user USER:PASSWORD`` (repeatable).
Option parsing runs in this process; errors, smtplib and swaks against a
child process (``python -m smtpd_compat``) on a port the OS picks.
"""

import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest
from conftest import TIMEOUT, listening_ports, subprocess_env
from tls_support import Certificates

import smtpd_compat

MESSAGE = "Subject: cli\r\n\r\nover TLS\r\n"


@pytest.fixture
def certs(tmp_path):
    return Certificates(tmp_path)


def parse(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["smtpd_compat", *args])
    return smtpd_compat.parseargs()


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def test_defaults_are_off(monkeypatch):
    options = parse(monkeypatch)
    assert options.tls_cert is options.tls_key is options.auth_users is None
    assert not options.smtps
    assert not options.require_starttls
    assert smtpd_compat._tls_and_auth_arguments(options) == {}


def test_options_are_read(monkeypatch, certs):
    options = parse(
        monkeypatch,
        "--tls-cert",
        certs.cert_file,
        "--tls-key",
        certs.key_file,
        "--require-starttls",
        "--auth-user",
        "ann:s3cret:with:colons",
        "--auth-user",
        "bob:",
    )
    assert (options.tls_cert, options.tls_key) == (certs.cert_file, certs.key_file)
    assert options.require_starttls
    assert options.auth_users == {"ann": "s3cret:with:colons", "bob": ""}
    extra = smtpd_compat._tls_and_auth_arguments(options)
    assert sorted(extra) == [
        "auth_required",
        "authenticator",
        "require_starttls",
        "tls_context",
    ]
    assert extra["authenticator"] == options.auth_users


def test_smtps_gives_an_ssl_context(monkeypatch, certs):
    options = parse(
        monkeypatch,
        "--smtps",
        "--tls-cert",
        certs.cert_file,
        "--tls-key",
        certs.key_file,
    )
    assert sorted(smtpd_compat._tls_and_auth_arguments(options)) == ["ssl_context"]


def test_auth_without_tls_is_offered_in_plaintext(monkeypatch):
    options = parse(monkeypatch, "--auth-user", "ann:pw")
    extra = smtpd_compat._tls_and_auth_arguments(options)
    assert extra["auth_require_tls"] is False
    assert extra["auth_required"] is True


def test_the_server_gets_what_the_options_ask_for(main_in_process, certs):
    tls = ["--tls-cert", certs.cert_file, "--tls-key", certs.key_file]
    run = main_in_process(
        "-n", "-c", "DebuggingServer", *tls, "--require-starttls",
        "--auth-user", "ann:pw", "127.0.0.1:0",
    )  # fmt: skip
    assert (run.returncode, run.stderr) == (0, "")
    [server] = run.servers
    assert isinstance(server.tls_context, ssl.SSLContext)
    assert server.ssl_context is None
    assert server.require_starttls is True
    assert server.authenticator == {"ann": "pw"}
    assert server.auth_required is True
    assert server.auth_require_tls is True

    run = main_in_process("-n", "-c", "DebuggingServer", "--smtps", *tls, "127.0.0.1:0")
    [server] = run.servers
    assert isinstance(server.ssl_context, ssl.SSLContext)
    assert server.tls_context is None
    assert server.authenticator is None


def test_smtps_ignores_require_starttls(main_in_process, certs):
    tls = ["--tls-cert", certs.cert_file, "--tls-key", certs.key_file]
    run = main_in_process("-n", "--smtps", "--require-starttls", *tls, "127.0.0.1:0")
    assert run.returncode == 0
    [server] = run.servers
    assert server.require_starttls is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key must be given together"),
        (["--tls-key", "k.pem"], "--tls-cert and --tls-key must be given together"),
        (["--smtps"], "--smtps needs --tls-cert and --tls-key"),
        (["--require-starttls"], "--require-starttls needs --tls-cert and --tls-key"),
        (["--auth-user", "nocolon"], "Invalid --auth-user: USER:PASSWORD expected"),
        (["--auth-user", ":pw"], "Invalid --auth-user: USER:PASSWORD expected"),
    ],
)
def test_option_errors_are_one_line(cli, args, message):
    result = cli("-n", *args, "127.0.0.1:0")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")


def test_bad_auth_user_does_not_echo_the_value(cli):
    result = cli("-n", "--auth-user", "s3cret-no-colon", "127.0.0.1:0")
    assert "s3cret" not in result.stderr


def test_missing_option_argument_is_getopts_message(cli):
    result = cli("-n", "--tls-cert")
    assert result.returncode == 1
    assert result.stderr.endswith("\noption --tls-cert requires argument\n")


def test_help_lists_the_options(cli):
    result = cli("-n", "--help")
    for option in (
        "--tls-cert FILE --tls-key FILE",
        "--smtps",
        "--require-starttls",
        "--auth-user USER:PASSWORD",
    ):
        assert option in result.stderr


def test_unreadable_certificate(cli, certs, tmp_path):
    missing = str(tmp_path / "missing.pem")
    result = cli(
        "-n",
        "-c",
        "DebuggingServer",
        "--tls-cert",
        missing,
        "--tls-key",
        certs.key_file,
        "127.0.0.1:0",
    )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Cannot load TLS certificate %s and key " % missing)
    assert "Traceback" not in result.stderr


def test_key_that_does_not_match(cli, certs, tmp_path):
    other_key = str(tmp_path / "other-key.pem")
    certs.ca.issue_cert("localhost").private_key_pem.write_to_path(other_key)
    result = cli(
        "-n",
        "-c",
        "DebuggingServer",
        "--tls-cert",
        certs.cert_file,
        "--tls-key",
        other_key,
        "127.0.0.1:0",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Cannot load TLS certificate ")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------
# Serving: smtplib and swaks against the child process
# --------------------------------------------------------------------------


@pytest.fixture
def start(certs):
    processes = []

    def run(*args, smtps=False):
        process = subprocess.Popen(
            [sys.executable, "-m", "smtpd_compat", "-n", "-c", "DebuggingServer"]
            + ["--tls-cert", certs.cert_file, "--tls-key", certs.key_file]
            + list(args)
            + ["127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        processes.append(process)
        return wait_until_serving(process, smtps, certs)

    yield run
    for process in processes:
        process.kill()
        process.communicate(timeout=TIMEOUT)


def wait_until_serving(process, smtps, certs):
    deadline = time.monotonic() + 20
    port = None
    while time.monotonic() < deadline and process.poll() is None:
        ports = listening_ports(process.pid)
        if ports:
            [port] = ports
            break
        time.sleep(0.02)
    assert port is not None, "the command line did not listen"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as probe:
        if smtps:
            context = certs.client_context()
            with context.wrap_socket(probe, server_hostname="localhost") as tls:
                assert tls.recv(1024).startswith(b"220 ")
        else:
            assert probe.recv(1024).startswith(b"220 ")
    return port


def test_smtplib_starttls_login(start, certs):
    port = start("--auth-user", "ann:s3cret")
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.starttls(context=certs.client_context())
        client.login("ann", "s3cret")
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)


def test_smtplib_smtps(start, certs):
    port = start("--smtps", "--auth-user", "ann:s3cret", smtps=True)
    context = certs.client_context()
    with smtplib.SMTP_SSL(
        "127.0.0.1", port, timeout=TIMEOUT, context=context
    ) as client:
        client.login("ann", "s3cret")
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)


def test_require_starttls_on_the_command_line(start):
    port = start("--require-starttls")
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.ehlo()
        code, reply = client.mail("a@example.com")
        assert (code, reply) == (530, b"Must issue a STARTTLS command first")


SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")


def swaks(port, certs, *args):
    return subprocess.run(
        [SWAKS, "--server", "127.0.0.1:%d" % port, "--from", "a@example.com"]
        + ["--to", "b@example.com", "--tls-ca-path", certs.ca_file, "--tls-verify"]
        + list(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_swaks
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("smtps", [False, True], ids=["tls", "tls-on-connect"])
def test_swaks(start, certs, mechanism, smtps):
    port = start(*(["--smtps"] if smtps else []), "--auth-user", "u:p", smtps=smtps)
    tls = "--tls-on-connect" if smtps else "--tls"
    result = swaks(
        port,
        certs,
        tls,
        "--auth",
        mechanism,
        "--auth-user",
        "u",
        "--auth-password",
        "p",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout


@needs_swaks
def test_swaks_refusals(start, certs):
    port = start("--auth-user", "u:p")
    wrong = swaks(
        port,
        certs,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "u",
        "--auth-password",
        "x",
    )
    assert "535 5.7.8 Authentication credentials invalid" in wrong.stdout
    assert wrong.returncode != 0
    no_auth = swaks(port, certs, "--tls")
    assert "530 5.7.0 Authentication required" in no_auth.stdout
    assert no_auth.returncode != 0
