"""A PureProxy subclass whose relay step is replaced to capture, not send.

Re-creates rsmusllp/king-phisher king_phisher/smtp_server.py (a PureProxy
subclass with a "debugging" switch under which messages are logged and
dropped instead of relayed) and the usual way such proxies were tested:
override ``_deliver(mailfrom, rcpttos, data)`` to record what PureProxy
would have relayed, and return a refusal dict for some recipients.
PureProxy's process_message() (the 3.11 one takes no keyword arguments,
hence ``decode_data=True``) adds the X-Peer header after the headers and
passes the refusals to DEBUGSTREAM.
"""

import asyncore
import io
import json
import re
import smtpd
import smtplib
import threading

smtpd.DEBUGSTREAM = io.StringIO()


class CapturingProxy(smtpd.PureProxy):
    def __init__(self, localaddr, remoteaddr, debugging=False):
        self.debugging = debugging
        self.relayed = []
        self.dropped = []
        super().__init__(localaddr, remoteaddr, decode_data=True)

    def process_message(self, peer, mailfrom, rcpttos, data):
        if self.debugging:
            self.dropped.append([mailfrom, rcpttos])
            return
        return super().process_message(peer, mailfrom, rcpttos, data)

    def _deliver(self, mailfrom, rcpttos, data):
        self.relayed.append([mailfrom, rcpttos, data])
        return {r: (550, "no such user") for r in rcpttos if r.startswith("gone")}


proxy = CapturingProxy(("127.0.0.1", 0), ("relay.invalid", 25))
port = proxy.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
replies = []
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        replies.append(
            client.sendmail(
                "campaign@example.com",
                ["target@example.com", "gone@example.com"],
                "From: campaign@example.com\r\nSubject: Invoice\r\n\r\nPlease pay.\r\nThanks\r\n",
            )
        )
        replies.append(
            client.sendmail("x@example.com", ["y@example.com"], "No headers at all")
        )
        proxy.debugging = True
        replies.append(
            client.sendmail(
                "x@example.com", ["z@example.com"], "Subject: dropped\r\n\r\n"
            )
        )
finally:
    stop.set()
    thread.join(5)
    proxy.close()
    asyncore.close_all()
debug = [
    line
    for line in smtpd.DEBUGSTREAM.getvalue().splitlines()
    if line.startswith("we got some refusals")
]
print(
    json.dumps(
        {
            "replies": replies,
            "relayed": proxy.relayed,
            "dropped": proxy.dropped,
            "refusals_logged": [re.sub(r"\d{4,5}", "<port>", line) for line in debug],
        },
        indent=1,
    )
)
