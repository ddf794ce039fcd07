"""A channel that re-implements smtp_RCPT with smtpd's private helpers.

Re-creates ietf-tools/datatracker ietf/utils/test_smtpserver.py:
``SMTPTestChannel.smtp_RCPT`` is a copy of the standard one built on the
channel's underscore helpers ``_strip_command_keyword()`` and
``_getaddr()``, refusing any address containing "poison" with a 550 and
resetting ``self.rcpt_options``; the server's handle_accept() uses
``pair = self.accept()`` and builds that channel; process_message() takes
``mail_options=None, rcpt_options=None`` keywords; an
``AsyncCoreLoopThread`` runs ``asyncore.loop(count=1)`` in a loop until a
list used as exit condition becomes non-empty.
"""

import asyncore
import json
import smtpd
import smtplib
import threading


class AsyncCoreLoopThread:
    def wrap_loop(self, exit_condition, timeout=1.0, use_poll=False, map=None):
        if map is None:
            map = asyncore.socket_map
        while map and not exit_condition:
            asyncore.loop(timeout=timeout, use_poll=use_poll, map=map, count=1)

    def start(self):
        self.exit_condition = []
        kwargs = {"exit_condition": self.exit_condition, "timeout": 0.02}
        self.thread = threading.Thread(
            target=self.wrap_loop, kwargs=kwargs, daemon=True
        )
        self.thread.start()

    def stop(self):
        self.exit_condition.append(True)
        self.thread.join(5)


class SMTPTestChannel(smtpd.SMTPChannel):
    def smtp_RCPT(self, arg):
        if not self.mailfrom:
            self.push("503 Error: need MAIL command")
            return
        arg = self._strip_command_keyword("TO:", arg)
        address, __ = self._getaddr(arg)
        if not address:
            self.push("501 Syntax: RCPT TO: <address>")
            return
        if "poison" in address:
            self.push("550 Error: Not touching that")
            return
        self.rcpt_options = []
        self.rcpttos.append(address)
        self.push("250 Ok")


class SMTPTestServer(smtpd.SMTPServer):
    def __init__(self, localaddr, remoteaddr, inbox):
        self.inbox = inbox
        smtpd.SMTPServer.__init__(self, localaddr, remoteaddr)

    def handle_accept(self):
        pair = self.accept()
        if pair is not None:
            conn, addr = pair
            SMTPTestChannel(self, conn, addr)

    def process_message(
        self, peer, mailfrom, rcpttos, data, mail_options=None, rcpt_options=None
    ):
        self.inbox.append(
            [mailfrom, rcpttos, data.decode("ascii"), mail_options, rcpt_options]
        )


inbox = []
server = SMTPTestServer(("127.0.0.1", 0), None, inbox)
port = server.socket.getsockname()[1]
driver = AsyncCoreLoopThread()
driver.start()
results = {}
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        results["mixed"] = client.sendmail(
            "secretariat@ietf.example",
            ["chair@ietf.example", "poison@ietf.example", "ad@ietf.example"],
            "Subject: Last Call\r\n\r\nPlease review.\r\n",
        )
        client.mail("x@ietf.example")
        results["bad_syntax"] = list(client.docmd("RCPT", "TO:"))
        results["no_angle"] = list(client.docmd("RCPT", "TO:plain@ietf.example"))
        client.rset()
        results["before_mail"] = list(client.docmd("RCPT", "TO:<late@ietf.example>"))
        try:
            client.sendmail("x@ietf.example", ["poison-pill@ietf.example"], "x")
        except smtplib.SMTPRecipientsRefused as error:
            results["all_poisoned"] = sorted(error.recipients)
finally:
    driver.stop()
    server.close()
results["inbox"] = inbox
results["loop_stopped"] = not driver.thread.is_alive()
print(json.dumps(results, indent=1, sort_keys=True, default=repr))
