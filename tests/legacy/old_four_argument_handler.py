"""A Python 2 era handler: process_message(self, peer, mailfrom, rcpttos, data).

Re-creates the many servers written before Python 3.5 added keyword
arguments to process_message(), e.g. istommao/pymotw's smtpd_custom.py
(CustomSMTPServer printing peer, mailfrom, rcpttos and the length) or
wildfish/fakemail's server.py, left with the default ``decode_data``.
Python 3.11 then passes ``mail_options``/``rcpt_options`` to a method
that does not take them: TypeError, reported by asyncore on the console,
and the client is disconnected.  smtpd_compat calls such a handler
without them (README, "Differences from the standard library"), so the
runner expects "delivered" where 3.11 said "disconnected".  With
``decode_data=True`` the same handler works everywhere.
"""

import asyncore
import contextlib
import io
import json
import smtpd
import smtplib
import threading


class CustomSMTPServer(smtpd.SMTPServer):
    received = []

    def process_message(self, peer, mailfrom, rcpttos, data):
        self.received.append(
            [
                "Receiving message from: %s" % peer[0],
                "Message addressed from: %s" % mailfrom,
                "Message addressed to  : %s" % rcpttos,
                "Message length        : %d" % len(data),
            ]
        )


def deliver(decode_data):
    server = CustomSMTPServer(("127.0.0.1", 0), None, decode_data=decode_data)
    server.received = []
    port = server.socket.getsockname()[1]
    stop = threading.Event()
    console = io.StringIO()

    def serve():
        with contextlib.redirect_stdout(console):
            while not stop.is_set():
                asyncore.loop(timeout=0.01, count=1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.sendmail(
                "author@example.com",
                ["recipient@example.com"],
                "Subject: t\r\n\r\nbody\r\n",
            )
        outcome = "delivered"
    except smtplib.SMTPServerDisconnected:
        outcome = "disconnected"
    finally:
        stop.set()
        thread.join(5)
        server.close()
        asyncore.close_all()
    errors = [
        line.split("(")[1].split(">")[0].split("'")[1]
        for line in console.getvalue().splitlines()
        if "uncaptured python exception" in line
    ]
    return {"outcome": outcome, "received": server.received, "console_errors": errors}


print(
    json.dumps(
        {"decode_data=True": deliver(True), "decode_data=False": deliver(False)},
        indent=1,
        sort_keys=True,
    )
)
