"""PureProxy relaying for real to an upstream server.

Re-creates the smtpd_proxy.py example of istommao/pymotw (docs/email/
smtpd.md): ``smtpd.PureProxy(('127.0.0.1', port), (upstream, 25))`` under
``asyncore.loop()``, used to put a local relay in front of a mail server.
PureProxy's process_message() in 3.11 takes no keyword arguments, so it is
created with ``decode_data=True``.  The upstream is another smtpd server,
on its own socket map in its own thread (PureProxy relays with a blocking
smtplib call from inside the loop); it refuses one recipient, which the
proxy logs and the client never hears about.
"""

import asyncore
import io
import json
import smtpd
import smtplib
import threading

smtpd.DEBUGSTREAM = io.StringIO()


class Upstream(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.received = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.received.append([mailfrom, rcpttos, data.decode().splitlines()])


class RefusingChannel(smtpd.SMTPChannel):
    def smtp_RCPT(self, arg):
        if arg and "nobody" in arg:
            self.push("550 No such user here")
            return
        smtpd.SMTPChannel.smtp_RCPT(self, arg)


Upstream.channel_class = RefusingChannel

upstream_map = {}
upstream = Upstream(("127.0.0.1", 0), None, map=upstream_map)
proxy = smtpd.PureProxy(
    ("127.0.0.1", 0), upstream.socket.getsockname()[:2], decode_data=True
)
stop = threading.Event()


def serve(socket_map):
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1, map=socket_map)


threads = [
    threading.Thread(target=serve, args=(upstream_map,), daemon=True),
    threading.Thread(target=serve, args=(asyncore.socket_map,), daemon=True),
]
for thread in threads:
    thread.start()
results = {}
try:
    with smtplib.SMTP(*proxy.socket.getsockname()[:2], timeout=5) as client:
        results["refused_to_client"] = client.sendmail(
            "author@example.com",
            ["recipient@example.com", "nobody@example.com"],
            "To: recipient@example.com\r\nFrom: author@example.com\r\n"
            "Subject: Simple test message\r\n\r\nThis is the body of the message.\r\n",
        )
finally:
    stop.set()
    for thread in threads:
        thread.join(5)
    proxy.close()
    upstream.close()
    asyncore.close_all()
    asyncore.close_all(map=upstream_map)
results["upstream"] = upstream.received
results["proxy_log"] = [
    line
    for line in smtpd.DEBUGSTREAM.getvalue().splitlines()
    if "refus" in line.lower()
]
print(json.dumps(results, indent=1))
