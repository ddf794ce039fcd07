#!/usr/bin/env python3
"""Benchmark smtpd_compat against CPython 3.11's smtpd and aiosmtpd.

Usage::

    python benchmarks/run.py            # full run: 5 rounds, about 15 minutes
    python benchmarks/run.py --quick    # smoke run: 2 rounds, small counts
    python benchmarks/run.py --rounds 3 --json results.json
    python benchmarks/run.py --targets compat-3.11,stdlib-3.11 --scenarios a10,p10

Every target is a message sink (it accepts each message and throws it
away) running in its own subprocess on 127.0.0.1; the clients use only the
standard library.  Each measurement starts a fresh server, so its peak RSS
(VmHWM) belongs to that one scenario.  Targets are measured one after the
other inside each round (A B C D, A B C D, ...) and the table shows the
median over the rounds.

This file is also the server, the client workers and the idle-connection
holder: the orchestrator starts itself again with ``--serve``,
``--worker`` or ``--hold``.  Only the standard library is imported at
module level, so the server mode runs in any target's interpreter.

The virtual environments live in ``benchmarks/.venv-*`` (``--venv-dir``);
smtpd_compat is reinstalled from the checkout at every run, so the numbers
are those of the working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import selectors
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
THIS_SCRIPT = os.path.abspath(__file__)
HOST = "127.0.0.1"
SENDER = "sender@example.org"
RECIPIENT = "rcpt@example.org"
AIOSMTPD_VERSION = "1.4.6"
PYENV_ROOT = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))


# --------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------


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


def cpu_seconds_of(pid: int) -> float | None:
    """User+system CPU time used so far by process ``pid``."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy_seconds() -> float | None:
    """CPU seconds all processors have spent busy (not idle) since boot."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def memory_kb_of(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of process ``pid``, in kB."""
    found = {}
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped for a full listen queue.

    System-wide, so other programs can add to it; a jump during one
    measurement still shows a server whose backlog was too short.
    """
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            if "ListenOverflows" in table:
                return int(table["ListenOverflows"])
    return None


# --------------------------------------------------------------------------
# Server mode: ``run.py --serve KIND --loop poll|select``
# --------------------------------------------------------------------------


def serve(kind: str, loop: str) -> None:
    raise_fd_limit()
    if kind == "aiosmtpd":
        serve_aiosmtpd()
    else:
        serve_asyncore(kind, loop)


def serve_asyncore(kind: str, loop: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore

        if kind == "stdlib":
            import smtpd
        else:
            import smtpd_compat as smtpd

    class Sink(smtpd.SMTPServer):  # type: ignore[misc,name-defined]
        """Takes every message and drops it."""

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):  # type: ignore[no-untyped-def]
            return None

    server = Sink((HOST, 0), None)
    print("READY %d %s" % (server.socket.getsockname()[1], smtpd.__file__), flush=True)
    asyncore.loop(timeout=30.0, use_poll=(loop == "poll"))


def serve_aiosmtpd() -> None:
    import asyncio

    import aiosmtpd
    from aiosmtpd.smtp import SMTP

    class Sink:
        """Handler that accepts every message and drops it."""

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    async def main() -> None:
        handler = Sink()
        event_loop = asyncio.get_running_loop()
        server = await event_loop.create_server(lambda: SMTP(handler), HOST, 0)
        port = server.sockets[0].getsockname()[1]
        print("READY %d %s" % (port, aiosmtpd.__file__), flush=True)
        await server.serve_forever()

    asyncio.run(main())


# --------------------------------------------------------------------------
# Client worker mode: ``run.py --worker JSON``
#
# The worker opens its connections, prints READY, waits for GO on stdin,
# runs, and prints one line of JSON with its counts and timestamps
# (time.monotonic() is the same clock in every process).
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Idle-connection holder: ``run.py --hold JSON``
#
# Opens connections (at most ``window`` of them waiting for their greeting,
# so a server with a short listen backlog is never flooded) until ``cap``
# are greeted, the server stops answering, or the deadline passes.  Prints
# HELD {json}, then answers "COUNT" (how many are still open) and exits on
# "QUIT" or end of input.
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Orchestrator side: child processes
# --------------------------------------------------------------------------


class Failed(Exception):
    """A scenario could not be measured for a target."""


class Child:
    """A subprocess whose stdout lines are collected by a reader thread."""

    def __init__(self, argv: list[str]) -> None:
        # closed by kill(), which every user calls in a finally clause
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            cwd=tempfile.gettempdir(),
        )
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with prefix (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed("no %r from child within %.0f s" % (prefix, timeout))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise Failed(
                    "child exited (status %s) before %r: %s"
                    % (self.proc.wait(), prefix, self.stderr_tail())
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 300) -> str:
        """The last line the child wrote to stderr (for a traceback, the
        exception)."""
        try:
            self.stderr_file.seek(0)
            text = self.stderr_file.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][-limit:] if lines else "(no output on stderr)"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self.stderr_file.close()


class Server:
    """A running target server."""

    def __init__(self, target: Target, loop: str, timeout: float = 30.0) -> None:
        argv = [target.python, "-I", THIS_SCRIPT, "--serve", target.kind]
        argv += ["--loop", loop]
        self.child = Child(argv)
        try:
            port, _, self.module_file = self.child.expect("READY", timeout).partition(
                " "
            )
            self.port = int(port)
        except BaseException:
            self.child.kill()
            raise
        self.pid = self.child.pid

    def memory(self) -> dict[str, int]:
        return memory_kb_of(self.pid)

    def cpu(self) -> float | None:
        return cpu_seconds_of(self.pid)

    def check_alive(self) -> None:
        if not self.child.alive():
            raise Failed(
                "server died (status %s): %s"
                % (self.child.proc.returncode, self.child.stderr_tail())
            )

    def stop(self) -> None:
        self.child.kill()


def own_argv(mode: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", THIS_SCRIPT, mode, json.dumps(spec)]


def run_workers(
    server: Server, specs: list[dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """Start client workers, let them go together, and sum their results."""
    workers = []
    try:
        for spec in specs:
            workers.append(Child(own_argv("--worker", spec)))
        for worker in workers:
            worker.expect("READY", 60)
        cpu_before = server.cpu()
        machine_before = machine_busy_seconds()
        for worker in workers:
            worker.send("GO")
        deadline = time.monotonic() + timeout
        results = []
        for worker in workers:
            left = max(1.0, deadline - time.monotonic())
            try:
                results.append(json.loads(worker.expect("RESULT", left)))
            except Failed as exc:
                if not server.child.alive():
                    raise
                raise Failed(
                    "clients not done after %.0f s: the server hung or is very"
                    " slow (%s)" % (timeout, exc)
                ) from None
        cpu_after = server.cpu()
        machine_after = machine_busy_seconds()
    finally:
        for worker in workers:
            worker.kill()
    errors = [error for result in results for error in result["errors"]]
    error_count = sum(result["error_count"] for result in results)
    sent = sum(result["sent"] for result in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    server.check_alive()
    if error_count:
        raise Failed("%d client errors, e.g. %s" % (error_count, "; ".join(errors[:3])))
    server_cpu = machine_cpu = None
    if cpu_before is not None and cpu_after is not None and wall > 0:
        server_cpu = (cpu_after - cpu_before) / wall
    if machine_before is not None and machine_after is not None and wall > 0:
        machine_cpu = (machine_after - machine_before) / wall
    return {
        "machine_cpu": machine_cpu,
        "sent": sent,
        "seconds": wall,
        "server_cpu": server_cpu,
        "client_cpu": sum(r["cpu"] for r in results) / wall if wall > 0 else None,
        "client_processes": len(specs),
    }


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


# --------------------------------------------------------------------------
# Scenarios.  Each takes (server, settings) and returns a dict of metrics;
# "value" is the one in the table.
# --------------------------------------------------------------------------


def throughput(
    server: Server,
    mode: str,
    conns: int,
    total_msgs: int,
    size: int,
    processes: int,
    timeout: float,
) -> dict[str, Any]:
    processes = max(1, min(processes, conns))
    per_process = split(conns, processes)
    per_conn = max(1, total_msgs // conns)
    specs = [
        {
            "mode": mode,
            "port": server.port,
            "conns": n,
            "msgs_per_conn": per_conn,
            "size": size,
            "timeout": min(timeout, 60.0),
        }
        for n in per_process
    ]
    outcome = run_workers(server, specs, timeout)
    expected = per_conn * conns
    if outcome["sent"] != expected:
        raise Failed(
            "only %d of %d messages were accepted" % (outcome["sent"], expected)
        )
    outcome["msgs_per_s"] = outcome["sent"] / outcome["seconds"]
    outcome["mb_per_s"] = outcome["sent"] * size / outcome["seconds"] / 1e6
    return outcome


def scenario_count(
    mode: str,
    conns: int,
    messages: str,
    size: int,
    value: str,
    one_process: bool = False,
) -> Callable[[Server, Settings], dict[str, Any]]:
    """A fixed number of messages (the Settings attribute ``messages``) of
    ``size`` bytes through ``conns`` connections of client ``mode``; the
    result's ``value`` is its ``msgs_per_s`` or ``mb_per_s``."""

    def run(server: Server, settings: Settings) -> dict[str, Any]:
        result = throughput(
            server,
            mode,
            conns,
            getattr(settings, messages),
            size,
            1 if one_process else settings.client_processes,
            settings.timeout,
        )
        result["value"] = result[value]
        return result

    return run


