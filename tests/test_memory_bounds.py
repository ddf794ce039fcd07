"""The server's memory stays bounded whatever a client streams at it.

The server runs in a subprocess (a small script written to tmp_path), so
its resident set size can be read from /proc/<pid>/status: VmRSS (now) and
VmHWM (the peak since the process started).  Each test streams far more
than any limit - an endless command line, DATA far past data_size_limit,
millions of pipelined commands whose replies are never read - and asserts
that the peak RSS grew by no more than README.rst states (under "Bounded
memory") plus a small allowance for noise: allocator slack, the first big
reads and sends, coverage's data when the suite runs under coverage.  The
allowance is far below the limits involved, so keeping a few times the
DATA limit or the output backlog in memory fails.
"""

import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import TIMEOUT, subprocess_env
from robustness_support import read_until_closed

import smtpd_compat

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="needs /proc/<pid>/status (Linux)"
)

MB = 1 << 20
#: Peak RSS growth README.rst states for each stream ...
README_GROWTH = {
    "command line": 0.1 * MB,
    "DATA": 2.2 * MB,
    "pipelined NOOPs": 0.7 * MB,
}
#: ... and the noise tolerated on top.  (Measured on Python 3.8-3.13, with
#: and without coverage: at most 0.3 MB above the README figures.)
NOISE = 1 * MB

SERVER_SCRIPT = textwrap.dedent(
    """
    import os, socket, sys
    from smtpd_compat import SMTPServer, asyncore

    class CountingSink(SMTPServer):
        '''Counts messages and keeps nothing, so memory is the server's own.'''
        delivered = 0

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            CountingSink.delivered += 1

    limit = int(sys.argv[1]) or None
    kernel_buffers = int(sys.argv[2])
    server = CountingSink(("127.0.0.1", 0), None, data_size_limit=limit)
    if kernel_buffers:  # inherited by the accepted connections
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            server.socket.setsockopt(socket.SOL_SOCKET, option, kernel_buffers)
    print(server.socket.getsockname()[1], os.getpid(), flush=True)
    asyncore.loop(timeout=0.1, use_poll=True)
    """
)


def memory_of(pid):
    """(VmRSS, VmHWM) of process ``pid``, in bytes."""
    with open("/proc/%d/status" % pid) as status:
        text = status.read()
    values = {}
    for name in ("VmRSS", "VmHWM"):
        match = re.search(r"^%s:\s+(\d+) kB" % name, text, re.MULTILINE)
        values[name] = int(match.group(1)) * 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid):
    """Make VmHWM start again from the current RSS (Linux 4.0 and later).

    Without this the peak would include whatever the interpreter used
    while starting up, which has nothing to do with the test's stream.
    Where the kernel refuses, the old peak stays: a stricter comparison.
    """
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


