"""A line-based chat server written directly on asynchat.async_chat.

Re-creates the chat server of Apress/beginning-python-3ed
(Chapter24/listing24-4.py and the later listings; also
NorthStarUAS/rc-flight-legacy auralink/telnet.py): an
``asyncore.dispatcher`` that listens and, in handle_accept(), wraps each
connection in an ``async_chat`` session; sessions collect data with
collect_incoming_data(), act on found_terminator() and push() replies;
the server broadcasts to every session.  Beyond lines, one command reads a
counted payload with ``set_terminator(int)``, another sends a long reply
through ``push_with_producer(simple_producer(...))``, and ``bye`` uses
close_when_done().  Code that imports asynchat next to smtpd must get the
same behaviour.
"""

import asynchat
import asyncore
import json
import socket
import threading


class ChatSession(asynchat.async_chat):
    def __init__(self, server, sock):
        asynchat.async_chat.__init__(self, sock)
        self.server = server
        self.set_terminator(b"\r\n")
        self.data = []
        self.name = None

    def collect_incoming_data(self, data):
        self.data.append(data)

    def found_terminator(self):
        received = b"".join(self.data)
        self.data = []
        if isinstance(self.get_terminator(), int):
            self.set_terminator(b"\r\n")
            self.push(b"got %d bytes: %s\r\n" % (len(received), received[::-1]))
            return
        line = received.decode()
        command, _, argument = line.partition(" ")
        if command == "nick":
            self.name = argument
            self.server.broadcast("%s joined\r\n" % argument)
        elif command == "say":
            self.server.broadcast("%s: %s\r\n" % (self.name, argument))
        elif command == "blob":
            self.set_terminator(int(argument))
        elif command == "dump":
            text = b"".join(b"row %03d\r\n" % n for n in range(int(argument)))
            self.push_with_producer(
                asynchat.simple_producer(text + b"end\r\n", buffer_size=7)
            )
        elif command == "bye":
            self.push(b"goodbye\r\n")
            self.close_when_done()
        else:
            self.push(b"unknown command: %s\r\n" % command.encode())

    def handle_close(self):
        self.server.sessions.remove(self)
        asynchat.async_chat.handle_close(self)


class ChatServer(asyncore.dispatcher):
    def __init__(self):
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(5)
        self.sessions = []

    def handle_accept(self):
        conn, _addr = self.accept()
        self.sessions.append(ChatSession(self, conn))

    def broadcast(self, line):
        for session in self.sessions:
            session.push(line.encode())


def read_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


server = ChatServer()
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
log = {}
try:
    alice = socket.create_connection(("127.0.0.1", port), timeout=5)
    alice.sendall(b"nick alice\r\n")
    log["alice_join"] = read_until(alice, b"joined\r\n").decode()
    bob = socket.create_connection(("127.0.0.1", port), timeout=5)
    bob.sendall(b"nick bob\r\n")
    log["alice_sees_bob"] = read_until(alice, b"bob joined\r\n").decode()
    log["bob_join"] = read_until(bob, b"bob joined\r\n").decode()
    alice.sendall(b"say hello\r\nsay two lines at once\r\n")
    log["bob_hears"] = read_until(bob, b"at once\r\n").decode()
    bob.sendall(b"blob 10\r\n0123\r\n6789tail\r\n")
    log["blob"] = read_until(bob, b"unknown command: tail\r\n").decode()
    alice.sendall(b"dump 12\r\n")
    log["dump"] = read_until(alice, b"end\r\n").decode().splitlines()
    alice.sendall(b"bye\r\n")
    log["bye"] = read_until(alice, b"\0").decode()
    bob.sendall(b"say anyone?\r\n")
    log["after_alice_left"] = read_until(bob, b"anyone?\r\n").decode()
    log["alice_stale_broadcasts"] = "say hello" not in log["bye"]
    alice.close()
    bob.close()
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
log["session_is_dispatcher"] = issubclass(ChatSession, asyncore.dispatcher)
print(json.dumps(log, indent=1, sort_keys=True))
