"""An SMTPServer that is also a threading.Thread (multiple inheritance).

Re-creates pytest-dev/pytest-localserver's pytest_localserver/smtp.py:
``class Server(smtpd.SMTPServer, threading.Thread)``.  Its __init__ calls
both base initialisers, replaces ``self.addr`` with the real bound
address, and keeps an ``outbox`` of parsed email.Message objects; run()
calls ``asyncore.loop(timeout=..., count=1)`` until a stop Event is set;
stop() sets it, joins the thread and closes the server.  The attribute
names of asyncore.dispatcher and of Thread must not trample on each other.
"""

import asyncore
import email
import json
import smtpd
import smtplib
import threading


class Server(smtpd.SMTPServer, threading.Thread):
    WAIT_BETWEEN_CHECKS = 0.01

    def __init__(self, host="127.0.0.1", port=0):
        smtpd.SMTPServer.__init__(self, (host, port), None, decode_data=True)
        if self._localaddr[1] == 0:
            self.addr = self.socket.getsockname()
        self.outbox = []
        self._stopevent = threading.Event()
        self.threadName = self.__class__.__name__
        threading.Thread.__init__(self, name=self.threadName)
        self.daemon = True

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.outbox += [email.message_from_string(data)]

    def run(self):
        while not self._stopevent.is_set():
            asyncore.loop(timeout=self.WAIT_BETWEEN_CHECKS, count=1)

    def stop(self, timeout=None):
        self._stopevent.set()
        threading.Thread.join(self, timeout)
        self.close()

    def __repr__(self):
        return "<smtp.Server %s:%s>" % self.addr


server = Server()
try:
    server.start()
    host, port = server.addr
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.sendmail(
            "alice@example.com",
            "bob@example.com",
            "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHi Bob!\r\n",
        )
        client.sendmail(
            "alice@example.com", ["carol@example.com"], "Subject: second\r\n\r\nx"
        )
finally:
    server.stop(5)

print(
    json.dumps(
        {
            "repr_starts": repr(server).split(":")[0],
            "thread_name": server.name,
            "alive_after_stop": server.is_alive(),
            "accepting_after_stop": server.accepting,
            "outbox": [[m["Subject"], m.get_payload()] for m in server.outbox],
            "is_dispatcher": isinstance(server, asyncore.dispatcher),
        },
        indent=1,
        sort_keys=True,
    )
)
