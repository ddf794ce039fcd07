"""Unit-testing a channel with ``mock.patch("asynchat.async_chat.push")``.

Re-creates moggers87/salmon salmon/tests/server_tests.py (test_SMTPChannel)
and the channel it tests (salmon/server.py): an SMTPChannel subclass that
refuses a second recipient with 451.  The test builds the channel from
three Mock objects (server, connection, address) - no socket at all -
while ``asynchat.async_chat.push`` is patched, then calls smtp_MAIL and
smtp_RCPT directly and checks the exact bytes handed to async_chat.push():
the greeting with ``smtpd.__version__``, and each reply with its CRLF.
"""

import json
import smtpd
import socket
from unittest import mock


class SMTPChannel(smtpd.SMTPChannel):
    def smtp_RCPT(self, arg):
        if self.rcpttos:
            self.push("451 Will not accept multiple recipients in one transaction")
        else:
            smtpd.SMTPChannel.smtp_RCPT(self, arg)


def pushed(push_mock):
    # push is patched on the class, so the mock gets (self, data).
    return [
        [
            call.args[0] is channel,
            call.args[1].decode().replace(socket.getfqdn(), "<fqdn>"),
        ]
        for call in push_mock.call_args_list
    ]


results = {}
with mock.patch("asynchat.async_chat.push") as push_mock:
    channel = SMTPChannel(mock.Mock(), mock.Mock(), mock.Mock())
    expected_greeting = f"220 {socket.getfqdn()} {smtpd.__version__}\r\n".encode()
    results["greeting_matches"] = push_mock.call_args[0][1:] == (expected_greeting,)
    results["greeting_type"] = type(push_mock.call_args[0][1]).__name__
    results["greeting"] = pushed(push_mock)

    push_mock.reset_mock()
    channel.seen_greeting = True
    channel.smtp_MAIL("FROM: you@example.com\r\n")
    results["mail"] = pushed(push_mock)

    push_mock.reset_mock()
    channel.smtp_RCPT("TO: me@example.com")
    results["rcpt"] = pushed(push_mock)

    push_mock.reset_mock()
    channel.smtp_RCPT("TO: them@example.com")
    results["second_rcpt"] = pushed(push_mock)

    push_mock.reset_mock()
    channel.smtp_NOOP("")
    channel.smtp_HELP("RCPT")
    channel.smtp_EXPN("list")
    results["more"] = pushed(push_mock)
    results["state"] = {
        "mailfrom": channel.mailfrom,
        "rcpttos": channel.rcpttos,
        "smtp_state": channel.smtp_state,
    }
print(json.dumps(results, indent=1, sort_keys=True))