class ServerProcess:
    def __init__(self, tmp_path, data_size_limit, kernel_buffers):
        script = tmp_path / "memory_server.py"
        script.write_text(SERVER_SCRIPT)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(data_size_limit or 0),
                str(kernel_buffers or 0),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
            text=True,
        )
        ready = select.select([self.proc.stdout], [], [], 3 * TIMEOUT)[0]
        assert ready, "server process did not start"
        port, pid = self.proc.stdout.readline().split()
        self.address = ("127.0.0.1", int(port))
        self.pid = int(pid)
        self.limit = data_size_limit

    def connect(self, kernel_buffers=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if kernel_buffers:
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, kernel_buffers)
        sock.settimeout(TIMEOUT)
        sock.connect(self.address)
        greeting, _ = read_until_closed(sock, limit=1)
        assert greeting.startswith(b"220 ")
        return sock

    def warm_up(self):
        """One ordinary session, so that baseline memory includes its imports."""
        sock = self.connect()
        try:
            sock.sendall(
                b"EHLO warm\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                b"DATA\r\nSubject: warm up\r\n\r\nhello\r\n.\r\nQUIT\r\n"
            )
            replies, how = read_until_closed(sock)
            assert how == "eof" and replies.endswith(b"221 Bye\r\n")
        finally:
            sock.close()
        reset_peak(self.pid)
        return memory_of(self.pid)[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


@pytest.fixture
def memory_server(tmp_path):
    servers = []

    def start(data_size_limit=None, kernel_buffers=None):
        """``kernel_buffers``: SO_SNDBUF and SO_RCVBUF of the server's sockets."""
        server = ServerProcess(tmp_path, data_size_limit, kernel_buffers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def stream(sock, total, block, server, samples):
    """Send ``total`` bytes of ``block`` repeated, sampling the server's RSS."""
    piece = block * max(1, (1 << 16) // len(block))
    sent = 0
    next_sample = 0
    while sent < total:
        chunk = piece[: total - sent]
        sock.sendall(chunk)
        sent += len(chunk)
        if sent >= next_sample:
            samples.append(memory_of(server.pid)[0])
            next_sample += 2 * MB


def report(label, baseline, samples, peak, bound):
    print(
        "%s: baseline RSS %.1f MB, max sampled RSS %.1f MB, peak (VmHWM) %.1f MB,"
        " bound %.1f MB"
        % (label, baseline / MB, max(samples) / MB, peak / MB, bound / MB)
    )


def test_endless_command_line(memory_server):
    """50 MB without a newline: the server keeps none of it."""
    server = memory_server()
    baseline = server.warm_up()
    sock = server.connect()
    samples = []
    try:
        stream(sock, 50 * MB, b"X", server, samples)
        sock.sendall(b"\r\nNOOP\r\nQUIT\r\n")
        replies, _ = read_until_closed(sock)
    finally:
        sock.close()
    assert replies == b"500 Error: line too long\r\n250 OK\r\n221 Bye\r\n"
    peak = memory_of(server.pid)[1]
    bound = baseline + README_GROWTH["command line"] + NOISE
    report("50 MB command line", baseline, samples, peak, bound)
    assert peak < bound


def test_data_past_size_limit(memory_server):
    """100 MB of DATA with a 1 MB limit: refused with 552, memory bounded."""
    server = memory_server(data_size_limit=MB)
    baseline = server.warm_up()
    sock = server.connect()
    samples = []
    try:
        sock.sendall(
            b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
        )
        sock.sendall(b"DATA\r\n")
        stream(
            sock,
            100 * MB,
            b"0123456789 abcdefghijklmnopqrstuvwxyz\r\n",
            server,
            samples,
        )
        sock.sendall(b"\r\n.\r\nNOOP\r\nQUIT\r\n")
        replies, _ = read_until_closed(sock)
    finally:
        sock.close()
    codes = re.findall(rb"^(\d{3})[ -]", replies, re.MULTILINE)
    assert codes == [b"250", b"250", b"250", b"354", b"552", b"250", b"221"]
    peak = memory_of(server.pid)[1]
    bound = baseline + README_GROWTH["DATA"] + NOISE
    report("100 MB of DATA, 1 MB limit", baseline, samples, peak, bound)
    assert peak < bound


REPLY = b"250 OK\r\n"


class ReplyCounter:
    """Checks that a reply stream is nothing but ``250 OK`` lines and counts them."""

    def __init__(self):
        self.size = 0

    def feed(self, data):
        offset = self.size % len(REPLY)
        expected = (REPLY * (len(data) // len(REPLY) + 2))[offset : offset + len(data)]
        assert data == expected, "unexpected reply bytes: %r" % data[:80]
        self.size += len(data)

    @property
    def count(self):
        return self.size // len(REPLY)


NOOP = b"NOOP\r\n"
NOOPS = NOOP * ((1 << 16) // len(NOOP))


def next_noops(sent, total):
    """The bytes that continue a stream of NOOPs after ``sent`` bytes."""
    start = sent % len(NOOP)
    return NOOPS[start : start + min(total - sent, len(NOOPS) - len(NOOP))]


def pipeline_without_reading(sock, total, server, samples, patience=1.0):
    """Send NOOPs until the server stops taking them; return the bytes sent."""
    sock.setblocking(False)
    sent = 0
    last_progress = time.monotonic()
    while sent < total and time.monotonic() - last_progress < patience:
        if not select.select([], [sock], [], 0.05)[1]:
            continue
        try:
            sent += sock.send(next_noops(sent, total))
        except BlockingIOError:
            continue
        last_progress = time.monotonic()
        samples.append(memory_of(server.pid)[0])
    return sent


def finish_pipeline(sock, sent, total, counter):
    """Send the rest of the NOOPs while reading every reply."""
    deadline = time.monotonic() + 60
    while counter.count < total // len(NOOP):
        assert time.monotonic() < deadline, "replies stopped at %d" % counter.count
        writers = [sock] if sent < total else []
        readable, writable, _ = select.select([sock], writers, [], 1.0)
        if readable:
            data = sock.recv(1 << 18)
            assert data, "server closed the connection"
            counter.feed(data)
        if writable:
            try:
                sent += sock.send(next_noops(sent, total))
            except BlockingIOError:
                pass


@pytest.mark.parametrize(
    "megabytes, kernel_buffers",
    [
        pytest.param(2, 1 << 16, id="2MB-small-kernel-buffers"),
        pytest.param(25, None, id="25MB", marks=pytest.mark.slow),
    ],
)
def test_pipelined_commands_never_read(memory_server, megabytes, kernel_buffers):
    """A client pipelines NOOPs and does not read: the server stops reading.

    Its output backlog stops at about ac_out_pending_limit (1 MiB), so its
    memory stays bounded; once the client reads, the server resumes and
    answers every single NOOP, and the connection still works.  With the
    system's socket buffers (megabytes on Linux) the kernel takes several
    MB of replies before the server's own backlog fills; the quick version
    makes them small (64 KiB, both ends) to get there with less traffic.
    """
    server = memory_server(kernel_buffers=kernel_buffers)
    baseline = server.warm_up()
    sock = server.connect(kernel_buffers)
    total = megabytes * MB // len(NOOP) * len(NOOP)
    samples = []
    try:
        sent = pipeline_without_reading(sock, total, server, samples)
        assert sent < total, "the server never applied back-pressure"
        for _ in range(5):  # while the server is not reading
            time.sleep(0.05)
            samples.append(memory_of(server.pid)[0])
        counter = ReplyCounter()
        finish_pipeline(sock, sent, total, counter)
        assert counter.count == total // len(NOOP)
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        sock.sendall(b"NOOP\r\nQUIT\r\n")
        rest, _ = read_until_closed(sock)
    finally:
        sock.close()
    assert rest == b"250 OK\r\n221 Bye\r\n"
    peak = memory_of(server.pid)[1]
    bound = baseline + README_GROWTH["pipelined NOOPs"] + NOISE
    report(
        "%d MB of pipelined NOOPs (%d sent before the server stopped reading)"
        % (megabytes, sent // len(NOOP)),
        baseline,
        samples,
        peak,
        bound,
    )
    assert peak < bound


def test_idle_channels_share_their_attribute_keys():
    """A fresh channel's attribute dict is a key-sharing one, as 3.11's was.

    CPython stores the attribute names of instances of one class once, as
    long as each instance sets the same attributes in the same order and
    not too many of them; an idle connection then costs about half the
    memory (README, "RSS per idle connection").  One extra attribute set
    at construction is enough to lose that, silently.
    """

    # A class of its own: CPython (3.8 in particular) stops sharing a
    # class's keys for good once one of its instances deviated, and other
    # tests in this process make channels in all sorts of ways.
    class FreshChannel(smtpd_compat.SMTPChannel):
        pass

    server = smtpd_compat.SMTPServer(("127.0.0.1", 0), None, map={})
    clients = []
    try:
        sizes = []
        for _ in range(3):
            client = socket.create_connection(server.socket.getsockname(), timeout=5)
            clients.append(client)
            conn, addr = server.socket.accept()
            channel = FreshChannel(server, conn, addr, map={})
            attributes = vars(channel)
            # the same items in a dict of its own: no key sharing
            sizes.append((sys.getsizeof(attributes), sys.getsizeof(dict(attributes))))
            channel.close()
        for shared, unshared in sizes:
            assert shared < unshared
    finally:
        for client in clients:
            client.close()
        server.close()
