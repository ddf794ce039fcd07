"""A subclass named SMTPChannel that uses smtpd's old private attributes.

Re-creates ThiefMaster/maildump maildump/smtp.py: the project's own
``class SMTPChannel(smtpd.SMTPChannel)`` overrides smtp_EHLO() with code
taken from an older smtpd that reads ``self.__greeting`` and
``self.__fqdn``.  Because the subclass has the same name, Python mangles
those to ``_SMTPChannel__greeting``/``_SMTPChannel__fqdn``, which smtpd
keeps as deprecated aliases of ``seen_greeting``/``fqdn``: they work, with
a DeprecationWarning pointing at the caller.  The server overrides
handle_accept() to build that channel, and process_message() hands the
message to a handler callable, returning its result.
"""

import asyncore
import json
import os
import smtpd
import smtplib
import socket
import threading
import warnings
from email.parser import Parser

FQDN = socket.getfqdn()
seen_warnings = []


def record_warning(message, category, filename, lineno, file=None, line=None):
    seen_warnings.append(
        [
            category.__name__,
            str(message).replace(FQDN, "<fqdn>"),
            "%s:%d" % (os.path.basename(filename), lineno),
        ]
    )


warnings.showwarning = record_warning
warnings.simplefilter("always", DeprecationWarning)


class SMTPChannel(smtpd.SMTPChannel):
    def smtp_EHLO(self, arg):
        if not arg:
            self.push("501 Syntax: EHLO hostname")
        elif self.__greeting:
            self.push("503 Duplicate HELO/EHLO")
        else:
            self.__greeting = arg
            self.push("250 %s" % self.__fqdn)


class SMTPServer(smtpd.SMTPServer):
    def __init__(self, listener, handler):
        super().__init__(listener, None, decode_data=True)
        self._handler = handler

    def process_message(self, peer, mailfrom, rcpttos, data):
        return self._handler(sender=mailfrom, recipients=rcpttos, body=data)

    def handle_accept(self):
        conn, addr = self.accept()
        SMTPChannel(self, conn, addr, decode_data=True)


stored = []


def smtp_handler(sender, recipients, body):
    message = Parser().parsestr(body)
    stored.append([message["from"] or sender, recipients, len(body)])


server = SMTPServer(("127.0.0.1", 0), smtp_handler)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
replies = []
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        code, text = client.ehlo("maildump-test")
        replies.append([code, text.decode().replace(FQDN, "<fqdn>")])
        replies.append(list(client.docmd("EHLO", "again")))
        replies.append(list(client.docmd("EHLO")))
        client.sendmail(
            "Me <me@example.com>", ["you@example.com"], "From: me@example.com\r\n\r\nhi"
        )
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
print(
    json.dumps(
        {"replies": replies, "stored": stored, "warnings": seen_warnings},
        indent=1,
        sort_keys=True,
        default=repr,
    )
)
