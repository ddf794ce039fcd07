"""Message size limits: data_size_limit, the SIZE extension, long commands.

Re-creates the size checks projects ran against smtpd-based test servers,
e.g. CPython's own Lib/test/test_smtplib.py (SMTPSimTests with a SIZE
limit) and mail-client test suites checking that they honour a server's
announced SIZE: servers built with ``data_size_limit=N``, with no limit
(``None``), and with the default.  The client reads the SIZE keyword
from EHLO, is refused at MAIL when it declares too much, and sees the
longer MAIL line that SIZE allows after EHLO but not after HELO.  (What
happens after a too-large DATA differs on purpose - README - so the
session is dropped at that point.)
"""

import asyncore
import json
import smtpd
import smtplib
import socket
import threading


class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.sizes.append([len(data), kwargs["mail_options"]])


servers = {
    "limit_1000": Sink(("127.0.0.1", 0), None, data_size_limit=1000),
    "no_limit": Sink(("127.0.0.1", 0), None, data_size_limit=None),
    "default": Sink(("127.0.0.1", 0), None),
}
for server in servers.values():
    server.sizes = []
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
FQDN = socket.getfqdn()
results = {}
try:
    for name, server in servers.items():
        port = server.socket.getsockname()[1]
        outcome = results[name] = {}
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            code, text = client.ehlo("sizer")
            outcome["ehlo"] = text.decode().replace(FQDN, "<fqdn>").splitlines()
            try:
                client.sendmail("a@example.com", ["b@example.com"], "x" * 900)
                outcome["900_bytes"] = "accepted"
            except smtplib.SMTPSenderRefused as error:
                outcome["900_bytes"] = [error.smtp_code, error.smtp_error.decode()]
            outcome["mail_size_5000"] = list(
                client.docmd("MAIL", "FROM:<a@example.com> SIZE=5000")
            )
            client.rset()
            outcome["mail_size_junk"] = list(
                client.docmd("MAIL", "FROM:<a@example.com> SIZE=lots")
            )
            client.rset()
            long_from = "FROM:<" + "l" * 500 + "@example.com>"
            outcome["long_mail_after_ehlo"], _ = client.docmd("MAIL", long_from)
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.helo("old-client")
            outcome["long_mail_after_helo"], _ = client.docmd("MAIL", long_from)
            outcome["size_after_helo"] = list(
                client.docmd("MAIL", "FROM:<a@example.com> SIZE=10")
            )
        # Too large without announcing it: refused once DATA ends.
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        raw.recv(1024)
        raw.sendall(
            b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        replies = b""
        while b"354" not in replies:
            replies += raw.recv(1024)
        raw.sendall(b"y" * 1500 + b"\r\n.\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            answer += raw.recv(1024)
        outcome["unannounced_1500"] = answer.decode()
        raw.close()
        outcome["delivered"] = server.sizes
finally:
    stop.set()
    thread.join(5)
    for server in servers.values():
        server.close()
    asyncore.close_all()
print(json.dumps(results, indent=1, default=repr))
