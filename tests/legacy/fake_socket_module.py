"""Driving a channel with a fake socket module, no network at all.

Re-creates the approach of python/cpython Lib/test/test_smtpd.py
(SMTPDChannelTest), written afresh: the test replaces the ``socket``
module seen by smtpd and asyncore (``smtpd.socket = asyncore.socket =
fake``), points ``smtpd.DEBUGSTREAM`` at a StringIO, builds a server (which
"binds" a fake socket), takes a connection from ``server.accept()``, wraps
it in ``smtpd.SMTPChannel`` and then feeds it lines by queueing them on the
fake connection and calling ``channel.handle_read()`` directly, checking
what the channel wrote back with ``send()``.
"""

import asyncore
import io
import json
import smtpd
import types


class FakeSocket:
    """Just what asyncore and smtpd use of a socket."""

    def __init__(self, family=None, type=None):
        self.family = family
        self.type = type
        self.incoming = []
        self.sent = []
        self.closed = False

    def fileno(self):
        return 42

    def setblocking(self, flag):
        pass

    def setsockopt(self, *args):
        pass

    def getsockopt(self, *args):
        return 0

    def bind(self, address):
        self.address = address

    def listen(self, backlog):
        pass

    def getsockname(self):
        return ("0.0.0.0", 9999)

    def getpeername(self):
        return ("peer-address", 1234)

    def accept(self):
        return FakeSocket(), ("peer-address", 1234)

    def recv(self, size):
        return self.incoming.pop(0)

    def send(self, data):
        self.sent.append(bytes(data))
        return len(data)

    def close(self):
        self.closed = True


fake = types.ModuleType("fake_socket")
fake.socket = FakeSocket
fake.getfqdn = lambda: "fake.host.example"
fake.getaddrinfo = lambda host, port, *args, **kwargs: [(2, 1, 6, "", (host, port))]
for name in (
    "AF_INET",
    "SOCK_STREAM",
    "SOL_SOCKET",
    "SO_REUSEADDR",
    "error",
    "timeout",
):
    setattr(fake, name, getattr(asyncore.socket, name))


class DummyServer(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.messages = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.messages.append([peer, mailfrom, rcpttos, data, kwargs])
        if data == "return status":
            return "250 Okish"


real_socket = (smtpd.socket, asyncore.socket)
smtpd.socket = asyncore.socket = fake
debug = smtpd.DEBUGSTREAM = io.StringIO()
results = {}
try:
    server = DummyServer(("a", 0), ("b", 0), decode_data=True)
    conn, addr = server.accept()
    channel = smtpd.SMTPChannel(server, conn, addr, decode_data=True)

    def write_line(line):
        channel.socket.incoming.append(line)
        channel.handle_read()
        return [chunk.decode() for chunk in channel.socket.sent[-1:]]

    results["greeting"] = [chunk.decode() for chunk in conn.sent]
    session = [
        b"MAIL FROM:<a@b>\r\n",
        b"HELO example\r\n",
        b"HELO again\r\n",
        b"RCPT TO:<x@y>\r\n",
        b"MAIL FROM:<eggs@example>\r\n",
        b"MAIL FROM:<twice@example>\r\n",
        b"RCPT TO:<spam@example>\r\n",
        b"RCPT TO:<ham@example> FOO=BAR\r\n",
        b"DATA extra\r\n",
        b"DATA\r\n",
        b"return status\r\n.\r\n",
        b"NOOP\r\n",
        b"RSET now\r\n",
        b"QUIT\r\n",
    ]
    results["replies"] = [[line.decode().strip(), write_line(line)] for line in session]
    results["messages"] = server.messages
    results["closing"] = [
        channel.closing if hasattr(channel, "closing") else None,
        conn.closed,
    ]
    results["debug"] = debug.getvalue().splitlines()
    channel.close()
    server.close()
finally:
    smtpd.socket, asyncore.socket = real_socket
results["debug"] = [line for line in results["debug"] if "started at" not in line]
print(json.dumps(results, indent=1, default=repr))
