"""One server for the whole test session; each test patches socket.getfqdn.

Re-creates the hostname-pinning trick of python/cpython
Lib/test/test_smtplib.py (``socket.getfqdn = mock_socket.getfqdn`` in
setUp, restored in tearDown) as used by projects that keep one
session-scoped smtpd server and pin the host name per test with
``mock.patch("socket.getfqdn", ...)`` so that greetings and EHLO replies
are predictable.  The server is created before any patch; every
connection's greeting and EHLO reply must show the name in force when the
client connected, as smtpd looked it up for each new channel.
"""

import asyncore
import json
import smtpd
import smtplib
import threading
from unittest import mock


class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        pass


server = Sink(("127.0.0.1", 0), None)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()


def session():
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        code, banner = client.ehlo("tester")
        return [code, banner.decode().splitlines()[0]]


def greeting_line():
    client = smtplib.SMTP(timeout=5)
    code, text = client.connect("127.0.0.1", port)
    client.quit()
    return [code, text.decode()]


results = {}
try:
    for name in ("mx1.example.test", "mx2.example.test"):
        with mock.patch("socket.getfqdn", return_value=name):
            results[name] = {"greeting": greeting_line(), "ehlo": session()}
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
print(json.dumps(results, indent=1, sort_keys=True))
