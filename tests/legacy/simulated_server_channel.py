"""A scriptable "simulated" server channel, as smtplib's own tests use.

Re-creates the SimSMTPChannel/SimSMTPServer pattern of python/cpython
Lib/test/test_smtplib.py, written afresh:

* the channel takes extra constructor arguments before smtpd's own, and
  the server's handle_accepted() builds it with them and ``decode_data``;
* smtp_EHLO pushes one multi-line reply (CRLFs inside a single push());
* AUTH LOGIN is a multi-step exchange: the channel adds a protocol state of
  its own and overrides found_terminator() to take the continuation lines
  from ``received_lines`` (joined with ``_emptystring``) while in it;
* canned per-test replies for MAIL (optionally closing with
  close_when_done()), RCPT (a list, one per recipient), counters for RSET;
* EXPN answered with several push() calls;
* handle_error() re-raises, as in the original, so any error is loud.
"""

import asyncore
import base64
import json
import smtpd
import smtplib
import threading

USERS = {"Mr.A@example.com": "John A"}
SECRET = ("Mr.A@example.com", "somepassword")


class SimChannel(smtpd.SMTPChannel):
    mail_response = None
    rcpt_response = None
    disconnect = False
    rcpt_count = 0
    rset_count = 0
    AUTH = 99
    authenticated_user = None

    def __init__(self, extra_features, *args, **kw):
        self._extrafeatures = "".join(
            "250-%s\r\n" % feature for feature in extra_features
        )
        # Registered before the greeting goes out: a client that has read it
        # must find its channel.
        args[0].channels.append(self)
        super().__init__(*args, **kw)

    def found_terminator(self):
        if self.smtp_state == self.AUTH:
            line = self._emptystring.join(self.received_lines)
            self.received_lines = []
            self.auth_step(line)
            return
        super().found_terminator()

    def smtp_EHLO(self, arg):
        self.push(
            "250-simhost\r\n250-SIZE 20000000\r\n" + self._extrafeatures + "250 HELP"
        )
        self.seen_greeting = arg
        self.extended_smtp = True

    def smtp_AUTH(self, arg):
        if "AUTH" not in self._extrafeatures:
            self.push('500 Error: command "AUTH" not recognized')
            return
        parts = arg.split()
        if parts[0].upper() != "LOGIN":
            self.push("504 Unsupported mechanism %s" % parts[0])
            return
        self.smtp_state = self.AUTH
        # smtplib sends the user name with the command (initial response).
        self.auth_step(parts[1] if len(parts) == 2 else None)

    def auth_step(self, line):
        if line is None:
            self.push("334 " + base64.b64encode(b"Username:").decode())
        elif not hasattr(self, "_login_user"):
            self._login_user = base64.b64decode(line).decode()
            self.push("334 " + base64.b64encode(b"Password:").decode())
        else:
            password = base64.b64decode(line).decode()
            if (self._login_user, password) == SECRET:
                self.authenticated_user = self._login_user
                self.push("235 Authentication Succeeded")
            else:
                self.push("535 Authentication credentials invalid")
            del self._login_user
            self.smtp_state = self.COMMAND

    def smtp_VRFY(self, arg):
        if arg in USERS:
            self.push("250 %s %s" % (USERS[arg], smtplib.quoteaddr(arg)))
        else:
            self.push("550 No such user: %s" % arg)

    def smtp_EXPN(self, arg):
        members = ["Mr.A@example.com", "Ms.B@example.com"]
        if arg.lower() != "list-1":
            self.push("550 No access for you!")
            return
        for index, member in enumerate(members):
            separator = "-" if index < len(members) - 1 else " "
            self.push("250%s%s" % (separator, smtplib.quoteaddr(member)))

    def smtp_MAIL(self, arg):
        if self.mail_response is None:
            super().smtp_MAIL(arg)
            return
        self.push(self.mail_response)
        if self.disconnect:
            self.close_when_done()

    def smtp_RCPT(self, arg):
        if self.rcpt_response is None:
            super().smtp_RCPT(arg)
            return
        self.rcpt_count += 1
        reply = self.rcpt_response[self.rcpt_count - 1]
        if reply.startswith("250"):
            address, _ = self._getaddr(self._strip_command_keyword("TO:", arg))
            self.rcpttos.append(address)
        self.push(reply)

    def smtp_RSET(self, arg):
        self.rset_count += 1
        super().smtp_RSET(arg)

    def handle_error(self):
        # asyncore calls this inside its except block: re-raise what it caught.
        raise  # noqa: PLE0704


class SimServer(smtpd.SMTPServer):
    channel_class = SimChannel

    def __init__(self, *args, **kw):
        self._extra_features = []
        self.channels = []
        self.messages = []
        smtpd.SMTPServer.__init__(self, *args, **kw)

    def handle_accepted(self, conn, addr):
        self.channel_class(
            self._extra_features, self, conn, addr, decode_data=self._decode_data
        )

    def process_message(self, peer, mailfrom, rcpttos, data):
        self.messages.append([mailfrom, rcpttos, data])

    def add_feature(self, feature):
        self._extra_features.append(feature)

    def handle_error(self):
        # asyncore calls this inside its except block: re-raise what it caught.
        raise  # noqa: PLE0704


server = SimServer(("127.0.0.1", 0), None, decode_data=True)
server.add_feature("AUTH LOGIN")
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
results = {}
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("me")
        results["features"] = sorted(client.esmtp_features)
        results["vrfy"] = [
            list(client.verify("Mr.A@example.com")),
            list(client.verify("nobody")),
        ]
        results["expn"] = [list(client.expn("list-1")), list(client.expn("other"))]
        results["login"] = list(client.login(*SECRET))
        client.sendmail(
            "Mr.A@example.com", ["b@example.com"], "Subject: sim\r\n\r\nbody"
        )
        client.rset()
        client.rset()
    results["auth_bad_password"] = None
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        try:
            client.login("Mr.A@example.com", "wrong")
        except smtplib.SMTPAuthenticationError as error:
            results["auth_bad_password"] = [error.smtp_code, error.smtp_error.decode()]
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        channel = server.channels[-1]
        channel.rcpt_response = ["250 ok one", "451 try two later", "250 ok three"]
        refused = client.sendmail(
            "x@example.com", ["1@x", "2@x", "3@x"], "Subject: r\r\n\r\n."
        )
        results["scripted_rcpt"] = {
            key: [value[0], value[1].decode()] for key, value in refused.items()
        }
    client = smtplib.SMTP("127.0.0.1", port, timeout=5)
    channel = server.channels[-1]
    channel.mail_response = "421 closing now"
    channel.disconnect = True
    try:
        client.sendmail("x@example.com", ["y@example.com"], "x")
    except smtplib.SMTPSenderRefused as error:
        results["mail_disconnect"] = [error.smtp_code, error.smtp_error.decode()]
    try:
        client.noop()
    except smtplib.SMTPServerDisconnected:
        results["after_disconnect"] = "disconnected"
    client.close()
    results["rset_counts"] = [channel.rset_count for channel in server.channels]
    results["authenticated"] = [
        channel.authenticated_user for channel in server.channels
    ]
    results["messages"] = server.messages
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
print(json.dumps(results, indent=1, sort_keys=True, default=repr))
