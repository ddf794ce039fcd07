"""Shared fixtures and helpers for the smtpd_compat test-suite.

Everything here talks to real sockets bound to 127.0.0.1 (or ::1) on
OS-assigned ports.  Each server gets its own private asyncore socket map which
is driven by a daemon thread; teardown always stops the thread and closes every
dispatcher that was registered in that map.
"""

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import pytest

import smtpd_compat
from smtpd_compat import asyncore

# A job that a non-interactive shell starts with "&" (nohup, a CI runner,
# mutmut's workers) has SIGINT ignored, and an ignored signal stays ignored
# in every program it starts: the command-line servers the tests stop with
# SIGINT (Ctrl-C) would not stop.  A handler, unlike SIG_IGN, is reset to
# the default in a child, which then gets its KeyboardInterrupt as usual.
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
):
    signal.signal(signal.SIGINT, signal.default_int_handler)

# tests/legacy/ holds programs that test_legacy_programs.py runs in child
# processes; some of their names look like test modules to pytest.
collect_ignore_glob = ["legacy/*"]

#: Bounded timeout (seconds) for every blocking operation in the suite.
TIMEOUT = 5.0

#: The name the server puts in its greeting / HELO reply.
FQDN = socket.getfqdn()

VERSION = "Python SMTP proxy version 0.3"

#: Greeting line as sent by the server, including the line terminator.
GREETING = ("220 %s %s\r\n" % (FQDN, VERSION)).encode("ascii")


def has_ipv6():
    """True when a TCP socket can be bound to ::1."""
    if not socket.has_ipv6:
        return False
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        probe.bind(("::1", 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


requires_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="IPv6 loopback unavailable")


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------

Delivery = collections.namedtuple("Delivery", "peer mailfrom rcpttos data kwargs")


class RecordingServer(smtpd_compat.SMTPServer):
    """Keeps every delivered message; answers with ``self.status``."""

    status = None

    def __init__(self, *args, **kwargs):
        self.deliveries = []
        smtpd_compat.SMTPServer.__init__(self, *args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.deliveries.append(Delivery(peer, mailfrom, list(rcpttos), data, kwargs))
        return self.status


def server_address(server):
    """(host, port) the listening socket of ``server`` is bound to."""
    return server.socket.getsockname()[:2]


class LoopRunner:
    """Drives ``asyncore.loop`` over one socket map in a daemon thread."""

    def __init__(self, sock_map, use_poll=False):
        self.map = sock_map
        self.use_poll = use_poll
        self.stop_flag = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._run, name="smtpd-loop")
        self.thread.daemon = True

    def _run(self):
        try:
            while not self.stop_flag.is_set():
                if self.map:
                    asyncore.loop(
                        timeout=0.05, map=self.map, use_poll=self.use_poll, count=1
                    )
                else:
                    time.sleep(0.01)
        except BaseException:  # noqa: BLE001 - reported at teardown
            self.errors.append(sys.exc_info())

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(TIMEOUT)
        try:
            asyncore.close_all(map=self.map, ignore_all=True)
        finally:
            self.map.clear()
        if self.thread.is_alive():  # pragma: no cover
            raise AssertionError("server loop thread did not stop")
        if self.errors:  # pragma: no cover
            exc = self.errors[0][1]
            raise AssertionError("exception escaped the server loop: %r" % (exc,))


@pytest.fixture
def serve():
    """Factory: ``serve(cls=RecordingServer, host='127.0.0.1', use_poll=False, **kw)``.

    Creates the server on a private socket map, starts the loop thread and
    returns the server object (its map is ``server._map``).
    """
    runners = []

    def start(
        server_class=RecordingServer,
        host="127.0.0.1",
        use_poll=False,
        remoteaddr=None,
        **kwargs,
    ):
        sock_map = {}
        server = server_class((host, 0), remoteaddr, map=sock_map, **kwargs)
        runner = LoopRunner(sock_map, use_poll=use_poll)
        server.test_runner = runner
        runners.append(runner)
        runner.start()
        return server

    yield start
    problems = []
    for runner in runners:
        try:
            runner.stop()
        except AssertionError as exc:  # pragma: no cover
            problems.append(str(exc))
    if problems:  # pragma: no cover
        pytest.fail("; ".join(problems))


@pytest.fixture
def server(serve):
    """A RecordingServer with default options."""
    return serve()


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


class PeerClosed(Exception):
    """The server closed the connection before a full reply arrived."""


class RawClient:
    """Minimal line-oriented SMTP client over a plain socket.

    ``cmd`` sends one command line and returns the raw bytes of the complete
    reply (every line, CRLFs included).
    """

    def __init__(self, address, family=socket.AF_INET, read_greeting=True):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)
        self.buffer = b""
        self.greeting = self.read_reply() if read_greeting else None

    @property
    def local_address(self):
        return self.sock.getsockname()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise PeerClosed(self.buffer)
        self.buffer += chunk

    def read_line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def read_reply(self):
        """Read lines until the last line of one reply (``NNN`` + not ``-``)."""
        lines = []
        while True:
            line = self.read_line()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.read_reply()

    def read_until_eof(self):
        """Everything the server still sends before it closes the connection."""
        data = self.buffer
        self.buffer = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


