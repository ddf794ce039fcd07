"""process_message() answering with its own SMTP status strings.

Re-creates salmon's SMTPReceiver (moggers87/salmon salmon/server.py,
tested in salmon/tests/server_tests.py): the message is routed, and a
routing failure raised as ``SMTPError(450, "Not found")`` becomes the
string returned from process_message(), which smtpd sends as the reply to
the final dot; None (or any false value, such as "") means "250 OK".  The
spam filters of smontanaro/spambayes (postfixproxy.py) return
"503 Error: probable spam" the same way.
"""

import asyncore
import json
import smtpd
import smtplib
import threading


class SMTPError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%d %s" % (self.code, self.message)


ROUTES = {
    "ok@example.com": None,
    "empty@example.com": "",
    "queued@example.com": "250 Ok: queued as 4F2A1",
    "spam@example.com": "503 Error: probable spam",
    "full@example.com": SMTPError(452, "Mailbox full"),
    "missing@example.com": SMTPError(450, "Not found"),
    "nope@example.com": SMTPError(550, "5.1.1 User unknown"),
}


class SMTPReceiver(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.routed = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        try:
            outcome = ROUTES[rcpttos[0]]
            if isinstance(outcome, SMTPError):
                raise outcome
            self.routed.append(rcpttos[0])
            return outcome
        except SMTPError as err:
            return str(err)


server = SMTPReceiver(("127.0.0.1", 0), None)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
replies = {}
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("salmon-test")
        for recipient in ROUTES:
            client.mail("sender@example.com")
            client.rcpt(recipient)
            replies[recipient] = list(client.data("Subject: route\r\n\r\nhi\r\n"))
        replies["after_errors_noop"] = list(client.noop())
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
print(json.dumps({"replies": replies, "routed": server.routed}, indent=1, default=repr))
