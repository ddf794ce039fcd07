"""A channel whose __init__ skips SMTPChannel.__init__ and sets up state itself.

Re-creates the HSMTPChannel/HSMTPServer of a honeypot framework's SMTP
service (module ``Honeypot.Services``, seen in the search index; the
repository is not named there): to fake another MTA's banner and host
name, its channel __init__ calls ``asynchat.async_chat.__init__(self,
conn, map=map)`` directly and then assigns every attribute smtpd's own
__init__ would (``smtp_server``, ``conn``, ``_emptystring``/``_linesep``/
``_dotsep``/``_newline``, ``_set_rset_state()``, ``seen_greeting``,
``extended_smtp``, ``command_size_limits.clear()``, ``fqdn``, ``peer``)
before pushing its own 220; it logs every push and every piece of input in
overrides of push() and collect_incoming_data() that keep smtpd's size
accounting, and silences handle_error().  The server sets
``self.channel_class`` after SMTPServer.__init__ and overrides
handle_accepted() to pass the private ``self._map`` and
``self._decode_data`` on; process_message() logs like DebuggingServer.
"""

import asynchat
import asyncore
import errno
import json
import re
import smtpd
import smtplib
import threading

FQDN = "mail.example.net"
SOFTWARE_VERSION = "ESMTP Sendmail 8.15.2/8.15.2"
log = []


class HSMTPChannel(smtpd.SMTPChannel):
    def __init__(
        self,
        server,
        conn,
        addr,
        data_size_limit=smtpd.DATA_SIZE_DEFAULT,
        map=None,
        enable_SMTPUTF8=False,
        decode_data=False,
    ):
        asynchat.async_chat.__init__(self, conn, map=map)
        self.smtp_server = server
        self.conn = conn
        self.addr = addr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        if decode_data:
            self._emptystring = ""
            self._linesep = "\r\n"
            self._dotsep = "."
            self._newline = "\n"
        else:
            self._emptystring = b""
            self._linesep = b"\r\n"
            self._dotsep = ord(b".")
            self._newline = b"\n"
        self._set_rset_state()
        self.seen_greeting = ""
        self.extended_smtp = False
        self.command_size_limits.clear()
        self.fqdn = FQDN
        try:
            self.peer = conn.getpeername()
        except OSError as err:
            self.close()
            if err.args[0] != errno.ENOTCONN:
                raise
            return
        self.push("220 %s %s" % (self.fqdn, SOFTWARE_VERSION))

    def push(self, msg):
        log.append(["out", msg])
        asynchat.async_chat.push(
            self, bytes(msg + "\r\n", "utf-8" if self.require_SMTPUTF8 else "ascii")
        )

    def collect_incoming_data(self, data):
        # smtplib itself changed: 3.13 sends "mail from:", older ones "mail FROM:".
        log.append(
            ["in", re.sub(r"\b(?i:from|to):", lambda m: m.group(0).upper(), repr(data))]
        )
        limit = None
        if self.smtp_state == self.COMMAND:
            limit = self.max_command_size_limit
        elif self.smtp_state == self.DATA:
            limit = self.data_size_limit
        if limit and self.num_bytes > limit:
            return
        elif limit:
            self.num_bytes += len(data)
        if self._decode_data:
            self.received_lines.append(str(data, "utf-8"))
        else:
            self.received_lines.append(data)

    def handle_error(self):
        log.append(["handle_error"])


class HSMTPServer(smtpd.SMTPServer):
    def __init__(self, localaddr, remoteaddr):
        super().__init__(localaddr, remoteaddr)
        self.channel_class = HSMTPChannel

    def handle_accepted(self, conn, addr):
        log.append(["accepted", addr[0]])
        self.channel_class(
            self,
            conn,
            addr,
            self.data_size_limit,
            self._map,
            self.enable_SMTPUTF8,
            self._decode_data,
        )

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        log.append(["message", mailfrom, rcpttos, kwargs.get("mail_options")])
        for line in data.splitlines():
            log.append(["line", repr(line)])


server = HSMTPServer(("127.0.0.1", 0), None)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
client_view = []
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client_view.append(client.ehlo("scanner.example")[1].decode())
        client_view.append(
            client.sendmail(
                "root@scanner.example",
                ["admin@example.net", "postmaster@example.net"],
                "Subject: probe\r\n\r\nline one\r\n.hidden\r\n",
            )
        )
        client_view.append(list(client.docmd("VRFY", "admin")))
        client_view.append(
            list(client.docmd("MAIL", "FROM:<" + "a" * 600 + "@x.example>"))
        )
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
print(json.dumps({"client": client_view, "log": log}, indent=1, default=repr))