@pytest.fixture
def connect():
    """Factory: ``connect(server_or_address)`` -> RawClient (greeting read)."""
    clients = []

    def make(target, read_greeting=True):
        if isinstance(target, tuple):
            address = target
        else:
            address = target.socket.getsockname()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        client = RawClient(address, family=family, read_greeting=read_greeting)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(server, connect):
    """A RawClient connected to the default ``server`` fixture."""
    return connect(server)


def wait_for(predicate, timeout=TIMEOUT, interval=0.01):
    """Poll ``predicate`` until it is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def data_reply_ok(client, body, terminator=b"\r\n.\r\n"):
    """Send a DATA body (already transparent) and return the reply."""
    client.send(body + terminator)
    return client.read_reply()


def do_transaction(
    client,
    mailfrom="a@example.com",
    rcpts=("b@example.com",),
    body=b"Subject: hi\r\n\r\nhello",
    greet=b"HELO client",
):
    """Run a complete mail transaction and return the final reply."""
    if greet:
        assert client.cmd(greet).startswith(b"250")
    assert client.cmd("MAIL FROM:<%s>" % mailfrom) == b"250 OK\r\n"
    for rcpt in rcpts:
        assert client.cmd("RCPT TO:<%s>" % rcpt) == b"250 OK\r\n"
    assert client.cmd(b"DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    return data_reply_ok(client, body)


# ---------------------------------------------------------------------------
# Channels without a listening server
# ---------------------------------------------------------------------------


class DummyServer:
    """Stand-in for SMTPServer when a channel is built directly."""

    def __init__(self):
        self.deliveries = []
        self.status = None

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.deliveries.append(Delivery(peer, mailfrom, list(rcpttos), data, kwargs))
        return self.status


@pytest.fixture
def private_map():
    """A private asyncore map; every dispatcher left in it is closed at the end."""
    sock_map = {}
    yield sock_map
    asyncore.close_all(map=sock_map, ignore_all=True)
    sock_map.clear()


@pytest.fixture
def sockpair():
    """A connected socket pair; both ends closed at the end."""
    left, right = socket.socketpair()
    left.settimeout(TIMEOUT)
    right.settimeout(TIMEOUT)
    yield left, right
    for sock in (left, right):
        try:
            sock.close()
        except OSError:  # pragma: no cover
            pass


def pump(sock_map, until=None, timeout=TIMEOUT):
    """Run one-shot asyncore iterations over ``sock_map``.

    Without ``until`` a handful of iterations are run; with it, iterations run
    until ``until()`` is truthy or the deadline passes.  Returns ``until()``.
    """
    if until is None:
        asyncore.loop(timeout=0.01, count=5, map=sock_map)
        return None
    deadline = time.monotonic() + timeout
    while True:
        result = until()
        if result or time.monotonic() >= deadline:
            return result
        asyncore.loop(timeout=0.01, count=1, map=sock_map)


def quiet_import(name):
    """Import a module while silencing its DeprecationWarning (asyncore...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return __import__(name)


def subprocess_env(extra_paths=()):
    """Environment for child interpreters importing the same smtpd_compat."""
    env = dict(os.environ)
    package_file = getattr(smtpd_compat, "__file__", None) or ""
    paths = list(extra_paths)
    if os.path.basename(package_file) == "__init__.py":
        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(package_file))))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


