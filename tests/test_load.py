"""No lost and no duplicated mail under load, with faults mixed in.

Many concurrent clients send many messages (random sizes up to 256 KiB,
with dot-stuffed lines) to one server running in a subprocess with
``use_poll=True``.  Half of the clients use smtplib; the others speak SMTP
over a raw socket and pipeline whole transactions, several messages per
write.  Faults are mixed in: some messages carry a marker that makes
process_message() raise (the client must get 451), and some clients drop
the connection (RST) in the middle of a message's DATA.

The server appends the SHA-256 of each delivered message (envelope and
content, as process_message() got them) to a file.  In the end every
message that got ``250`` must be in that file exactly once, and nothing
else may be: no failed, refused or interrupted message was delivered.
"""

import base64
import collections
import hashlib
import random
import select
import smtplib
import socket
import struct
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import TIMEOUT, subprocess_env
from robustness_support import parse_replies, read_until_closed

FAILURE_MARKER = b"X-Please-Fail: yes"

SERVER_SCRIPT = textwrap.dedent(
    """
    import hashlib, os, sys, traceback
    from smtpd_compat import SMTPChannel, SMTPServer, asyncore

    class DeliberateFailure(Exception):
        pass

    class CheckedChannel(SMTPChannel):
        def handle_error(self):
            if not isinstance(sys.exc_info()[1], DeliberateFailure):
                sys.stderr.write("UNEXPECTED " + traceback.format_exc())
                sys.stderr.flush()
            SMTPChannel.handle_error(self)

        def log_info(self, message, type="info"):
            if type != "info" and "DeliberateFailure" not in message:
                sys.stderr.write("UNEXPECTED %s: %s\\n" % (type, message))
                sys.stderr.flush()

    class HashingSink(SMTPServer):
        channel_class = CheckedChannel

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            if FAILURE_MARKER in data:
                raise DeliberateFailure("marker in message")
            envelope = "\\0".join([mailfrom] + list(rcpttos)).encode()
            digest = hashlib.sha256(envelope + b"\\0" + data).hexdigest()
            records.write(digest + "\\n")
            records.flush()

        def handle_error(self):
            sys.stderr.write("UNEXPECTED " + traceback.format_exc())
            sys.stderr.flush()

    FAILURE_MARKER = MARKER_VALUE
    records = open(sys.argv[1], "a")
    server = HashingSink(("127.0.0.1", 0), None)
    print(server.socket.getsockname()[1], flush=True)
    asyncore.loop(timeout=0.5, use_poll=True)
    """
).replace("MARKER_VALUE", repr(FAILURE_MARKER))