def scenario_rfc2920(conns: int) -> Callable[[Server, Settings], dict[str, Any]]:
    """RFC 2920 pipelining clients, for a fixed time (a slow server gets
    few messages through; a fixed count would take minutes)."""

    def run(server: Server, settings: Settings) -> dict[str, Any]:
        specs = [
            {
                "mode": "rfc2920",
                "port": server.port,
                "conns": n,
                "msgs_per_conn": settings.pipelined_msgs,
                "duration": settings.rfc2920_seconds,
                "size": 1024,
                "timeout": min(settings.timeout, 60.0),
            }
            for n in split(conns, max(1, min(settings.client_processes, conns)))
        ]
        result = run_workers(server, specs, settings.timeout)
        if not result["sent"]:
            raise Failed("no message was accepted")
        result["value"] = result["sent"] / result["seconds"]
        return result

    return run


def scenario_huge(server: Server, settings: Settings) -> dict[str, Any]:
    """One 30 MiB message: seconds from DATA to the final reply, peak RSS."""
    message = settings.huge_message()
    with socket.create_connection(
        (HOST, server.port), timeout=settings.timeout
    ) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        expect(sock, buf, 220, "greeting")
        sock.sendall(b"EHLO bench.example.org\r\n")
        expect(sock, buf, 250, "EHLO")
        sock.sendall(b"MAIL FROM:<%s>\r\n" % SENDER.encode())
        expect(sock, buf, 250, "MAIL")
        sock.sendall(b"RCPT TO:<%s>\r\n" % RECIPIENT.encode())
        expect(sock, buf, 250, "RCPT")
        cpu_before = server.cpu()
        machine_before = machine_busy_seconds()
        started = time.monotonic()
        sock.sendall(b"DATA\r\n")
        expect(sock, buf, 354, "DATA")
        sock.sendall(message)
        sock.sendall(b".\r\n")
        expect(sock, buf, 250, "end of data")
        seconds = time.monotonic() - started
        cpu_after = server.cpu()
        machine_after = machine_busy_seconds()
        sock.sendall(b"QUIT\r\n")
    memory = server.memory()
    return {
        "value": seconds,
        "seconds": seconds,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024.0,
        "rss_mb": memory.get("VmRSS", 0) / 1024.0,
        "server_cpu": (
            (cpu_after - cpu_before) / seconds
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        "machine_cpu": (
            (machine_after - machine_before) / seconds
            if machine_before is not None and machine_after is not None
            else None
        ),
        "message_bytes": len(message),
    }


def fresh_noop(port: int, limit: float = 1.0) -> tuple[bool, float, str]:
    """Connect, wait for the greeting, send NOOP: answered within limit?"""
    started = time.monotonic()
    try:
        with socket.create_connection((HOST, port), timeout=limit) as sock:
            buf = bytearray()
            sock.settimeout(max(0.01, limit - (time.monotonic() - started)))
            expect(sock, buf, 220, "greeting")
            sock.sendall(b"NOOP\r\n")
            sock.settimeout(max(0.01, limit - (time.monotonic() - started)))
            expect(sock, buf, 250, "NOOP")
            sock.sendall(b"QUIT\r\n")
    except Exception as exc:  # noqa: BLE001 - any failure means "not answered"
        return False, time.monotonic() - started, "%s: %s" % (type(exc).__name__, exc)
    elapsed = time.monotonic() - started
    return elapsed <= limit, elapsed, ""


def hold_idle(
    server: Server, cap: int, deadline: float
) -> tuple[Child, dict[str, Any]]:
    holder = Child(
        own_argv("--hold", {"port": server.port, "cap": cap, "deadline": deadline})
    )
    try:
        held = json.loads(holder.expect("HELD", deadline + 30))
    except BaseException:
        holder.kill()
        raise
    return holder, held


def scenario_idle_max(server: Server, settings: Settings) -> dict[str, Any]:
    holder, held = hold_idle(server, settings.idle_cap, settings.idle_deadline)
    try:
        time.sleep(0.2)
        answered, latency, why = fresh_noop(server.port)
        holder.send("COUNT")
        try:
            still_open = int(holder.expect("OPEN", 30))
        except Failed:
            still_open = -1
        memory = server.memory()
    finally:
        holder.send("QUIT")
        holder.kill()
    alive = server.child.alive()
    note = held["stop_reason"]
    if not alive:
        note += "; server died: %s" % server.child.stderr_tail()
    elif not answered:
        note += "; fresh NOOP not answered within 1 s (%s)" % why
    return {
        "value": held["greeted"],
        "ok": answered and alive,
        "noop_answered": answered,
        "noop_ms": latency * 1000.0,
        "still_open": still_open,
        "server_alive": alive,
        "fill_seconds": held["fill_seconds"],
        "rss_mb": memory.get("VmRSS", 0) / 1024.0,
        "note": note,
    }


def scenario_idle_rss(server: Server, settings: Settings) -> dict[str, Any]:
    count = settings.idle_rss_conns
    # One full session first, so lazily imported modules and first-use
    # caches are in the baseline rather than in the per-connection cost.
    answered, _, why = fresh_noop(server.port, 5.0)
    if not answered:
        raise Failed("warm-up NOOP failed: %s" % why)
    time.sleep(0.2)
    baseline = server.memory().get("VmRSS", 0)
    holder, held = hold_idle(server, count, settings.timeout)
    try:
        if held["greeted"] != count:
            raise Failed(
                "only %d of %d idle connections were greeted (%s)"
                % (held["greeted"], count, held["stop_reason"])
            )
        time.sleep(0.3)
        loaded = server.memory().get("VmRSS", 0)
    finally:
        holder.send("QUIT")
        holder.kill()
    server.check_alive()
    return {
        "value": (loaded - baseline) / count,
        "baseline_rss_mb": baseline / 1024.0,
        "loaded_rss_mb": loaded / 1024.0,
        "connections": count,
    }


# --------------------------------------------------------------------------
# Targets, settings, scenario table
# --------------------------------------------------------------------------


class Target:
    def __init__(self, name: str, version: str, kind: str, venv: str | None) -> None:
        self.name = name
        self.version = version  # "3.11"
        self.kind = kind  # "stdlib", "compat" or "aiosmtpd"
        self.venv = venv  # directory name under the venv dir, or None
        self.python = ""  # set by prepare_target()
        self.setup_error = ""
        self.info = ""


ALL_TARGETS = {
    "stdlib-3.11": ("3.11", "stdlib", None),
    "compat-3.11": ("3.11", "compat", ".venv-compat-3.11"),
    "compat-3.13": ("3.13", "compat", ".venv-compat-3.13"),
    "aiosmtpd": ("3.11", "aiosmtpd", ".venv-aiosmtpd-3.11"),
    "aiosmtpd-3.13": ("3.13", "aiosmtpd", ".venv-aiosmtpd-3.13"),
}
DEFAULT_TARGETS = ["stdlib-3.11", "compat-3.11", "compat-3.13", "aiosmtpd"]


class Settings:
    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.rounds = args.rounds if args.rounds else (2 if quick else 5)
        self.small_msgs = 1500 if quick else 5000
        self.pipelined_msgs = 5000 if quick else 20000
        self.rfc2920_seconds = 2.0 if quick else 4.0
        self.big_msgs = 12 if quick else 40
        self.connect_msgs = 600 if quick else 2000
        self.huge_size = 30 * (1 << 20)
        self.idle_cap = args.idle_cap or (2000 if quick else 10000)
        self.idle_rounds = min(self.rounds, args.idle_rounds)
        self.idle_deadline = 60.0 if quick else 240.0
        self.idle_rss_conns = 1000
        self.timeout = 60.0 if quick else 120.0
        self.client_processes = args.client_processes
        self._huge: bytes | None = None

    def huge_message(self) -> bytes:
        if self._huge is None:
            self._huge = make_message(self.huge_size)
        return self._huge


class Metric:
    """One row of the result table."""

    def __init__(
        self,
        scenario: str,
        key: str,
        label: str,
        unit: str,
        higher_is_better: bool,
        limit: str,
    ) -> None:
        self.scenario = scenario
        self.key = key
        self.label = label
        self.unit = unit
        self.higher_is_better = higher_is_better
        self.limit = limit


class Scenario:
    def __init__(
        self,
        name: str,
        title: str,
        run: Callable[[Server, Settings], dict[str, Any]],
        metrics: list[Metric],
        loop: str = "poll",
        kinds: tuple[str, ...] = ("stdlib", "compat", "aiosmtpd"),
        idle: bool = False,
        expected_failure: str = "",
    ) -> None:
        self.name = name
        self.title = title
        self.run = run
        self.metrics = metrics
        self.loop = loop
        self.kinds = kinds
        self.idle = idle
        self.expected_failure = expected_failure


def build_scenarios() -> list[Scenario]:
    scenarios = []
    for conns in (1, 10, 100):
        name = "a%d" % conns
        scenarios.append(
            Scenario(
                name,
                "1 KB messages, smtplib, %d persistent connection(s)" % conns,
                scenario_count("smtplib", conns, "small_msgs", 1024, "msgs_per_s"),
                [
                    Metric(
                        name,
                        "value",
                        "(a) 1KB smtplib x%d" % conns,
                        "msg/s",
                        True,
                        "one message in flight per connection: round trips"
                        if conns == 1
                        else "server or client CPU (see cpu%)",
                    )
                ],
            )
        )
    for conns in (1, 10, 100):
        name = "r%d" % conns
        scenarios.append(
            Scenario(
                name,
                "1 KB messages, RFC 2920 pipelining clients, %d connection(s)" % conns,
                scenario_rfc2920(conns),
                [
                    Metric(
                        name,
                        "value",
                        "(a') 1KB pipelined x%d" % conns,
                        "msg/s",
                        True,
                        "round trips: one per message (Nagle stalls them "
                        "where replies leave in separate writes)",
                    )
                ],
            )
        )
    for conns in (1, 10, 100):
        name = "p%d" % conns
        scenarios.append(
            Scenario(
                name,
                "1 KB messages, bulk-pipelined raw client, %d connection(s)" % conns,
                scenario_count(
                    "pipelined",
                    conns,
                    "pipelined_msgs",
                    1024,
                    "msgs_per_s",
                    one_process=True,  # one selector loop drives them all
                ),
                [
                    Metric(
                        name,
                        "value",
                        "(a'') 1KB bulk-pipelined x%d" % conns,
                        "msg/s",
                        True,
                        "server CPU (client is one cheap selector loop)",
                    )
                ],
            )
        )
    scenarios.append(
        Scenario(
            "b",
            "1 MB messages, 4 persistent connections",
            # smtplib's own work on a 1 MB message (line end and dot checks
            # in Python) would cost as much CPU as the server's: the raw
            # client keeps its round trips and leaves the CPU to the server.
            scenario_count("raw", 4, "big_msgs", 1 << 20, "mb_per_s"),
            [Metric("b", "value", "(b) 1MB x4", "MB/s", True, "server CPU")],
        )
    )
    scenarios.append(
        Scenario(
            "c",
            "one 30 MiB message: DATA to final reply, peak RSS",
            scenario_huge,
            [
                Metric("c", "seconds", "(c) 30MB DATA time", "s", False, "server CPU"),
                Metric(
                    "c",
                    "peak_rss_mb",
                    "(c) 30MB peak RSS",
                    "MB",
                    False,
                    "server memory",
                ),
            ],
        )
    )
    scenarios.append(
        Scenario(
            "d",
            "idle connections held, poll()/epoll loop, fresh NOOP within 1 s",
            scenario_idle_max,
            [
                Metric(
                    "d",
                    "value",
                    "(d) idle conns held",
                    "conns",
                    True,
                    "the cap (--idle-cap) or the server's fd handling",
                ),
                Metric(
                    "d",
                    "noop_ms",
                    "(d) NOOP with all held",
                    "ms",
                    False,
                    "one pass of the server's event loop over every connection",
                ),
                Metric(
                    "d",
                    "fill_seconds",
                    "(d) time to open them",
                    "s",
                    False,
                    "accepts per loop pass x cost of a pass (grows with the count)",
                ),
            ],
            idle=True,
        )
    )
    scenarios.append(
        Scenario(
            "d-select",
            "the same with asyncore's default select() loop",
            scenario_idle_max,
            [
                Metric(
                    "d-select",
                    "value",
                    "(d) idle, select loop",
                    "conns",
                    True,
                    "select() cannot watch fd >= 1024",
                )
            ],
            loop="select",
            kinds=("stdlib", "compat"),
            idle=True,
            expected_failure="asyncore's select() loop cannot watch fd >= 1024",
        )
    )
    scenarios.append(
        Scenario(
            "e",
            "RSS per idle connection (1000 connections after the greeting)",
            scenario_idle_rss,
            [
                Metric(
                    "e", "value", "(e) RSS per idle conn", "kB", False, "server memory"
                )
            ],
        )
    )
    scenarios.append(
        Scenario(
            "f",
            "new connection per message (connect, sendmail, quit), 10 clients",
            scenario_count(
                "connect-per-message", 10, "connect_msgs", 1024, "msgs_per_s"
            ),
            [
                Metric(
                    "f",
                    "value",
                    "(f) connect per msg x10",
                    "msg/s",
                    True,
                    "server or client CPU (see cpu%)",
                )
            ],
        )
    )
    return scenarios


# --------------------------------------------------------------------------
# Preparing interpreters and virtual environments
# --------------------------------------------------------------------------


def find_python(version: str, override: str | None) -> str:
    """The real executable of Python ``version`` (pyenv shims resolved)."""
    candidates = [override] if override else []
    candidates += (
        [
            os.path.join(PYENV_ROOT, "versions", name, "bin", "python" + version)
            for name in sorted(os.listdir(os.path.join(PYENV_ROOT, "versions")))
            if name.startswith(version + ".")
        ]
        if os.path.isdir(os.path.join(PYENV_ROOT, "versions"))
        else []
    )
    found = shutil.which("python" + version)
    if found:
        candidates.append(found)
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return out
    raise Failed(
        "no python%s found (give it with --python%s)"
        % (version, version.replace(".", ""))
    )


def pip(python: str, *args: str, timeout: float = 600) -> None:
    argv = [python, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Failed(
            "pip %s failed (exit status %d): %s"
            % (" ".join(args), done.returncode, " | ".join(tail))
        )


def source_copy(repo: str, into: str) -> str:
    """A copy of the checkout to build from, so the build leaves no files
    in the repository (a parallel tox run may be using it)."""
    target = os.path.join(into, "src")
    shutil.copytree(
        repo,
        target,
        ignore=shutil.ignore_patterns(
            ".git",
            ".tox",
            ".venv*",
            ".ci-cache",
            ".*_cache",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
        ),
    )
    return target


def prepare_targets(
    targets: list[Target], args: argparse.Namespace, log: Callable[[str], None]
) -> None:
    pythons: dict[str, str] = {}
    venv_dir = os.path.abspath(args.venv_dir)
    build_dir = tempfile.mkdtemp(prefix="smtpd-bench-")
    source = ""
    try:
        for target in targets:
            try:
                if target.version not in pythons:
                    override = getattr(args, "python" + target.version.replace(".", ""))
                    pythons[target.version] = find_python(target.version, override)
                base = pythons[target.version]
                if target.venv is None:
                    target.python = base
                else:
                    home = os.path.join(venv_dir, target.venv)
                    python = os.path.join(home, "bin", "python")
                    fresh = not os.path.exists(python)
                    if fresh:
                        log("creating %s" % home)
                        subprocess.run(
                            [base, "-m", "venv", home],
                            check=True,
                            timeout=300,
                            capture_output=True,
                        )
                    if target.kind == "compat":
                        if not source:
                            source = source_copy(args.repo, build_dir)
                        log(
                            "installing smtpd_compat from %s into %s"
                            % (args.repo, home)
                        )
                        if fresh:
                            pip(python, "install", source)
                        pip(python, "install", "--force-reinstall", "--no-deps", source)
                    else:
                        log(
                            "making sure aiosmtpd==%s is in %s"
                            % (args.aiosmtpd_version, home)
                        )
                        pip(python, "install", "aiosmtpd==%s" % args.aiosmtpd_version)
                    target.python = python
                target.info = describe_target(target)
            except (Failed, OSError, subprocess.SubprocessError) as exc:
                target.setup_error = "setup failed: %s" % exc
                log("%s: %s" % (target.name, target.setup_error))
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def describe_target(target: Target) -> str:
    module = {"stdlib": "smtpd", "compat": "smtpd_compat", "aiosmtpd": "aiosmtpd"}[
        target.kind
    ]
    code = (
        "import sys, warnings, importlib\n"
        "warnings.simplefilter('ignore')\n"
        "name, dist = sys.argv[1:3]\n"
        "module = importlib.import_module(name)\n"
        "try:\n"
        "    from importlib.metadata import version\n"
        "    found = version(dist)\n"
        "except Exception:\n"
        "    found = ''\n"
        "print('Python', sys.version.split()[0] + ',', name, found, 'from', module.__file__)\n"
    )
    done = subprocess.run(
        [target.python, "-I", "-c", code, module, module.replace("_", "-")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode:
        raise Failed(
            "cannot import %s (exit status %d): %s"
            % (module, done.returncode, done.stderr.strip()[-300:])
        )
    return done.stdout.strip()


# --------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------


def measure(target: Target, scenario: Scenario, settings: Settings) -> dict[str, Any]:
    if target.setup_error:
        return {"ok": False, "error": target.setup_error, "wall": 0.0}
    if target.kind not in scenario.kinds:
        return {"ok": None, "error": "not applicable", "wall": 0.0}
    server = None
    started = time.monotonic()
    result: dict[str, Any]
    try:
        server = Server(target, scenario.loop)
        overflows = listen_overflows()
        result = scenario.run(server, settings)
        memory = server.memory()
        result.setdefault("server_peak_rss_mb", memory.get("VmHWM", 0) / 1024.0)
        result.setdefault("ok", True)
        after = listen_overflows()
        if overflows is not None and after is not None:
            result["listen_overflows"] = after - overflows
    except Failed as exc:
        result = {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failed measurement, not a crash
        detail = "%s: %s" % (type(exc).__name__, exc)
        if server is not None and not server.child.alive():
            detail += "; server died: %s" % server.child.stderr_tail()
        result = {"ok": False, "error": detail}
    finally:
        if server is not None:
            server.stop()
    result["wall"] = time.monotonic() - started
    return result


def format_number(value: float) -> str:
    if value >= 1000:
        return "%.0f" % value
    if value >= 100:
        return "%.1f" % value
    if value >= 10:
        return "%.2f" % value
    return "%.3f" % value


def summarize(
    runs: list[dict[str, Any]], metric: Metric, stat: str = "median"
) -> tuple[float | None, str, str]:
    """(summary value, cell text, CPU use and pace) for one target/metric.

    The summary is the median of the rounds, or with stat "best" the best
    round (highest or lowest, as the metric prefers).
    """
    if not runs:
        return None, "-", ""
    if all(run.get("ok") is None for run in runs):
        return None, "n/a", ""
    good = [run for run in runs if run.get("ok") and metric.key in run]
    capacity = metric.scenario in ("d", "d-select") and metric.key == "value"
    if capacity:
        # how many were held counts even when the server failed afterwards
        good = [run for run in runs if metric.key in run]
    if not good:
        return None, "failed", ""
    values = [run[metric.key] for run in good]
    if stat == "best":
        median = max(values) if metric.higher_is_better else min(values)
    else:
        median = statistics.median(values)
    text = format_number(median)
    if capacity and not all(run.get("ok") for run in good):
        text += " FAIL"
    elif len(good) < len(runs):
        text += " (%d/%d)" % (len(good), len(runs))
    return median, text, pace_text(good)


def pace_text(runs: list[dict[str, Any]]) -> str:
    """Median CPU use of server/client/machine and what set the pace."""

    def middle(key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    server, client, machine = (
        middle("server_cpu"),
        middle("client_cpu"),
        middle("machine_cpu"),
    )
    if server is None:
        return ""
    shares = [server, client, machine]
    text = "/".join(
        "-" if share is None else "%.0f" % (100 * share) for share in shares
    )
    cores = os.cpu_count() or 1
    if server >= 0.85:
        limit = "server"
    elif (middle("listen_overflows") or 0) > 0:
        limit = "backlog"
    elif machine is not None and machine >= 0.85 * cores:
        limit = "machine"
    else:
        limit = "waits"
    return "%s %s" % (text, limit)


def render_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    out = []
    for index, row in enumerate([header, *rows]):
        cells = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator == 0:
        return "-"
    return "%.2f" % (numerator / denominator)


def report_tables(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    targets: list[Target],
    scenarios: list[Scenario],
    stat: str = "median",
) -> str:
    names = [target.name for target in targets]
    medians: dict[tuple[str, str, str], float | None] = {}
    value_rows = []
    cpu_rows = []
    for scenario in scenarios:
        for metric in scenario.metrics:
            row = [
                metric.label,
                metric.unit,
                "higher" if metric.higher_is_better else "lower",
            ]
            cpu_row = [metric.label]
            for name in names:
                median, text, cpu = summarize(
                    results.get((name, scenario.name), []), metric, stat
                )
                medians[(name, scenario.name, metric.key)] = median
                row.append(text)
                cpu_row.append(cpu or "-")
            value_rows.append(row)
            if any(cell != "-" for cell in cpu_row[1:]):
                cpu_rows.append(cpu_row)

    pairs = []
    if "stdlib-3.11" in names:
        pairs += [(name, "stdlib-3.11") for name in names if name != "stdlib-3.11"]
    compat = [name for name in names if name.startswith("compat")]
    for other in [name for name in names if name.startswith("aiosmtpd")]:
        pairs += [(name, other) for name in compat]
    ratio_rows = []
    for scenario in scenarios:
        for metric in scenario.metrics:
            row = [metric.label, "higher" if metric.higher_is_better else "lower"]
            for top, bottom in pairs:
                row.append(
                    ratio(
                        medians[(top, scenario.name, metric.key)],
                        medians[(bottom, scenario.name, metric.key)],
                    )
                )
            ratio_rows.append(row)

    parts = [
        "%s per target (better: which direction is better)"
        % ("Medians over the rounds" if stat == "median" else "Best round"),
        "",
        render_table(value_rows, ["scenario", "unit", "better", *names]),
        "",
    ]
    if pairs:
        parts += [
            (
                "Ratios of those values, target/reference (a ratio > 1 is better when"
                " 'better' is 'higher', < 1 when it is 'lower')"
            ),
            "",
            render_table(
                ratio_rows,
                ["scenario", "better", *["%s/%s" % pair for pair in pairs]],
            ),
            "",
        ]
    parts += [
        "CPU use during the measurement in %% of one core: server/client/whole"
        " machine (%d cores), and what set the pace: server = the server was"
        " busy (>= 85%%); backlog = connections were dropped by a full listen"
        " queue and waited for SYN retransmission; machine = all cores were busy"
        " (client processes, or other load on a shared machine); waits = round"
        " trips." % (os.cpu_count() or 0),
        "",
        render_table(cpu_rows, ["scenario", *names]),
        "",
        "What limits each scenario by design:",
    ]
    for scenario in scenarios:
        for metric in scenario.metrics:
            parts.append("  %-24s %s" % (metric.label, metric.limit))
    return "\n".join(parts)


def failures_text(
    results: dict[tuple[str, str], list[dict[str, Any]]], scenarios: list[Scenario]
) -> str:
    """Each distinct failure message, per target and scenario."""
    expected = {scenario.name: scenario.expected_failure for scenario in scenarios}
    lines = []
    for (name, scenario), runs in sorted(results.items()):
        seen = set()
        for run in runs:
            message = run.get("error") or (
                run.get("note") if run.get("ok") is False else None
            )
            if message and run.get("ok") is not None and message not in seen:
                seen.add(message)
                if expected.get(scenario):
                    message = "(expected: %s) %s" % (expected[scenario], message)
                lines.append("  %s / %s: %s" % (name, scenario, message))
    return "\n".join(lines)


def git_state(repo: str) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark smtpd_compat against Python 3.11's smtpd and aiosmtpd."
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds (default 5, quick 2)"
    )
    parser.add_argument("--quick", action="store_true", help="small counts, 2 rounds")
    parser.add_argument("--json", metavar="FILE", help="write all raw results to FILE")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated, from: %s" % ", ".join(ALL_TARGETS),
    )
    parser.add_argument(
        "--scenarios", default="", help="comma-separated scenario names"
    )
    parser.add_argument(
        "--idle-cap", type=int, default=0, help="(d) cap, default 10000"
    )
    parser.add_argument(
        "--idle-rounds",
        type=int,
        default=2,
        help="rounds for the slow idle-capacity scenarios (default 2)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="worker processes for the smtplib clients (default 2)",
    )
    parser.add_argument("--venv-dir", default=HERE, help="where the .venv-* live")
    parser.add_argument("--repo", default=REPO, help="smtpd_compat checkout to install")
    parser.add_argument("--aiosmtpd-version", default=AIOSMTPD_VERSION)
    parser.add_argument("--python311", help="Python 3.11 executable")
    parser.add_argument("--python313", help="Python 3.13 executable")
    parser.add_argument(
        "--stat",
        choices=("median", "best"),
        default="median",
        help="summarize the rounds by their median (default) or best value",
    )
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="print the tables of a run saved with --json, without running",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and exit")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    # internal modes
    if argv[:1] == ["--serve"]:
        kind = argv[1]
        loop = argv[3] if argv[2:3] == ["--loop"] else "poll"
        serve(kind, loop)
        return 0
    if argv[:1] == ["--worker"]:
        worker_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["--hold"]:
        hold_main(json.loads(argv[1]))
        return 0

    args = parse_args(argv)
    scenarios = build_scenarios()
    if args.from_json:
        with open(args.from_json) as saved:
            run = json.load(saved)
        print_report(run["meta"], run["results"], scenarios, args.stat)
        return 0
    if args.list:
        for scenario in scenarios:
            print("%-9s %s" % (scenario.name, scenario.title))
        return 0
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = set(wanted) - {s.name for s in scenarios}
        if unknown:
            print("unknown scenarios: %s" % ", ".join(sorted(unknown)), file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s.name in wanted]
    target_names = args.targets.split(",")
    unknown = set(target_names) - set(ALL_TARGETS)
    if unknown:
        print("unknown targets: %s" % ", ".join(sorted(unknown)), file=sys.stderr)
        return 2
    targets = [Target(name, *ALL_TARGETS[name]) for name in target_names]
    settings = Settings(args)
    fd_limit = raise_fd_limit()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    began = time.monotonic()
    prepare_targets(targets, args, log)
    for target in targets:
        log("%-12s %s" % (target.name, target.info or target.setup_error))

    raw = []
    for scenario in scenarios:
        rounds = settings.idle_rounds if scenario.idle else settings.rounds
        for round_number in range(1, rounds + 1):
            for target in targets:
                result = measure(target, scenario, settings)
                result["target"] = target.name
                result["scenario"] = scenario.name
                result["round"] = round_number
                raw.append(result)
                if result.get("ok") is None:
                    continue
                if result.get("ok") or "value" in result:
                    shown = (
                        format_number(result["value"]) + " " + scenario.metrics[0].unit
                    )
                    if not result.get("ok"):
                        shown += " (%s)" % result.get("note", "failed")
                    cpu = result.get("server_cpu")
                    if cpu is not None:
                        shown += ", cpu server %.0f%%" % (100 * cpu)
                    cpu = result.get("client_cpu")
                    if cpu is not None:
                        shown += " client %.0f%%" % (100 * cpu)
                    if result.get("listen_overflows"):
                        shown += ", %d listen overflows" % result["listen_overflows"]
                else:
                    shown = "FAILED: %s" % result["error"]
                shown += " [%.1f s]" % result["wall"]
                log(
                    "[%s] round %d/%d %-12s %s"
                    % (scenario.name, round_number, rounds, target.name, shown)
                )

    meta = {
        "repo": args.repo,
        "git": git_state(args.repo),
        "mode": "quick" if args.quick else "full",
        "rounds": settings.rounds,
        "idle_rounds": settings.idle_rounds,
        "counts": {
            "smtplib_1kb_msgs": settings.small_msgs,
            "pipelined_1kb_msgs": settings.pipelined_msgs,
            "smtplib_1mb_msgs": settings.big_msgs,
            "connect_per_msg_msgs": settings.connect_msgs,
            "huge_bytes": settings.huge_size,
            "idle_cap": settings.idle_cap,
            "idle_rss_conns": settings.idle_rss_conns,
        },
        "targets": {t.name: t.info or t.setup_error for t in targets},
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "fd_limit": fd_limit,
        "client_python": platform.python_version(),
        "client_processes": settings.client_processes,
        "seconds": time.monotonic() - began,
    }
    print()
    print_report(meta, raw, scenarios, args.stat)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "results": raw}, out, indent=1)
        print("\nraw results written to %s" % args.json)
    return 0


def print_report(
    meta: dict[str, Any],
    raw: list[dict[str, Any]],
    scenarios: list[Scenario],
    stat: str,
) -> None:
    """Print the header, the tables and the failures of one run."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in raw:
        results.setdefault((result["target"], result["scenario"]), []).append(result)
    present = {result["scenario"] for result in raw}
    scenarios = [scenario for scenario in scenarios if scenario.name in present]
    targets = [Target(name, *ALL_TARGETS[name]) for name in meta["targets"]]
    print(
        "smtpd_compat benchmark: %s rounds (idle capacity: %s), %s, repo %s, %.0f s"
        % (
            meta.get("rounds", "?"),
            meta.get("idle_rounds", "?"),
            meta.get("mode", "?"),
            meta.get("git", "?"),
            meta.get("seconds", 0),
        )
    )
    for name, info in meta["targets"].items():
        print("  %-12s %s" % (name, info))
    print(
        "  machine: %s, %s CPUs, fd limit %s; client: Python %s, %s smtplib"
        " worker processes"
        % tuple(
            meta.get(key, "?")
            for key in (
                "platform",
                "cpus",
                "fd_limit",
                "client_python",
                "client_processes",
            )
        )
    )
    print()
    print(report_tables(results, targets, scenarios, stat))
    failures = failures_text(results, scenarios)
    if failures:
        print()
        print("Failures:")
        print(failures)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
