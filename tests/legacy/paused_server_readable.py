"""A server that pauses accepting via readable(), and handles its own errors.

Re-creates two idioms: python/cpython Lib/test/test_smtplib.py overrides
the server's ``handle_error()`` (there to re-raise; here, as relay daemons
did, to record the error and keep listening), and the asyncore way of
throttling a listener - ``readable()`` returning False while paused, so
asyncore does not accept and the kernel holds the connections (asyncore's
documentation: readable() is asked on every pass of the loop).
``handle_accepted()`` raises for a blocked peer.  The loop is driven step
by step with ``asyncore.loop(timeout=0, count=1)`` in a single thread, so
the result does not depend on timing.
"""

import asyncore
import json
import smtpd
import socket
import sys


class ThrottledServer(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.paused = False
        self.block_next = False
        self.errors = []

    def readable(self):
        return not self.paused

    def handle_accepted(self, conn, addr):
        if self.block_next:
            self.block_next = False
            conn.close()
            raise RuntimeError("blocked peer")
        smtpd.SMTPServer.handle_accepted(self, conn, addr)

    def handle_error(self):
        self.errors.append(str(sys.exc_info()[1]))

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        pass


def spin(passes):
    for _ in range(passes):
        asyncore.loop(timeout=0, count=1)


def pending(sock):
    """What the server sent so far, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(4096).split(b" ")[0].decode()
    except BlockingIOError:
        return "nothing yet"
    finally:
        sock.setblocking(True)


def greeting_after_loop(sock):
    # Run the loop until the greeting arrives (each pass is immediate).
    for _ in range(1000):
        asyncore.loop(timeout=0.01, count=1)
        got = pending(sock)
        if got != "nothing yet":
            return got
    return "never"


server = ThrottledServer(("127.0.0.1", 0), None)
address = server.socket.getsockname()[:2]
results = {}
clients = []
try:
    server.paused = True
    first = socket.create_connection(address, timeout=5)
    clients.append(first)
    spin(20)
    results["while_paused"] = pending(first)
    results["channels_while_paused"] = len(asyncore.socket_map) - 1
    server.paused = False
    results["after_resume"] = greeting_after_loop(first)

    server.block_next = True
    blocked = socket.create_connection(address, timeout=5)
    clients.append(blocked)
    for _ in range(1000):
        asyncore.loop(timeout=0.01, count=1)
        if server.errors:
            break
    results["errors"] = server.errors
    results["blocked_peer_gets"] = blocked.recv(100)
    results["still_accepting"] = server.accepting
    third = socket.create_connection(address, timeout=5)
    clients.append(third)
    results["third_client"] = greeting_after_loop(third)
finally:
    for client in clients:
        client.close()
    server.close()
    asyncore.close_all()
print(json.dumps(results, indent=1, sort_keys=True, default=repr))