class Message:
    """One message a client tries to send, and what became of it."""

    def __init__(self, rng, client_id, number):
        self.mailfrom = "client%d@example.com" % client_id
        self.rcpttos = ["r%d@example.org" % n for n in range(rng.randint(1, 3))]
        self.fails = rng.random() < 0.05
        size = int(2 ** rng.uniform(6, 18))  # 64 B ... 256 KiB, most of them small
        lines = [
            b"Message-ID: <%d.%d@load.test>" % (client_id, number),
            b"Subject: load test %d/%d" % (client_id, number),
        ]
        if self.fails:
            lines.append(FAILURE_MARKER)
        lines.append(b"")
        text = base64.b64encode(
            rng.getrandbits(size * 6).to_bytes(size * 3 // 4 + 1, "big")
        )
        for start in range(0, len(text), 76):
            line = text[start : start + 76]
            if rng.random() < 0.05:
                line = b"." + line  # must survive dot-stuffing
            lines.append(line)
        lines.append(b".")  # a line that is just a dot
        self.body = b"\r\n".join(lines) + b"\r\n"
        # What process_message() gets: no final CRLF, LF line ends.
        data = self.body[:-2].replace(b"\r\n", b"\n")
        envelope = "\0".join([self.mailfrom, *self.rcpttos]).encode()
        self.digest = hashlib.sha256(envelope + b"\0" + data).hexdigest()
        self.reply = None  # the final reply code, once known

    def stuffed(self):
        """The DATA text with dots stuffed, up to and including CRLF . CRLF."""
        lines = self.body[:-2].split(b"\r\n")
        return (
            b"\r\n".join(b"." + x if x.startswith(b".") else x for x in lines)
            + b"\r\n.\r\n"
        )

    def envelope_commands(self):
        commands = [b"MAIL FROM:<%s>\r\n" % self.mailfrom.encode()]
        commands += [b"RCPT TO:<%s>\r\n" % r.encode() for r in self.rcpttos]
        return b"".join(commands) + b"DATA\r\n"


def smtplib_client(address, messages):
    """Send each message with smtplib, one connection for all."""
    with smtplib.SMTP(address[0], address[1], timeout=4 * TIMEOUT) as client:
        for message in messages:
            try:
                client.sendmail(message.mailfrom, message.rcpttos, message.body)
                message.reply = 250
            except smtplib.SMTPDataError as exc:
                message.reply = exc.smtp_code


def raw_pipelining_client(address, messages, rng):
    """Pipeline whole transactions, 1 to 5 messages per write."""
    sock = socket.create_connection(address, timeout=4 * TIMEOUT)
    try:
        read_until_closed(sock, limit=1)  # the greeting
        sock.sendall(b"EHLO raw\r\n")
        replies = b""
        while not parse_replies(replies, allow_partial_tail=True):
            replies += sock.recv(4096)
        pending = list(messages)
        while pending:
            size = rng.randint(1, 5)
            batch, pending = pending[:size], pending[size:]
            batch_replies = send_batch(sock, batch)
            for message, codes in zip(batch, batch_replies):
                message.reply = codes[-1]
        sock.sendall(b"QUIT\r\n")
        rest, _ = read_until_closed(sock)
        assert rest.endswith(b"221 Bye\r\n")
    finally:
        sock.close()


def send_batch(sock, batch):
    """Send every transaction of ``batch`` at once; return each one's reply codes."""
    wanted = sum(len(m.rcpttos) + 3 for m in batch)  # MAIL, RCPTs, DATA, end of data
    payload = b"".join(m.envelope_commands() + m.stuffed() for m in batch)
    writer = threading.Thread(target=sock.sendall, args=(payload,))
    writer.start()
    received = b""
    try:
        while len(parse_replies(received, allow_partial_tail=True)) < wanted:
            chunk = sock.recv(65536)
            assert chunk, "server closed the connection"
            received += chunk
    finally:
        writer.join(4 * TIMEOUT)
    codes = [int(reply[-1][:3]) for reply in parse_replies(received)]
    assert len(codes) == wanted
    result = []
    for message in batch:
        count = len(message.rcpttos) + 3
        result.append(codes[:count])
        assert codes[: count - 1] == [250] * (count - 2) + [354]
        codes = codes[count:]
    return result


def interrupted_message(address, message, rng):
    """Start ``message`` and reset the connection in the middle of its DATA."""
    sock = socket.create_connection(address, timeout=4 * TIMEOUT)
    try:
        read_until_closed(sock, limit=1)
        sock.sendall(b"HELO cut\r\n" + message.envelope_commands())
        text = message.stuffed()
        sock.sendall(text[: rng.randint(0, len(text) - 5)])  # never the final CRLF.CRLF
        select.select([], [], [], 0.01)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    message.reply = "reset"


def run_client(address, client_id, count, results, errors):
    rng = random.Random(client_id)
    messages = [Message(rng, client_id, n) for n in range(count)]
    results.extend(messages)
    try:
        if client_id % 5 == 4:
            # A faulty client: every fourth message is cut off mid-DATA.
            for number, message in enumerate(messages):
                if number % 4 == 3:
                    interrupted_message(address, message, rng)
                else:
                    smtplib_client(address, [message])
        elif client_id % 2:
            raw_pipelining_client(address, messages, rng)
        else:
            smtplib_client(address, messages)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append("client %d: %r" % (client_id, exc))


@pytest.fixture
def hashing_server(tmp_path):
    script = tmp_path / "hashing_server.py"
    script.write_text(SERVER_SCRIPT)
    records = tmp_path / "delivered.txt"
    records.write_text("")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(records)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
        text=True,
    )
    try:
        assert select.select([proc.stdout], [], [], 3 * TIMEOUT)[0], (
            "server did not start"
        )
        port = int(proc.stdout.readline())
        yield proc, ("127.0.0.1", port), records
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


def run_load(hashing_server, clients, per_client):
    proc, address, records = hashing_server
    messages = []
    errors = []
    threads = [
        threading.Thread(
            target=run_client, args=(address, n, per_client, messages, errors)
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads), "clients hung"
    assert errors == []
    assert proc.poll() is None, "the server died"

    outcomes = collections.Counter(message.reply for message in messages)
    delivered = collections.Counter(records.read_text().split())
    acknowledged = {m.digest for m in messages if m.reply == 250}
    duplicates = {digest: n for digest, n in delivered.items() if n > 1}
    assert duplicates == {}
    assert set(delivered) - acknowledged == set(), "delivered without 250"
    assert acknowledged - set(delivered) == set(), "acknowledged but lost"
    # The faults really happened, and were answered as they should be.
    assert all(m.reply == 451 for m in messages if m.fails and m.reply != "reset")
    assert outcomes[451] > 0 and outcomes["reset"] > 0
    assert set(outcomes) <= {250, 451, "reset"}, outcomes

    proc.kill()
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert "UNEXPECTED" not in stderr, stderr[-3000:]
    print(
        "%d clients x %d messages: %s; %d delivered exactly once"
        % (clients, per_client, dict(outcomes), len(delivered))
    )


def test_load_50_clients_x_40_messages(hashing_server):
    run_load(hashing_server, clients=50, per_client=40)


@pytest.mark.slow
def test_load_50_clients_x_200_messages(hashing_server):
    run_load(hashing_server, clients=50, per_client=200)
