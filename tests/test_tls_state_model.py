"""A hypothesis state machine for sessions with STARTTLS and AUTH (issue 11).

Hypothesis strings together commands - EHLO, STARTTLS, AUTH with good and
bad credentials in each form, MAIL, RCPT, DATA, RSET, NOOP, unknown verbs -
on one real connection to the test kit's server (STARTTLS offered, AUTH
required, optionally ``require_starttls``).  A small model of the session
(TLS up? greeted? logged in? envelope?) predicts every reply code; the
captured messages must be exactly those the model accepted, each with the
login and TLS of its session.
"""

import base64
import os
import re
import socket

from conftest import TIMEOUT
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from smtpd_compat.capture import CapturingController

USER, PASSWORD = "ann", "s3cret"
FINAL_REPLY = re.compile(rb"(?m)^(\d{3}) [^\r\n]*\r\n")
ALLOWED_BEFORE_STARTTLS = {"EHLO", "HELO", "NOOP", "QUIT", "STARTTLS"}


def b64(text):
    return base64.b64encode(text.encode()).decode()


class Connection:
    """One SMTP connection that can switch to TLS; reads reply codes."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def code(self):
        while True:
            match = FINAL_REPLY.search(self.buffer)
            if match:
                self.buffer = self.buffer[match.end() :]
                return int(match.group(1))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += chunk

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.code()

    def start_tls(self, context):
        assert self.buffer == b""
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def close(self):
        self.sock.close()


class TLSSession(RuleBasedStateMachine):
    @initialize(require_starttls=st.booleans())
    def start(self, require_starttls):
        options = {"require_starttls": True} if require_starttls else {}
        self.sink = CapturingController(
            tls=True, auth={USER: PASSWORD}, auth_required=True, **options
        ).start()
        self.require_starttls = require_starttls
        self.connection = Connection(self.sink.port)
        assert self.connection.code() == 220
        self.tls = self.greeted = self.authed = False
        self.in_mail = self.has_rcpt = False
        self.delivered = []

    def teardown(self):
        sink = getattr(self, "sink", None)
        if sink is not None:
            self.connection.close()
            sink.stop()

    # -- the model ----------------------------------------------------------

    def refused_before_tls(self, verb):
        return (
            self.require_starttls
            and not self.tls
            and verb not in ALLOWED_BEFORE_STARTTLS
        )

    def expect(self, verb, line, code):
        actual = self.connection.send(line)
        if self.refused_before_tls(verb):
            code = 530
        assert actual == code, (line, actual, code)
        return actual

    def auth_refusal(self):
        """The reply code AUTH gets before any credentials, or None."""
        if not self.greeted:
            return 503
        if not self.tls:
            return 538  # AUTH only over TLS (the kit's default with TLS)
        if self.authed or self.in_mail:
            return 503
        return None

    # -- rules ------------------------------------------------------------------

    @rule()
    def ehlo(self):
        code = 503 if self.greeted else 250
        if self.expect("EHLO", "EHLO client.example", code) == 250:
            self.greeted = True
            self.in_mail = self.has_rcpt = False

    @rule()
    def noop(self):
        self.expect("NOOP", "NOOP", 250)

    @rule()
    def rset(self):
        if self.expect("RSET", "RSET", 250) == 250:
            self.in_mail = self.has_rcpt = False

    @rule(verb=st.sampled_from(["FOO", "STARTTLSX", "AUTHX"]))
    def unknown(self, verb):
        self.expect(verb, verb, 500)

    @rule()
    def starttls_twice(self):
        # Only meaningful once TLS is up; before, the rule below runs it.
        if self.tls:
            self.expect("STARTTLS", "STARTTLS", 503)

    @precondition(lambda self: not self.tls)
    @rule()
    def starttls(self):
        self.expect("STARTTLS", "STARTTLS", 220)
        self.connection.start_tls(self.sink.client_context())
        # RFC 3207: the session starts over.
        self.tls = True
        self.greeted = self.authed = self.in_mail = self.has_rcpt = False

    @rule(
        form=st.sampled_from(["plain-ir", "plain", "login-ir", "login"]),
        good=st.booleans(),
    )
    def auth(self, form, good):
        password = PASSWORD if good else PASSWORD + "x"
        mechanism = form.split("-")[0].upper()
        plain = b64(f"\0{USER}\0{password}")
        initial = {
            "plain-ir": plain,
            "login-ir": b64(USER),
        }.get(form)
        line = f"AUTH {mechanism}" + (f" {initial}" if initial else "")
        refusal = None if self.refused_before_tls("AUTH") else self.auth_refusal()
        if refusal is not None or self.refused_before_tls("AUTH"):
            self.expect("AUTH", line, refusal or 530)
            return
        answers = {
            "plain-ir": [],
            "plain": [plain],
            "login-ir": [b64(password)],
            "login": [b64(USER), b64(password)],
        }[form]
        code = self.connection.send(line)
        for answer in answers:
            assert code == 334, (line, code)
            code = self.connection.send(answer)
        assert code == (235 if good else 535), (form, code)
        self.authed = good

    @rule()
    def auth_cancelled(self):
        refusal = None if self.refused_before_tls("AUTH") else self.auth_refusal()
        if refusal is not None or self.refused_before_tls("AUTH"):
            self.expect("AUTH", "AUTH LOGIN", refusal or 530)
            return
        assert self.connection.send("AUTH LOGIN") == 334
        assert self.connection.send("*") == 501

    @rule()
    def mail(self):
        if not self.authed:
            code = 530
        elif not self.greeted or self.in_mail:
            code = 503
        else:
            code = 250
        if self.expect("MAIL", "MAIL FROM:<a@example.com>", code) == 250:
            self.in_mail = True

    @rule()
    def rcpt(self):
        code = 250 if self.greeted and self.in_mail else 503
        if self.expect("RCPT", "RCPT TO:<b@example.com>", code) == 250:
            self.has_rcpt = True

    @rule()
    def data(self):
        code = 354 if self.greeted and self.has_rcpt else 503
        if self.expect("DATA", "DATA", code) != 354:
            return
        number = len(self.delivered)
        assert self.connection.send(f"Subject: {number}\r\n\r\nbody\r\n.") == 250
        self.delivered.append(number)
        event("a message delivered over TLS after AUTH")
        self.in_mail = self.has_rcpt = False

    @rule()
    def whole_transaction(self):
        """What a well-behaved client does next, step by step.

        Random rules alone rarely line up the six steps a delivery needs;
        this one takes them from wherever the session is, each step still
        checked against the model.
        """
        if not self.tls:
            self.starttls()
        if not self.greeted:
            self.ehlo()
        if not self.authed:
            self.auth("plain-ir", True)
        if not self.in_mail:
            self.mail()
        self.rcpt()
        self.data()

    @invariant()
    def captured_as_modelled(self):
        if not hasattr(self, "sink"):
            return
        mails = self.sink.messages
        assert [int(m.message["Subject"]) for m in mails] == self.delivered
        for mail in mails:
            assert mail.auth_login == USER
            assert mail.tls in ("TLSv1.2", "TLSv1.3")


# Each example is a TLS session on a fresh server, dearer than the plain
# sessions of test_fuzz.py: a tenth of its example count (100 by default).
EXAMPLES = max(100, int(os.environ.get("SMTPD_COMPAT_FUZZ_EXAMPLES", "100")) // 10)

# No deadline: the time a session takes depends on the machine's load.
TLSSession.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    database=None,
    # Each step waits for real replies over TLS; on a loaded machine that
    # is counted against data generation.
    suppress_health_check=[HealthCheck.too_slow],
)
test_tls_sessions = TLSSession.TestCase
