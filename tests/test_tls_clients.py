"""Real clients over STARTTLS, implicit TLS and AUTH (issue 11, section 4).

The same client matrix runs against the test kit (a CapturingController
in this process) and against the command line (``python -m smtpd_compat
--tls-cert ... --auth-user ...`` in a child process): smtplib with
``starttls()`` and each AUTH mechanism, ``SMTP_SSL``, and swaks with
``--tls`` and ``--tls-on-connect``.  The clients verify the server's
certificate against the throw-away CA; none turns verification off.
"""

import base64
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap
import time

import pytest
import trustme
from conftest import TIMEOUT, listening_ports, subprocess_env, swaks_session

from smtpd_compat.capture import CapturingController

USER, PASSWORD = "ann", "s3cret pass"
USERS = {USER: PASSWORD}
SENDER, RECIPIENT = "sender@example.com", "rcpt@example.com"
BODY = "Subject: tls matrix\r\n\r\nover TLS\r\n"
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")

# Writes each message and the keywords process_message() got, as JSON.
CAPTURE_MODULE = """
    import json
    import os

    import smtpd_compat


    class CaptureServer(smtpd_compat.SMTPServer):
        count = 0

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            CaptureServer.count += 1
            stem = os.path.join(os.environ["CAPTURE_DIR"], str(CaptureServer.count))
            record = {"mailfrom": mailfrom, "rcpttos": rcpttos, "data": data.decode()}
            record.update(kwargs)
            with open(stem + ".tmp", "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            os.replace(stem + ".tmp", stem + ".json")
"""


