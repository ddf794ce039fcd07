"""DebuggingServer inside the application, its printout captured.

Re-creates django-extensions/django-extensions
django_extensions/management/commands/mail_debug.py and similar dev
helpers (wildfish/fakemail) that start ``smtpd.DebuggingServer`` in the
running process instead of on the command line, and tests that capture
what it prints with ``contextlib.redirect_stdout``.  Both data modes are
shown: str lines with ``decode_data=True``, ``repr()`` of bytes lines
otherwise, including the "mail options" line for BODY=8BITMIME.  A
subclass also reuses ``_print_message_content()`` to print a message of
its own.
"""

import asyncore
import contextlib
import io
import json
import smtpd
import smtplib
import threading


class QuietDebuggingServer(smtpd.DebuggingServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        print("== summary: %s -> %s ==" % (mailfrom, ", ".join(rcpttos)))
        self._print_message_content(peer, data)


MESSAGE = (
    "From: dev@example.com\r\nTo: qa@example.com\r\nSubject: build done\r\n"
    "\r\nAll green.\r\n.period line\r\n\r\nlast\r\n"
)


def capture(server_class, decode_data, **send_options):
    server = server_class(("127.0.0.1", 0), None, decode_data=decode_data)
    stop = threading.Event()
    console = io.StringIO()

    def serve():
        while not stop.is_set():
            asyncore.loop(timeout=0.01, count=1)

    with contextlib.redirect_stdout(console):
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with smtplib.SMTP(*server.socket.getsockname()[:2], timeout=5) as client:
                client.sendmail(
                    "dev@example.com",
                    ["qa@example.com", "ops@example.com"],
                    MESSAGE,
                    **send_options,
                )
        finally:
            stop.set()
            thread.join(5)
            server.close()
            asyncore.close_all()
    return console.getvalue().splitlines()


print(
    json.dumps(
        {
            "decoded": capture(smtpd.DebuggingServer, True),
            "bytes": capture(smtpd.DebuggingServer, False),
            "bytes_8bitmime": capture(
                smtpd.DebuggingServer, False, mail_options=["BODY=8BITMIME"]
            ),
            "subclass": capture(QuietDebuggingServer, True),
        },
        indent=1,
    )
)
