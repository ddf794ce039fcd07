"""A spam honeypot: several ports, a blank banner, DEBUGSTREAM as the log.

Re-creates DidierStevens/Beta smtp-honeypot.py and spampot-style traps:
one SMTPServer subclass instance per port in a single ``asyncore.loop()``,
``smtpd.__version__ = ''`` so the banner gives nothing away, every message
logged by process_message() and saved; here also ``smtpd.DEBUGSTREAM``
pointed at a log stream, which is how such traps recorded every command a
bot sent.  The "bot" is a raw socket that sends one command at a time.
Ports and times in the log are masked; everything else must match.
"""

import asyncore
import io
import json
import re
import smtpd
import socket
import threading

FQDN = socket.getfqdn()
smtpd.DEBUGSTREAM = io.StringIO()
smtpd.__version__ = ""
saved = []


class TrapServer(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data):
        subject = ""
        match = re.search("\nSubject: ([^\n]+)\n", data)
        if match is not None:
            subject = match.group(1)
        saved.append(
            [self.socket.getsockname()[1] == ports[1], mailfrom, rcpttos, subject]
        )


def masked(text):
    text = text.replace(FQDN, "<fqdn>")
    text = re.sub(r"\('127\.0\.0\.1', \d+\)", "('127.0.0.1', <port>)", text)
    return re.sub(r"started at [^\n]*", "started at <time>", text)


def read_reply(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) > 3 and lines[-2][3:4] == b" ":
            return data


BOT_SESSION = [
    b"EHLO bot.example\r\n",
    b"VRFY root\r\n",
    b"EXPN staff\r\n",
    b"HELP\r\n",
    b"HELP MAIL\r\n",
    b"AUTH LOGIN\r\n",
    b"MAIL FROM:<spam@evil.example> SIZE=100\r\n",
    b"RCPT TO:<victim@example.com>\r\n",
    b"RCPT TO:<v2@example.com> NOTIFY=NEVER\r\n",
    b"RCPT TO:<v3@example.com>\r\n",
    b"DATA\r\n",
    b"From: prize@evil.example\r\nSubject: You won\r\n\r\nClaim it.\r\n..hidden\r\n.\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
]


def bot(port, transcript):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        transcript.append(read_reply(sock).decode())
        for command in BOT_SESSION:
            sock.sendall(command)
            transcript.append(read_reply(sock).decode())
        transcript.append(["eof", sock.recv(100)])


servers = [TrapServer(("127.0.0.1", 0), None, decode_data=True) for _ in range(2)]
ports = [server.socket.getsockname()[1] for server in servers]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
transcripts = [[], []]
try:
    for port, transcript in zip(ports, transcripts):
        bot(port, transcript)
finally:
    stop.set()
    thread.join(5)
    for server in servers:
        server.close()
    asyncore.close_all()
print(
    json.dumps(
        {
            "transcripts": [[masked(str(line)) for line in t] for t in transcripts],
            "saved": saved,
            "debugstream": masked(smtpd.DEBUGSTREAM.getvalue()).splitlines(),
        },
        indent=1,
    )
)
