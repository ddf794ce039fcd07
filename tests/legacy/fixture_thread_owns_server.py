"""A pytest-style yield fixture whose thread creates and runs the server.

Re-creates the SMTPServerThread fixture of nomad-coe/nomad's
tests/conftest.py (the smtpd version, before it moved to aiosmtpd): a
Thread subclass whose run() defines an SMTPServer subclass on the spot,
binds it to port 0, publishes ``socket.getsockname()`` as ``host_port``
and runs ``asyncore.loop(timeout=...)``; messages are kept as
``RecordedMessage`` namedtuples.  The fixture waits for ``host_port``,
yields, then closes the server and joins the thread.  The "test" sends a
MIME message with ``send_message()``.
"""

import asyncore
import json
import smtplib
import threading
from collections import namedtuple
from email.message import EmailMessage
from smtpd import SMTPServer

RecordedMessage = namedtuple(
    "RecordedMessage", "peer envelope_from envelope_recipients data"
)


class SMTPServerThread(threading.Thread):
    def __init__(self, messages):
        super().__init__()
        self.messages = messages
        self.host_port = None
        self.ready = threading.Event()

    def run(self):
        recorded = self.messages

        class _SMTPServer(SMTPServer):
            def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
                recorded.append(RecordedMessage(peer, mailfrom, rcpttos, data))

        self.smtp = _SMTPServer(("127.0.0.1", 0), None)
        self.host_port = self.smtp.socket.getsockname()
        self.ready.set()
        asyncore.loop(timeout=0.05)

    def close(self):
        self.smtp.close()


def smtp_server():
    """The fixture body (a generator, as pytest's yield fixtures are)."""
    messages = []
    thread = SMTPServerThread(messages)
    thread.start()
    if not thread.ready.wait(5):
        raise RuntimeError("server thread did not start")
    yield thread.host_port, messages
    thread.close()
    thread.join(5)
    if thread.is_alive():
        raise RuntimeError("asyncore.loop() still running")


def test_send_message(host_port, messages):
    message = EmailMessage()
    message["From"] = "Sender <sender@example.org>"
    message["To"] = "Recipient <rcpt@example.org>"
    message["Subject"] = "fixture test"
    message.set_content("Hello,\n\nthis is the body.\n")
    with smtplib.SMTP(*host_port, timeout=5) as client:
        refused = client.send_message(message)
    recorded = messages[0]
    return {
        "refused": refused,
        "count": len(messages),
        "peer_host": recorded.peer[0],
        "envelope_from": recorded.envelope_from,
        "envelope_recipients": recorded.envelope_recipients,
        "data_type": type(recorded.data).__name__,
        "data_lines": recorded.data.decode("ascii").splitlines(),
    }


fixture = smtp_server()
host_port, messages = next(fixture)
outcome = test_send_message(host_port, messages)
for _ in fixture:
    pass
print(json.dumps(outcome, indent=1, sort_keys=True))