class Target:
    """A server under test: where it is, how to trust it, what it got."""

    def __init__(self, port, ca_file, smtps, messages):
        self.port = port
        self.ca_file = ca_file
        self.smtps = smtps
        self._messages = messages

    def client_context(self):
        return ssl.create_default_context(cafile=self.ca_file)

    def received(self, count=1):
        """[(mail_from, auth_login, tls_version)] once ``count`` arrived."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            found = self._messages()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def _kit_target(stack, smtps, require_starttls):
    options = {"require_starttls": True} if require_starttls else {}
    controller = CapturingController(
        smtps=smtps, starttls=not smtps, auth=USERS, auth_required=True, **options
    )
    controller.start()
    stack.append(controller.stop)

    def messages():
        return [(m.mail_from, m.auth_login, m.tls) for m in controller.messages]

    return Target(controller.port, controller.ca_file, smtps, messages)


def _wait_until_serving(process, smtps, context):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        ports = listening_ports(process.pid)
        if ports:
            [port] = ports
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the command line did not listen")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as probe:
        if smtps:
            with context.wrap_socket(probe, server_hostname="127.0.0.1") as tls:
                greeting = tls.recv(1024)
        else:
            greeting = probe.recv(1024)
    assert greeting.startswith(b"220 "), greeting
    return port


def _cli_target(stack, tmp_path, smtps, require_starttls):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / name for name in ("ca", "crt", "key"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    (tmp_path / "capture.py").write_text(textwrap.dedent(CAPTURE_MODULE))
    outdir = tmp_path / "messages"
    outdir.mkdir()
    env = subprocess_env(extra_paths=[str(tmp_path)])
    env["CAPTURE_DIR"] = str(outdir)
    args = ["-n", "-c", "capture.CaptureServer"]
    args += ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    args += ["--auth-user", f"{USER}:{PASSWORD}", "--auth-user", "bob:other"]
    if smtps:
        args.append("--smtps")
    if require_starttls:
        args.append("--require-starttls")
    process = subprocess.Popen(
        [sys.executable, "-m", "smtpd_compat", *args, "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )

    def stop():
        process.terminate()
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            out, err = process.communicate()
        # Credentials never reach the output, debug or not.
        assert PASSWORD.encode() not in out + err

    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        port = _wait_until_serving(process, smtps, context)
    except (AssertionError, OSError) as exc:
        process.kill()
        out, err = process.communicate(timeout=TIMEOUT)
        raise AssertionError(
            f"the command line did not start ({exc!r}): {out!r} {err!r}"
        ) from exc
    stack.append(stop)

    def messages():
        found = []
        for number in range(1, len(os.listdir(outdir)) + 1):
            path = outdir / f"{number}.json"
            if not path.exists():
                break
            record = json.loads(path.read_text(encoding="utf-8"))
            found.append(
                (
                    record["mailfrom"],
                    record.get("auth_login"),
                    record.get("tls_version"),
                )
            )
        return found

    return Target(port, str(ca_file), smtps, messages)


@pytest.fixture
def start(tmp_path):
    """Factory: ``start(kind, smtps=False, require_starttls=False)``."""
    stack = []

    def make(kind, smtps=False, require_starttls=False):
        if kind == "kit":
            return _kit_target(stack, smtps, require_starttls)
        return _cli_target(stack, tmp_path, smtps, require_starttls)

    try:
        yield make
    finally:
        for stop in reversed(stack):
            stop()


KINDS = ["kit", "cli"]


def connect(target):
    """An smtplib client over TLS (STARTTLS or implicit), after EHLO."""
    if target.smtps:
        client = smtplib.SMTP_SSL(
            "localhost", target.port, context=target.client_context(), timeout=TIMEOUT
        )
    else:
        client = smtplib.SMTP("localhost", target.port, timeout=TIMEOUT)
        client.starttls(context=target.client_context())
    client.ehlo()
    return client


def send(client):
    client.sendmail(SENDER, [RECIPIENT], BODY)


# -- smtplib ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("smtps", [False, True], ids=["starttls", "smtps"])
def test_smtplib_login(start, kind, smtps):
    target = start(kind, smtps=smtps)
    with connect(target) as client:
        assert set(client.esmtp_features["auth"].split()) == set(MECHANISMS)
        client.login(USER, PASSWORD)
        send(client)
    [(mail_from, login, version)] = target.received()
    assert (mail_from, login) == (SENDER, USER)
    assert version in TLS_VERSIONS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("initial_response", [True, False], ids=["ir", "challenge"])
def test_smtplib_each_mechanism(start, kind, mechanism, initial_response):
    target = start(kind)
    with connect(target) as client:
        client.user, client.password = USER, PASSWORD
        method = {
            "PLAIN": client.auth_plain,
            "LOGIN": client.auth_login,
            "CRAM-MD5": client.auth_cram_md5,
        }[mechanism]
        code, _ = client.auth(mechanism, method, initial_response_ok=initial_response)
        assert code == 235
        send(client)
    [(_, login, _)] = target.received()
    assert login == USER


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_gets_535(start, kind, mechanism):
    target = start(kind)
    with connect(target) as client:
        client.user, client.password = USER, "wrong"
        method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth(mechanism, method)
        assert refused.value.smtp_code == 535
        # The session goes on: a right password works after a wrong one.
        client.login(USER, PASSWORD)
        send(client)
    assert len(target.received()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_mail_without_auth_gets_530(start, kind):
    target = start(kind)
    with connect(target) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(client)
        assert refused.value.smtp_code == 530
    time.sleep(0.1)
    assert target.received(0) == []


@pytest.mark.parametrize("kind", KINDS)
def test_auth_before_tls_gets_538(start, kind):
    target = start(kind)
    response = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    with smtplib.SMTP("localhost", target.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN " + response)
        assert code == 538
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(client)
        assert refused.value.smtp_code == 530
        # Once TLS is up the same credentials are taken.
        client.starttls(context=target.client_context())
        client.login(USER, PASSWORD)
        send(client)
    [(_, login, version)] = target.received()
    assert login == USER and version in TLS_VERSIONS


@pytest.mark.parametrize("kind", KINDS)
def test_require_starttls(start, kind):
    target = start(kind, require_starttls=True)
    with smtplib.SMTP("localhost", target.port, timeout=TIMEOUT) as client:
        client.ehlo()
        code, message = client.docmd("MAIL", f"FROM:<{SENDER}>")
        assert (code, message) == (530, b"Must issue a STARTTLS command first")
        assert client.noop()[0] == 250
        client.starttls(context=target.client_context())
        client.login(USER, PASSWORD)
        send(client)
    assert len(target.received()) == 1


# -- swaks -------------------------------------------------------------------


def run_swaks(swaks, target, *arguments, tls=True):
    """(exit status, transcript) of one swaks session, verifying the server."""
    if tls:
        tls_options = ["--tls-verify", "--tls-ca-path", target.ca_file]
        tls_options.append("--tls-on-connect" if target.smtps else "--tls")
    else:
        tls_options = []
    return swaks_session(
        swaks,
        target.port,
        *tls_options,
        *arguments,
        sender=SENDER,
        recipient=RECIPIENT,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("smtps", [False, True], ids=["tls", "tls-on-connect"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_swaks(start, swaks, kind, smtps, mechanism):
    target = start(kind, smtps=smtps)
    status, output = run_swaks(
        swaks,
        target,
        "--auth",
        mechanism,
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
    )
    assert status == 0, output
    assert "<~  235 " in output, output
    [(mail_from, login, version)] = target.received()
    assert (mail_from, login) == (SENDER, USER)
    assert version in TLS_VERSIONS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_swaks_wrong_password(start, swaks, kind, mechanism):
    target = start(kind)
    status, output = run_swaks(
        swaks, target, "--auth", mechanism, "--auth-user", USER, "--auth-password", "x"
    )
    assert status != 0
    assert "<~* 535 " in output, output
    assert target.received(0) == []


@pytest.mark.parametrize("kind", KINDS)
def test_swaks_without_auth(start, swaks, kind):
    target = start(kind)
    status, output = run_swaks(swaks, target)
    assert status != 0
    assert "<~* 530 " in output, output
    assert target.received(0) == []


@pytest.mark.parametrize("kind", KINDS)
def test_swaks_auth_without_tls(start, swaks, kind):
    """Before TLS, AUTH is not offered: swaks gives up before sending it."""
    target = start(kind)
    status, output = run_swaks(
        swaks,
        target,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        tls=False,
    )
    assert status != 0
    assert "<-  250-STARTTLS" in output, output
    assert "AUTH" not in output.replace("authentication", ""), output
    assert "*** Host did not advertise authentication" in output, output
    assert target.received(0) == []
