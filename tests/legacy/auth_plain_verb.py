"""A custom AUTH verb, a hand-written EHLO, and ExitNow on failure.

Re-creates TestSMTPChannel/TestSMTPServer of Lucterios2/contacts
(lucterios/mailing/tests.py): the channel adds ``smtp_AUTH`` (PLAIN is
decoded and stored on the server and answered 235; anything else gets 454
and ``raise ExitNow()``, which stops the loop thread), and, when the server
asks for authentication, replaces smtp_EHLO by three push() calls of its
own, setting seen_greeting and extended_smtp itself.  The server uses
``channel_class`` and class attributes for its settings, and the loop runs
in ``Thread(target=asyncore.loop, kwargs={"timeout": ...})``.  smtplib's
login() does the PLAIN exchange.
"""

import asyncore
import json
import smtpd
import smtplib
import socket
import threading
from asyncore import ExitNow
from base64 import b64decode

FQDN = socket.getfqdn()
thread_errors = []
threading.excepthook = lambda args: thread_errors.append(args.exc_type.__name__)


class TestSMTPChannel(smtpd.SMTPChannel):
    def smtp_AUTH(self, arg):
        if "PLAIN" in arg:
            split_args = arg.split(" ")
            self.smtp_server.auth_params = b64decode(split_args[1]).decode().split("\0")
            self.push("235 Authentication successful.")
        else:
            self.push("454 Temporary authentication failure.")
            raise ExitNow()

    def smtp_EHLO(self, arg):
        if self.smtp_server.with_authentificate:
            if not arg:
                self.push("501 Syntax: EHLO hostname")
                return
            if self.seen_greeting:
                self.push("503 Duplicate HELO/EHLO")
            else:
                self.seen_greeting = arg
                self.extended_smtp = True
                self.push("250-%s Hello %s" % (self.fqdn, arg))
                self.push("250-AUTH LOGIN PLAIN")
                self.push("250 EHLO")
        else:
            smtpd.SMTPChannel.smtp_EHLO(self, arg)


class TestSMTPServer(smtpd.SMTPServer):
    channel_class = TestSMTPChannel
    emails = []
    with_authentificate = False
    auth_params = None

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.emails.append((mailfrom, rcpttos, data.decode()))


def start():
    smtp = TestSMTPServer(("127.0.0.1", 0), None)
    smtp.emails = []
    thread = threading.Thread(
        target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True
    )
    thread.start()
    return smtp, thread


results = {}
smtp, thread = start()
port = smtp.socket.getsockname()[1]
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("no-auth")
        results["plain_ehlo_features"] = sorted(client.esmtp_features)
        client.sendmail("a@example.com", ["b@example.com"], "Subject: 1\r\n\r\nno auth")
    smtp.with_authentificate = True
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        code, text = client.ehlo("auth-client")
        results["auth_ehlo"] = [code, text.decode().replace(FQDN, "<fqdn>")]
        results["login"] = list(client.login("toto", "abc123"))
        client.sendmail(
            "a@example.com", ["c@example.com"], "Subject: 2\r\n\r\nwith auth"
        )
    results["auth_params"] = smtp.auth_params
    results["emails"] = smtp.emails
    failing = smtplib.SMTP("127.0.0.1", port, timeout=5)
    failing.ehlo("bad-auth")
    results["auth_login_reply"] = list(failing.docmd("AUTH", "LOGIN"))
    thread.join(5)
    results["loop_thread_alive"] = thread.is_alive()
    results["loop_thread_errors"] = thread_errors
    failing.close()
finally:
    smtp.close()
    asyncore.close_all()
print(json.dumps(results, indent=1, sort_keys=True, default=repr))