# ---------------------------------------------------------------------------
# Waiting for the server to read what was sent (instead of sleeping)
# ---------------------------------------------------------------------------


class ByteCounter:
    """A running total of bytes that other threads can wait on."""

    def __init__(self):
        self._changed = threading.Condition()
        self.total = 0

    def add(self, count):
        with self._changed:
            self.total += count
            self._changed.notify_all()

    def wait_for(self, total, timeout=TIMEOUT):
        """True once at least ``total`` bytes were counted (False on timeout)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.total >= total, timeout)


class ReadCountingChannel(smtpd_compat.SMTPChannel):
    """Adds every byte it reads to ``smtp_server.bytes_read``, if there is one."""

    def recv(self, buffer_size):
        data = smtpd_compat.SMTPChannel.recv(self, buffer_size)
        counter = getattr(self.smtp_server, "bytes_read", None)
        if counter is not None:
            counter.add(len(data))
        return data


class ReadCountingServer(RecordingServer):
    """A RecordingServer whose ``bytes_read`` counts what its channels read.

    A test that needs input split across reads sends a piece, waits until
    the server has read it, then sends the next: a sleep cannot promise
    that, since the kernel may hand both pieces over in one read.
    """

    channel_class = ReadCountingChannel

    def __init__(self, *args, **kwargs):
        self.bytes_read = ByteCounter()
        RecordingServer.__init__(self, *args, **kwargs)


def run_cli(*args, **kwargs):
    """Run the CLI to completion and return the CompletedProcess."""
    env = subprocess_env(kwargs.pop("extra_paths", ()))
    return subprocess.run(
        [sys.executable, "-m", "smtpd_compat"] + list(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=30,
        **kwargs,
    )


@pytest.fixture(params=["child process", "in process"])
def cli(request):
    """Run the command line to completion: in a child interpreter, as users
    do, and as ``_main()`` in this process (see conftest.main_in_process).
    Both must print the same and exit with the same status."""
    if request.param == "child process":
        return run_cli
    return request.getfixturevalue("main_in_process")


def swaks_path():
    """The path of swaks; a skip without it, but a failure under CI."""
    path = shutil.which("swaks")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("swaks is required in CI (apt-get install swaks)")
        pytest.skip("swaks is not installed")
    return path


@pytest.fixture
def swaks():
    """The path of swaks (see swaks_path)."""
    return swaks_path()


def swaks_session(
    swaks,
    port,
    *arguments,
    sender="sender@example.com",
    recipient="rcpt@example.com",
):
    """(exit status, transcript) of one swaks session with 127.0.0.1:port."""
    command = [swaks, "--server", "127.0.0.1", "--port", str(port)]
    command += ["--from", sender, "--to", recipient, "--helo", "client.example"]
    command += ["--timeout", "20", *arguments]
    result = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
        check=False,
    )
    return result.returncode, result.stdout.decode("utf-8", "replace")


class CLIRun:
    """What one run of the command line did: exit status, output, effects."""

    def __init__(self):
        self.returncode = 0
        self.stdout = ""
        self.stderr = ""
        #: Dispatchers the run registered (its server), closed at teardown.
        self.servers = []
        #: Keyword arguments of each asyncore.loop() call.
        self.loop_calls = []
        #: The uids os.setuid() was called with.
        self.setuid_calls = []


@pytest.fixture
def main_in_process(monkeypatch, capsys):
    """Factory: run ``python -m smtpd_compat ARGS`` as ``_main()`` in this process.

    The same code as the child process runs, minus the event loop:
    ``asyncore.loop`` and ``os.setuid`` only record their calls (the loop
    may be told to raise with ``loop_raises``).  Module globals the options
    change (DEBUGSTREAM) are restored and the servers closed afterwards.
    Tests that spawn the real command line cannot be traced to the
    functions they exercise; these can (coverage, mutation testing).
    """
    runs = []

    def run(*args, loop_raises=None):
        result = CLIRun()
        runs.append(result)

        def loop(**kwargs):
            result.loop_calls.append(kwargs)
            if loop_raises is not None:
                raise loop_raises

        monkeypatch.setattr(sys, "argv", ["smtpd_compat", *args])
        monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", smtpd_compat.DEBUGSTREAM)
        monkeypatch.setattr(asyncore, "loop", loop)
        monkeypatch.setattr(os, "setuid", result.setuid_calls.append)
        before = set(asyncore.socket_map)
        try:
            smtpd_compat._main()
        except SystemExit as exc:
            # As given: a process ends with 0 for None as for 0, but a
            # program that catches SystemExit sees which it was (3.11: 0).
            result.returncode = exc.code
        finally:
            result.servers = [
                asyncore.socket_map[fd] for fd in set(asyncore.socket_map) - before
            ]
        result.stdout, result.stderr = capsys.readouterr()
        return result

    yield run
    for result in runs:
        for server in result.servers:
            server.close()


def send_in_separate_reads(client, server, *pieces):
    """Send each piece only after ``server`` (a ReadCountingServer) read the last.

    ``client`` is a RawClient or a socket.  Assumes the server has read
    everything sent on its connections so far (e.g. all replies are in).
    """
    sock = getattr(client, "sock", client)
    expected = server.bytes_read.total
    for piece in pieces:
        sock.sendall(piece)
        expected += len(piece)
        assert server.bytes_read.wait_for(expected), "the server did not read %r" % (
            piece,
        )
    assert server.bytes_read.total == expected


# ---------------------------------------------------------------------------
# The command line in a subprocess, on a port the OS picks
# ---------------------------------------------------------------------------


def _socket_inodes(pid):
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening_ports_from_proc(pid):
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as rows:
                next(rows)  # the header
                for row in rows:
                    fields = row.split()
                    # st 0A is TCP_LISTEN; field 9 is the socket's inode
                    if fields[3] == "0A" and fields[9] in inodes:
                        ports.add(int(fields[1].rpartition(":")[2], 16))
        except FileNotFoundError:  # no IPv6, or the process has gone
            continue
    return ports


def _listening_ports_from_lsof(pid):
    lsof = shutil.which("lsof")
    if lsof is None:
        raise AssertionError("cannot list listening sockets: no /proc and no lsof")
    result = subprocess.run(
        [lsof, "-nP", "-a", "-p", str(pid), "-iTCP", "-sTCP:LISTEN", "-Fn"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return {
        int(line.rpartition(":")[2])
        for line in result.stdout.splitlines()
        if line.startswith("n")
    }


def listening_ports(pid):
    """The TCP ports process ``pid`` listens on (empty if it has gone)."""
    if os.path.isdir("/proc/self/fd"):
        try:
            return _listening_ports_from_proc(pid)
        except (FileNotFoundError, ProcessLookupError):
            return set()
    return _listening_ports_from_lsof(pid)


def start_cli(args, host="127.0.0.1", module="smtpd_compat", env=None, **popen_kw):
    """Start ``python -m MODULE ARGS HOST:0`` and wait until it greets.

    The server binds a port the OS chooses (never one picked in advance,
    which another process could take first); it is found among the
    process's listening sockets.  Returns (Popen, port).  ``popen_kw`` go
    to Popen (stdout, stderr, text ...; both streams default to PIPE).
    """
    spec = ("[%s]:0" if ":" in host else "%s:0") % host
    popen_kw.setdefault("stdout", subprocess.PIPE)
    popen_kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args, spec],
        stdin=subprocess.DEVNULL,
        env=subprocess_env() if env is None else env,
        **popen_kw,
    )
    try:
        port = _wait_for_listening_port(proc, time.monotonic() + 20)
        _wait_for_greeting(proc, host, port)
    except (AssertionError, OSError, ValueError):  # ValueError: several ports
        proc.kill()
        out, err = proc.communicate(timeout=TIMEOUT)
        raise AssertionError(
            "%s did not start (status %s): %r %r" % (module, proc.returncode, out, err)
        ) from None
    return proc, port


def _wait_for_listening_port(proc, deadline):
    while time.monotonic() < deadline and proc.poll() is None:
        ports = listening_ports(proc.pid)
        if ports:
            [port] = ports
            return port
        time.sleep(0.02)
    raise AssertionError("no listening socket")


def _wait_for_greeting(proc, host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(TIMEOUT)
        probe.connect((host, port))
        greeting = probe.recv(1024)
    if not greeting.startswith(b"220 "):
        raise AssertionError("no greeting: %r" % greeting)


# ---------------------------------------------------------------------------
# Skips: under tox every one must be listed as expected
# ---------------------------------------------------------------------------

#: Set by tox.ini to the list of expected skips; then any other skip fails
#: the run, so that a test that stopped running is a decision, not news.
EXPECTED_SKIPS_VARIABLE = "SMTPD_COMPAT_EXPECTED_SKIPS"

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

_skips_seen = []
_unexpected_skips = []


def _python_version_matches(spec, version=sys.version_info[:2]):
    """``3.8-3.11``, ``3.12+``, ``3.10`` or ``all`` against (major, minor)."""

    def parse(text):
        major, minor = text.split(".")
        return int(major), int(minor)

    if spec == "all":
        return True
    if spec.endswith("+"):
        return version >= parse(spec[:-1])
    low, _, high = spec.partition("-")
    return parse(low) <= version <= parse(high or low)


def read_expected_skips(path):
    """[(python versions, node id, reason)] from the expected-skips file.

    One skip a line, ``VERSIONS | NODE ID | REASON``, the node id relative
    to the tests directory; ``#`` starts a comment line.
    """
    entries = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [field.strip() for field in line.split("|")]
            if len(fields) != 3 or not all(fields):
                raise ValueError(
                    "%s:%d: not VERSIONS | NODE ID | REASON" % (path, number)
                )
            entries.append(tuple(fields))
    return entries


def _skip_reason(report):
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return re.sub(r"^Skipped: ", "", reason)


def _node_id_in_tests_dir(report, rootdir):
    path, _, rest = report.nodeid.partition("::")
    relative = os.path.relpath(os.path.join(str(rootdir), path), TESTS_DIR)
    return relative.replace(os.sep, "/") + ("::" + rest if rest else "")


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips_seen.append(report)


def unexpected_skips(skips, expected, version=sys.version_info[:2]):
    """The (node id, reason) pairs of ``skips`` that ``expected`` does not list."""
    allowed = {
        (node_id, reason)
        for versions, node_id, reason in expected
        if _python_version_matches(versions, version)
    }
    return [skip for skip in skips if skip not in allowed]


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(EXPECTED_SKIPS_VARIABLE)
    if not path:
        return
    skips = [
        (_node_id_in_tests_dir(report, session.config.rootpath), _skip_reason(report))
        for report in _skips_seen
    ]
    _unexpected_skips[:] = unexpected_skips(skips, read_expected_skips(path))
    if _unexpected_skips and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not _unexpected_skips:
        return
    path = os.environ.get(EXPECTED_SKIPS_VARIABLE)
    terminalreporter.section("unexpected skips", red=True, bold=True)
    for node_id, reason in _unexpected_skips:
        terminalreporter.line("%s | %s" % (node_id, reason))
    terminalreporter.line(
        "%d skip(s) not listed in %s for Python %d.%d: the run fails"
        % ((len(_unexpected_skips), path) + sys.version_info[:2]),
        red=True,
    )
