"""GNU Mailman's fake MTA: a STAT verb, injected MAIL/RCPT errors, counting.

Re-creates terencehonles/mailman src/mailman/testing/mta.py:
``StatisticsChannel`` adds a ``STAT`` command that makes the server report
its connection count on an out-of-band queue, and overrides ``smtp_MAIL``
and ``smtp_RCPT`` to answer with an error code the test queued beforehand
(falling back to the base class otherwise).  ``ConnectionCountingServer``
overrides ``handle_accept()`` to count connections and build the channel.
The test side checks what smtplib raises for each injected error.
"""

import asyncore
import json
import queue
import smtpd
import smtplib
import threading


class StatisticsChannel(smtpd.SMTPChannel):
    def smtp_STAT(self, arg):
        self.smtp_server.send_statistics()
        self.push("250 Ok")

    def smtp_RCPT(self, arg):
        code = self.smtp_server.next_error("rcpt")
        if code is None:
            smtpd.SMTPChannel.smtp_RCPT(self, arg)
        else:
            self.push("%d Error: SMTPRecipientsRefused" % code)

    def smtp_MAIL(self, arg):
        code = self.smtp_server.next_error("mail")
        if code is None:
            smtpd.SMTPChannel.smtp_MAIL(self, arg)
        else:
            self.push("%d Error: SMTPResponseException" % code)


class ConnectionCountingServer(smtpd.SMTPServer):
    def __init__(self, localaddr, oob_queue, err_queue):
        smtpd.SMTPServer.__init__(self, localaddr, None, decode_data=True)
        self.delivered = []
        self._connection_count = 0
        self._oob_queue = oob_queue
        self._err_queue = err_queue
        self._last_error = None

    def next_error(self, command):
        if self._last_error is None:
            try:
                self._last_error = self._err_queue.get_nowait()
            except queue.Empty:
                return None
        if self._last_error[0] == command:
            code = self._last_error[1]
            self._last_error = None
            return code
        return None

    def handle_accept(self):
        connection, address = self.accept()
        self._connection_count += 1
        StatisticsChannel(self, connection, address)

    def send_statistics(self):
        # The connection asking for statistics does not count.
        self._connection_count -= 1
        self._oob_queue.put(self._connection_count)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.delivered.append([mailfrom, rcpttos, type(data).__name__])


oob_queue = queue.Queue()
err_queue = queue.Queue()
server = ConnectionCountingServer(("127.0.0.1", 0), oob_queue, err_queue)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()


def send(mailfrom, recipients):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            return [
                "ok",
                client.sendmail(mailfrom, recipients, "Subject: t\r\n\r\nx\r\n"),
            ]
    except smtplib.SMTPRecipientsRefused as error:
        return [
            type(error).__name__,
            {k: [v[0], v[1].decode()] for k, v in error.recipients.items()},
        ]
    except smtplib.SMTPResponseException as error:
        return [type(error).__name__, error.smtp_code, error.smtp_error.decode()]


def connection_count():
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.docmd("STAT")
    return oob_queue.get(timeout=5)


results = {}
try:
    results["plain"] = send("a@example.com", ["b@example.com"])
    err_queue.put(("rcpt", 500))
    results["rcpt_500_all"] = send("a@example.com", ["b@example.com"])
    err_queue.put(("rcpt", 451))
    results["rcpt_451_one_of_two"] = send(
        "a@example.com", ["b@example.com", "c@example.com"]
    )
    err_queue.put(("mail", 571))
    results["mail_571"] = send("a@example.com", ["b@example.com"])
    results["connections"] = connection_count()
    results["delivered"] = server.delivered
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
print(json.dumps(results, indent=1, sort_keys=True, default=repr))
