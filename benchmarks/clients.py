"""The load generators: client workers and the idle-connection holder.

Run as a script by the orchestrator (``python -I clients.py --worker JSON``
or ``--hold JSON``), so it imports only the standard library and nothing
from this package; the orchestrator imports the dialog helpers
(``make_message``, ``expect``...) from here too.

A worker opens its connections, prints READY, waits for GO on stdin, runs,
and prints one line ``RESULT {json}`` with its counts and timestamps
(time.monotonic() is the same clock in every process).

The holder opens connections (at most ``window`` of them waiting for their
greeting, so a server with a short listen backlog is never flooded) until
``cap`` are greeted, the server stops answering, or the deadline passes.
It prints ``HELD {json}``, then answers "COUNT" (how many are still open)
and exits on "QUIT" or end of input.
"""

from __future__ import annotations

import base64
import json
import resource
import selectors
import smtplib
import socket
import ssl
import sys
import threading
import time
from typing import Any

HOST = "127.0.0.1"
SENDER = "sender@example.org"
RECIPIENT = "rcpt@example.org"


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def make_message(size: int) -> bytes:
    """A message of exactly ``size`` bytes with CRLF line ends.

    No line starts with a dot, so the same bytes can be sent raw after
    DATA or through smtplib.
    """
    header = (
        "From: <%s>\r\nTo: <%s>\r\nSubject: benchmark message\r\n"
        "Message-ID: <bench-%d@example.org>\r\n\r\n" % (SENDER, RECIPIENT, size)
    ).encode("ascii")
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"  # 74 bytes
    room = size - len(header)
    if room < 2:
        return header
    full, rest = divmod(room, len(line))
    body = line * full
    if rest >= 2:
        body += b"x" * (rest - 2) + b"\r\n"
    elif rest == 1:
        # make the last full line one byte longer instead
        body = body[: -len(line)] + b"y" + line if full else b"\r\n"
    message = header + body
    return message


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    """One CRLF-terminated line from a blocking socket (buffer kept in buf)."""
    while True:
        end = buf.find(b"\r\n")
        if end >= 0:
            line = bytes(buf[:end])
            del buf[: end + 2]
            return line
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk


def read_reply(sock: socket.socket, buf: bytearray) -> tuple[int, list[bytes]]:
    """A whole (possibly multi-line) SMTP reply: its code and lines."""
    lines = []
    while True:
        line = read_line(sock, buf)
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            try:
                return int(line[:3]), lines
            except ValueError:
                raise ConnectionError("malformed reply %r" % line) from None


def expect(sock: socket.socket, buf: bytearray, code: int, what: str) -> None:
    got, lines = read_reply(sock, buf)
    if got != code:
        raise RuntimeError("%s: expected %d, got %r" % (what, code, lines))


