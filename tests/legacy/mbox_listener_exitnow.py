"""Mailman's smtplistener: every message appended to an mbox; EXIT stops it.

Re-creates terencehonles/mailman Mailman/tests/smtplistener.py (a script
run beside the test suite): the server's handle_accept() builds a channel
whose ``EXIT`` command raises ``asyncore.ExitNow``, which ends the
``asyncore.loop()`` running in the main thread; process_message() parses
each message, adds X-Peer/X-MailFrom/X-RcptTos headers and appends it to a
``mailbox.mbox`` file.  The test then reads the mbox back.
"""

import asyncore
import json
import mailbox
import os
import smtpd
import smtplib
import socket
import tempfile
import threading
from email import message_from_string

COMMASPACE = ", "


class Channel(smtpd.SMTPChannel):
    def smtp_EXIT(self, arg):
        raise asyncore.ExitNow


class Server(smtpd.SMTPServer):
    def __init__(self, localaddr, mboxfile):
        smtpd.SMTPServer.__init__(self, localaddr, None, decode_data=True)
        self._mbox = mailbox.mbox(mboxfile)

    def handle_accept(self):
        conn, addr = self.accept()
        Channel(self, conn, addr, decode_data=True)

    def process_message(self, peer, mailfrom, rcpttos, data):
        msg = message_from_string(data)
        msg["X-Peer"] = peer[0]
        msg["X-MailFrom"] = mailfrom
        msg["X-RcptTos"] = COMMASPACE.join(rcpttos)
        self._mbox.add(msg)
        self._mbox.flush()


def client(port, log):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.sendmail(
                "a@example.com", ["list@example.com"], "Subject: one\r\n\r\nbody 1\r\n"
            )
            smtp.sendmail(
                "b@example.com",
                ["list@example.com", "owner@example.com"],
                "Subject: two\r\n\r\nFrom the start\r\nbody 2\r\n",
            )
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        log.append(raw.recv(1024).split(b" ")[0].decode())
        raw.sendall(b"HELO me\r\nEXIT\r\n")
        # What arrives before the server goes away: the HELO reply only.
        received = b""
        while True:
            chunk = raw.recv(1024)
            if not chunk:
                break
            received += chunk
        log.append([line.split(b" ")[0].decode() for line in received.splitlines()])
        raw.close()
    except (OSError, smtplib.SMTPException) as error:
        log.append(repr(error))


with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "mbox")
    server = Server(("127.0.0.1", 0), path)
    port = server.socket.getsockname()[1]
    log = []
    thread = threading.Thread(target=client, args=(port, log), daemon=True)
    thread.start()
    try:
        asyncore.loop(timeout=0.05)
    except asyncore.ExitNow:
        log.append("loop ended by ExitNow")
    # The real script exits here; close what is left so the client sees EOF.
    asyncore.close_all()
    thread.join(5)
    stored = [
        {key: message[key] for key in ("Subject", "X-Peer", "X-MailFrom", "X-RcptTos")}
        for message in mailbox.mbox(path)
    ]
    bodies = [message.get_payload() for message in mailbox.mbox(path)]
print(
    json.dumps({"log": log, "mbox": stored, "bodies": bodies}, indent=1, sort_keys=True)
)
