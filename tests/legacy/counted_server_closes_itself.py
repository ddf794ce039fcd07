"""A server that takes N messages, then refuses clients and shuts itself down.

Re-creates wking/pygrader pygrader/test/server.py: the server pops its own
``count``/``process`` keywords before calling SMTPServer.__init__,
overrides ``log_info()``, and overrides ``handle_accepted()`` to close new
connections once ``count`` messages arrived; its channel class overrides
``close()`` to tell the server, which closes itself when the last channel
is gone, so that the plain ``asyncore.loop()`` in the main thread returns.
The clients run in a thread (a "MessageSender").
"""

import asyncore
import json
import smtpd
import smtplib
import threading

log = []


class SMTPChannel(smtpd.SMTPChannel):
    def close(self):
        super().close()
        log.append("channel closed")
        self.smtp_server.channel_closed()


class SMTPServer(smtpd.SMTPServer):
    channel_class = SMTPChannel

    def __init__(self, *args, **kwargs):
        self.count = kwargs.pop("count", None)
        self.process = kwargs.pop("process", None)
        self.channels_open = 0
        super().__init__(*args, **kwargs)

    def log_info(self, message, type="info"):
        log.append("log_info %s: %s" % (type, message))

    def handle_accepted(self, conn, addr):
        if self.count <= 0:
            conn.close()
            log.append("refused a connection")
            return
        super().handle_accepted(conn, addr)
        self.channels_open += 1

    def channel_closed(self):
        self.channels_open -= 1
        if self.channels_open == 0 and self.count <= 0:
            log.append("server closing")
            self.close()

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.count -= 1
        log.append("message %d left" % self.count)
        if self.process:
            self.process(peer, mailfrom, rcpttos, data)


received = []


def process(peer, mailfrom, rcpttos, data):
    received.append([mailfrom, rcpttos, data.decode().splitlines()[-1]])


def sender(port, outcome):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            for number in range(2):
                client.sendmail(
                    "a@example.com",
                    ["b@example.com"],
                    "Subject: x\r\n\r\nPing %d" % number,
                )
        last = smtplib.SMTP("127.0.0.1", port, timeout=5)
        last.sendmail("a@example.com", ["c@example.com"], "Subject: x\r\n\r\nPing 2")
        # The count is used up while this connection is still open: the
        # server is still listening, and turns the next client away.
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=5)
        except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
            outcome.append("fourth client: %s" % type(error).__name__)
        else:
            outcome.append("fourth client: served")
        last.quit()
    except (OSError, smtplib.SMTPException) as error:
        outcome.append(repr(error))


server = SMTPServer(("127.0.0.1", 0), None, process=process, count=3)
port = server.socket.getsockname()[1]
outcome = []
thread = threading.Thread(target=sender, args=(port, outcome), daemon=True)
thread.start()
# Returns once the server has closed itself and every channel is gone.
asyncore.loop(timeout=0.05)
thread.join(5)
print(
    json.dumps(
        {
            "log": log,
            "received": received,
            "outcome": outcome,
            "accepting": server.accepting,
            "map": len(asyncore.socket_map),
        },
        indent=1,
    )
)