class Tally:
    """Messages sent and errors seen by the threads of one worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.errors: list[str] = []
        self.error_count = 0

    def add_sent(self, count: int) -> None:
        with self.lock:
            self.sent += count

    def add_error(self, exc: BaseException) -> None:
        with self.lock:
            self.error_count += 1
            if len(self.errors) < 5:
                self.errors.append("%s: %s" % (type(exc).__name__, exc))


def worker_main(spec: dict[str, Any]) -> None:
    raise_fd_limit()
    mode = spec["mode"]
    if mode == "pipelined":
        run_pipelined_worker(spec)
    else:
        run_threaded_worker(spec)


def wait_for_go() -> None:
    print("READY", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "GO":
        sys.exit(1)


def report(tally: Tally, started: float, ended: float, cpu: float) -> None:
    result = {
        "sent": tally.sent,
        "error_count": tally.error_count,
        "errors": tally.errors,
        "start": started,
        "end": ended,
        "cpu": cpu,
    }
    print("RESULT " + json.dumps(result), flush=True)


def secure_dialog(spec: dict[str, Any], message: bytes) -> list[tuple[bytes, int, str]]:
    """The commands after STARTTLS: EHLO again, AUTH PLAIN, one message, QUIT."""
    credentials = b"\0%s\0%s" % (spec["user"].encode(), spec["password"].encode())
    return [
        (b"EHLO bench.example.org\r\n", 250, "EHLO after STARTTLS"),
        (b"AUTH PLAIN %s\r\n" % base64.b64encode(credentials), 235, "AUTH"),
        (b"MAIL FROM:<%s>\r\n" % SENDER.encode(), 250, "MAIL"),
        (b"RCPT TO:<%s>\r\n" % RECIPIENT.encode(), 250, "RCPT"),
        (b"DATA\r\n", 354, "DATA"),
        (message + b".\r\n", 250, "end of data"),
        (b"QUIT\r\n", 221, "QUIT"),
    ]


def client_tls_context(spec: dict[str, Any]) -> ssl.SSLContext | None:
    """A context that trusts the throw-away certificate ``spec["cafile"]``."""
    if "cafile" not in spec:
        return None
    return ssl.create_default_context(cafile=spec["cafile"])


def run_threaded_worker(spec: dict[str, Any]) -> None:
    """smtplib clients, one thread per connection."""
    port = spec["port"]
    count = spec["msgs_per_conn"]
    message = make_message(spec["size"])
    timeout = spec["timeout"]
    tally = Tally()
    go = threading.Event()
    ready = threading.Semaphore(0)
    finished: list[float] = []
    # Connections are set up one at a time: a burst of simultaneous
    # connects overflows a short listen backlog (stdlib smtpd listens with
    # 5) and the dropped SYNs are only retried after seconds.
    setup_lock = threading.Lock()

    def persistent() -> None:
        client = None
        try:
            with setup_lock:
                client = smtplib.SMTP(HOST, port, timeout=timeout)
                client.ehlo()
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)
            client = None
        ready.release()
        go.wait()
        if client is None:
            return
        try:
            for _ in range(count):
                refused = client.sendmail(SENDER, [RECIPIENT], message)
                if refused:
                    raise RuntimeError("recipient refused: %r" % refused)
                tally.add_sent(1)
            finished.append(time.monotonic())
            client.quit()
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)
        finally:
            client.close()

    # The dialog of smtplib's sendmail() and quit(), one command and reply
    # at a time, on a plain socket: the same round trips as smtplib for a
    # fraction of its CPU, which on two cores would otherwise be taken from
    # the server being measured.
    dialog = [
        (None, 220, "greeting"),
        (b"EHLO bench.example.org\r\n", 250, "EHLO"),
        (b"MAIL FROM:<%s>\r\n" % SENDER.encode(), 250, "MAIL"),
        (b"RCPT TO:<%s>\r\n" % RECIPIENT.encode(), 250, "RCPT"),
        (b"DATA\r\n", 354, "DATA"),
        (message + b".\r\n", 250, "end of data"),
        (b"QUIT\r\n", 221, "QUIT"),
    ]

    def persistent_raw() -> None:
        """smtplib's sendmail() dialog on a plain socket, one connection."""
        sock = None
        buf = bytearray()
        try:
            with setup_lock:
                sock = socket.create_connection((HOST, port), timeout=timeout)
                for command, code, what in dialog[:2]:  # greeting, EHLO
                    if command is not None:
                        sock.sendall(command)
                    expect(sock, buf, code, what)
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)
            sock = None
        ready.release()
        go.wait()
        if sock is None:
            return
        try:
            for _ in range(count):
                for command, code, what in dialog[2:-1]:  # MAIL ... end of data
                    sock.sendall(command)
                    expect(sock, buf, code, what)
                tally.add_sent(1)
            finished.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)
        finally:
            sock.close()

    def connection_per_message() -> None:
        ready.release()
        go.wait()
        try:
            for _ in range(count):
                with socket.create_connection((HOST, port), timeout=timeout) as sock:
                    buf = bytearray()
                    for command, code, what in dialog:
                        if command is not None:
                            sock.sendall(command)
                        expect(sock, buf, code, what)
                tally.add_sent(1)
            finished.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)

    tls_context = client_tls_context(spec)
    after_starttls = secure_dialog(spec, message) if tls_context else []

    def starttls_auth() -> None:
        """A new connection per message: STARTTLS, then AUTH PLAIN."""
        assert tls_context is not None
        ready.release()
        go.wait()
        try:
            for _ in range(count):
                with socket.create_connection((HOST, port), timeout=timeout) as sock:
                    buf = bytearray()
                    expect(sock, buf, 220, "greeting")
                    for command, code, what in (
                        (b"EHLO bench.example.org\r\n", 250, "EHLO"),
                        (b"STARTTLS\r\n", 220, "STARTTLS"),
                    ):
                        sock.sendall(command)
                        expect(sock, buf, code, what)
                    with tls_context.wrap_socket(sock, server_hostname=HOST) as tls:
                        buf = bytearray()
                        for command, code, what in after_starttls:
                            tls.sendall(command)
                            expect(tls, buf, code, what)
                tally.add_sent(1)
            finished.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)

    def pipelining() -> None:
        """An RFC 2920 client: one write and one round trip per message.

        MAIL, RCPT and DATA go in one write; the content follows once 354
        has come, in the same write as the next message's MAIL, RCPT and
        DATA - what a PIPELINING client such as Postfix's does.
        """
        sock = None
        buf = bytearray()
        try:
            with setup_lock:
                sock = socket.create_connection((HOST, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                expect(sock, buf, 220, "greeting")
                sock.sendall(b"EHLO bench.example.org\r\n")
                expect(sock, buf, 250, "EHLO")
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)
            sock = None
        ready.release()
        go.wait()
        if sock is None:
            return
        envelope = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (
            SENDER.encode(),
            RECIPIENT.encode(),
        )
        content = message + b".\r\n"
        deadline = time.monotonic() + spec["duration"]
        try:
            pending = b""  # the content of the message before this one
            started = 0
            while started < count and time.monotonic() < deadline:
                sock.sendall(pending + envelope)
                if pending:
                    expect(sock, buf, 250, "end of data")
                    tally.add_sent(1)
                expect(sock, buf, 250, "MAIL")
                expect(sock, buf, 250, "RCPT")
                expect(sock, buf, 354, "DATA")
                pending = content
                started += 1
            sock.sendall(pending + b"QUIT\r\n")
            if pending:
                expect(sock, buf, 250, "end of data")
                tally.add_sent(1)
            expect(sock, buf, 221, "QUIT")
            finished.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported as a client error
            tally.add_error(exc)
        finally:
            sock.close()

    body = {
        "smtplib": persistent,
        "raw": persistent_raw,
        "connect-per-message": connection_per_message,
        "rfc2920": pipelining,
        "starttls-auth": starttls_auth,
    }[spec["mode"]]
    threads = [threading.Thread(target=body, daemon=True) for _ in range(spec["conns"])]
    for thread in threads:
        thread.start()
    for _ in threads:
        ready.acquire()
    wait_for_go()
    cpu0 = time.process_time()
    started = time.monotonic()
    go.set()
    for thread in threads:
        thread.join()
    ended = max(finished) if finished else time.monotonic()
    report(tally, started, ended, time.process_time() - cpu0)


class PipelinedConnection:
    """One connection of the pipelining client and its reply bookkeeping."""

    # the replies to MAIL, RCPT, DATA and the end of the message
    EXPECTED = (b"250", b"250", b"354", b"250")

    def __init__(self, sock: socket.socket, total: int) -> None:
        self.sock = sock
        self.unsent = total  # messages not yet written
        self.unanswered = total  # messages whose final reply is missing
        self.in_flight = 0
        self.outbuf = memoryview(b"")
        self.inbuf = bytearray()
        self.replies = 0


def run_pipelined_worker(spec: dict[str, Any]) -> None:
    """Raw-socket clients that write many transactions before reading.

    All connections are driven by one selector loop: each keeps up to
    ``window`` messages in flight, written ``batch`` at a time, and checks
    every reply code as it arrives.
    """
    port = spec["port"]
    timeout = spec["timeout"]
    window = spec.get("window", 128)
    batch = spec.get("batch", 32)
    transaction = (
        b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n"
        % (SENDER.encode(), RECIPIENT.encode())
        + make_message(spec["size"])
        + b".\r\n"
    )
    tally = Tally()
    connections = []
    try:
        for _ in range(spec["conns"]):
            sock = socket.create_connection((HOST, port), timeout=timeout)
            # the batches go out at once, not held back by Nagle's algorithm
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            expect(sock, buf, 220, "greeting")
            sock.sendall(b"EHLO bench.example.org\r\n")
            expect(sock, buf, 250, "EHLO")
            sock.setblocking(False)
            connection = PipelinedConnection(sock, spec["msgs_per_conn"])
            connection.inbuf = buf
            connections.append(connection)
    except Exception as exc:  # noqa: BLE001 - reported as a client error
        tally.add_error(exc)
        wait_for_go()
        report(tally, time.monotonic(), time.monotonic(), 0.0)
        return

    selector = selectors.DefaultSelector()
    for connection in connections:
        selector.register(
            connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connection
        )
    wait_for_go()
    cpu0 = time.process_time()
    started = time.monotonic()
    busy = len(connections)
    last_progress = started
    while busy:
        events = selector.select(1.0)
        now = time.monotonic()
        if not events and now - last_progress > timeout:
            tally.add_error(TimeoutError("no reply for %.0f s" % timeout))
            break
        for key, mask in events:
            connection = key.data
            try:
                if mask & selectors.EVENT_READ:
                    progress = pipelined_read(connection, tally)
                    if progress:
                        last_progress = now
                    if connection.unanswered == 0:
                        selector.unregister(connection.sock)
                        busy -= 1
                        continue
                if mask & selectors.EVENT_WRITE or connection.unsent:
                    pipelined_write(connection, transaction, window, batch)
                wanted = selectors.EVENT_READ
                if len(connection.outbuf) or (
                    connection.unsent and connection.in_flight < window
                ):
                    wanted |= selectors.EVENT_WRITE
                if wanted != key.events:
                    selector.modify(connection.sock, wanted, connection)
            except Exception as exc:  # noqa: BLE001 - reported as a client error
                tally.add_error(exc)
                selector.unregister(connection.sock)
                busy -= 1
    ended = time.monotonic()
    cpu = time.process_time() - cpu0
    for connection in connections:
        try:
            connection.sock.setblocking(True)
            connection.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        connection.sock.close()
    report(tally, started, ended, cpu)


def pipelined_write(
    connection: PipelinedConnection, transaction: bytes, window: int, batch: int
) -> None:
    if not len(connection.outbuf):
        room = min(batch, connection.unsent, window - connection.in_flight)
        if room <= 0:
            return
        connection.outbuf = memoryview(transaction * room)
        connection.unsent -= room
        connection.in_flight += room
    try:
        sent = connection.sock.send(connection.outbuf)
    except BlockingIOError:
        return
    connection.outbuf = connection.outbuf[sent:]


def pipelined_read(connection: PipelinedConnection, tally: Tally) -> bool:
    try:
        chunk = connection.sock.recv(65536)
    except BlockingIOError:
        return False
    if not chunk:
        raise ConnectionError(
            "server closed the connection after %d replies" % connection.replies
        )
    buf = connection.inbuf
    buf += chunk
    start = 0
    done = 0
    while True:
        end = buf.find(b"\r\n", start)
        if end < 0:
            break
        code = bytes(buf[start : start + 3])
        wanted = PipelinedConnection.EXPECTED[connection.replies % 4]
        if code != wanted:
            raise RuntimeError(
                "reply %d: expected %s, got %r"
                % (connection.replies + 1, wanted.decode(), bytes(buf[start:end]))
            )
        connection.replies += 1
        if connection.replies % 4 == 0:
            done += 1
        start = end + 2
    del buf[:start]
    if done:
        connection.in_flight -= done
        connection.unanswered -= done
        tally.add_sent(done)
    return bool(done)


def hold_main(spec: dict[str, Any]) -> None:
    limit = raise_fd_limit()
    port = spec["port"]
    cap = spec["cap"]
    window = spec.get("window", 4)
    stall = spec.get("stall", 5.0)
    deadline = time.monotonic() + spec["deadline"]
    selector = selectors.DefaultSelector()
    greeted: list[socket.socket] = []
    pending = 0
    stop_reason = "cap reached"
    started = time.monotonic()
    last_progress = started
    while len(greeted) < cap:
        now = time.monotonic()
        if now > deadline:
            stop_reason = "deadline"
            break
        if pending < window and len(greeted) + pending < cap:
            try:
                sock = socket.create_connection((HOST, port), timeout=stall)
            except OSError as exc:
                stop_reason = "connect failed: %s" % exc
                break
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            pending += 1
            continue
        events = selector.select(0.5)
        if not events:
            if time.monotonic() - last_progress > stall:
                stop_reason = "no greeting for %.0f s" % stall
                break
            continue
        failed = None
        for key, _ in events:
            sock = key.fileobj  # type: ignore[assignment]
            selector.unregister(sock)
            pending -= 1
            try:
                data = sock.recv(4096)
            except OSError as exc:
                data = b""
                failed = "greeting failed: %s" % exc
            if data.startswith(b"2"):
                greeted.append(sock)
                last_progress = time.monotonic()
            else:
                failed = failed or "greeting was %r" % data[:80]
                sock.close()
        if failed:
            stop_reason = failed
            break
    fill_seconds = time.monotonic() - started
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    result = {
        "greeted": len(greeted),
        "stop_reason": stop_reason,
        "fill_seconds": fill_seconds,
        "fd_limit": limit,
    }
    print("HELD " + json.dumps(result), flush=True)
    for line in sys.stdin:
        if line.strip() == "COUNT":
            print("OPEN %d" % count_open(greeted), flush=True)
        else:
            break
    for sock in greeted:
        sock.close()


def count_open(socks: list[socket.socket]) -> int:
    """How many of the idle sockets the server has not closed."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    for key, _ in selector.select(0.2):
        try:
            data = key.fileobj.recv(4096)  # type: ignore[union-attr]
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed += 1
    selector.close()
    return len(socks) - closed


def main(argv: list[str]) -> int:
    """``--worker JSON`` or ``--hold JSON``."""
    if len(argv) != 2 or argv[0] not in ("--worker", "--hold"):
        print("usage: clients.py --worker JSON | --hold JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    if argv[0] == "--worker":
        worker_main(spec)
    else:
        hold_main(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
