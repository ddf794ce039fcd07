"""Launchpad's test SMTP server: private socket map, EXIT verb, message queue.

Re-creates lazr.smtptest's server.py (Canonical; used by Launchpad and by
GNU Mailman 3's test suite, see terencehonles/mailman
src/mailman/testing/mta.py):

* ``Server`` keeps its own ``socket_map`` and makes every dispatcher use it
  by overriding ``add_channel()`` to swap ``self._map`` before registering
  (both on the server and on the channel), then runs
  ``asyncore.loop(map=self.socket_map)`` in a thread;
* ``handle_accept()`` is overridden to call ``self.accept()`` and build the
  channel itself;
* the channel adds an ``EXIT`` command that answers ``250 Ok`` and stops the
  server with ``asyncore.close_all(map=...)``, hijacks ``RSET`` to also
  empty the server's queue, and overrides ``send()`` to swallow socket
  errors;
* process_message() parses the message, adds X-Peer/X-MailFrom/X-RcptTo and
  puts it on a queue.Queue that the test reads.
"""

import asyncore
import json
import queue
import smtpd
import smtplib
import threading
from email import message_from_string

COMMASPACE = ", "


class Channel(smtpd.SMTPChannel):
    def __init__(self, server, connection, address):
        self._server = server
        smtpd.SMTPChannel.__init__(self, server, connection, address, decode_data=True)

    def smtp_EXIT(self, argument):
        self.push("250 Ok")
        self._server.stop()

    def smtp_RSET(self, argument):
        self._server.reset()
        smtpd.SMTPChannel.smtp_RSET(self, argument)

    def send(self, data):
        try:
            return smtpd.SMTPChannel.send(self, data)
        except OSError:
            pass

    def add_channel(self, map=None):
        if self._map is not self._server.socket_map:
            self._map = self._server.socket_map
        smtpd.SMTPChannel.add_channel(self, map)


class Server(smtpd.SMTPServer):
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.socket_map = {}
        smtpd.SMTPServer.__init__(self, (host, port), None, decode_data=True)
        self.set_reuse_addr()

    def add_channel(self, map=None):
        if self._map is not self.socket_map:
            self._map = self.socket_map
        smtpd.SMTPServer.add_channel(self, map)

    def handle_accept(self):
        connection, address = self.accept()
        Channel(self, connection, address)

    def process_message(self, peer, mailfrom, rcpttos, data):
        message = message_from_string(data)
        message["X-Peer"] = peer[0]
        message["X-MailFrom"] = mailfrom
        message["X-RcptTo"] = COMMASPACE.join(rcpttos)
        self.handle_message(message)

    def start(self):
        asyncore.loop(map=self.socket_map)

    def stop(self):
        asyncore.close_all(map=self.socket_map)
        self.close()

    def reset(self):
        pass

    def handle_message(self, message):
        pass


class QueueServer(Server):
    def __init__(self, host, port, queue):
        Server.__init__(self, host, port)
        self.queue = queue

    def handle_message(self, message):
        self.queue.put(message)

    def reset(self):
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break


messages = queue.Queue()
server = QueueServer("127.0.0.1", 0, messages)
port = server.socket.getsockname()[1]
thread = threading.Thread(target=server.start, daemon=True)
thread.start()
report = {"global_map_entries": len(asyncore.socket_map)}
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail(
            "a@example.com", ["list@example.com"], "Subject: one\r\n\r\nfirst\r\n"
        )
    report["after_first"] = messages.qsize()
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("test")
        report["rset"] = client.rset()[0]
    report["after_rset"] = messages.qsize()
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail(
            "b@example.com",
            ["x@example.com", "y@example.com"],
            "Subject: two\r\n\r\nsecond\r\n",
        )
    received = messages.get(timeout=5)
    report["message"] = {
        key: received[key] for key in ("Subject", "X-Peer", "X-MailFrom", "X-RcptTo")
    }
    report["payload"] = received.get_payload()
    exit_client = smtplib.SMTP("127.0.0.1", port, timeout=5)
    report["exit"] = [exit_client.docmd("EXIT")[0]]
    try:
        exit_client.noop()
    except smtplib.SMTPServerDisconnected:
        report["exit"].append("disconnected")
    exit_client.close()
finally:
    thread.join(5)
report["loop_ended"] = not thread.is_alive()
report["private_map_entries"] = len(server.socket_map)
report["global_map_entries_at_end"] = len(asyncore.socket_map)
print(json.dumps(report, indent=1, sort_keys=True))
