"""``python -m smtpd_compat``: the command line interface."""

import os
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import TIMEOUT, requires_ipv6, subprocess_env

import smtpd_compat
from smtpd_compat import asyncore

VERSION = "Python SMTP proxy version 0.3"
SETUID_ERROR = 'Cannot setuid "nobody"; try running with -n option.'

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals used")


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


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((host, 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


class RunningCLI:
    """A CLI server process plus its address; always terminated in ``stop``."""

    def __init__(self, proc, host, port):
        self.proc = proc
        self.host = host
        self.port = port
        self.stdout = None
        self.stderr = None

    def smtp(self):
        return smtplib.SMTP(self.host, self.port, timeout=TIMEOUT)

    def interrupt(self):
        """Send SIGINT and wait for the process to exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.stdout, self.stderr = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=TIMEOUT)


def _wait_until_serving(proc, host, port, deadline):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.settimeout(TIMEOUT)
        try:
            probe.connect((host, port))
            # Wait for the greeting so that the server is known to be
            # ours and fully started.
            greeting = probe.recv(1024)
            return greeting.startswith(b"220 ")
        except OSError:
            time.sleep(0.05)
        finally:
            probe.close()
    return False


@pytest.fixture
def start_cli():
    """Factory: start ``python -m smtpd_compat -n [args] host:PORT``."""
    started = []

    def start(*args, **kwargs):
        host = kwargs.pop("host", "127.0.0.1")
        extra_paths = kwargs.pop("extra_paths", ())
        last_error = None
        for _ in range(3):
            port = free_port(host)
            spec = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
            proc = subprocess.Popen(
                [sys.executable, "-m", "smtpd_compat", "-n"] + list(args) + [spec],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                universal_newlines=True,
                env=subprocess_env(extra_paths),
            )
            running = RunningCLI(proc, host, port)
            started.append(running)
            if _wait_until_serving(proc, host, port, time.monotonic() + 15):
                return running
            running.kill()
            last_error = (proc.returncode, proc.stderr.read() if proc.stderr else "")
        pytest.fail("CLI server did not start: %r" % (last_error,))

    yield start
    for running in started:
        running.kill()


# --- options that exit immediately ----------------------------------------------


@pytest.mark.parametrize("option", ["-V", "--version"])
def test_version(option):
    result = run_cli(option)
    assert result.returncode == 0
    assert result.stdout == VERSION + "\n"


@pytest.mark.parametrize("option", ["-h", "--help"])
def test_help(option):
    result = run_cli(option)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "Usage:" in result.stderr
    assert "--nosetuid" in result.stderr
    assert "Version: " + VERSION in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["-x"], "option -x not recognized"),
        (["--bogus"], "option --bogus not recognized"),
        (["-c"], "option -c requires argument"),
    ],
)
def test_bad_option(args, message):
    result = run_cli(*args)
    assert result.returncode == 1
    assert "Usage:" in result.stderr
    assert result.stderr.rstrip("\n").endswith(message)


@pytest.mark.parametrize(
    "args,message",
    [
        (["nocolon"], "Bad local spec: nocolon"),
        (["host:notaport"], "Bad local port: host:notaport"),
        (["host:"], "Bad local port: host:"),
        (["127.0.0.1:0", "remote"], "Bad remote spec: remote"),
        (["127.0.0.1:0", "remote:smtp"], "Bad remote port: remote:smtp"),
        (["a", "b", "c"], "Invalid arguments: a, b, c"),
    ],
)
def test_bad_arguments(args, message):
    result = run_cli("-n", *args)
    assert result.returncode == 1
    assert result.stderr.rstrip("\n").endswith(message)
    assert "Usage:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_invalid_size(value):
    result = run_cli("-n", "-s", value, "127.0.0.1:0")
    assert result.returncode == 1
    assert result.stderr == "Invalid size: %s\n" % value


def test_unknown_class():
    """Extension over 3.11 (which printed a traceback)."""
    result = run_cli("-n", "-c", "NoSuchServer", "127.0.0.1:0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "NoSuchServer" in result.stderr


def test_unknown_dotted_class():
    """Extension over 3.11 (which printed a traceback)."""
    result = run_cli("-n", "-c", "no_such_module_xyz.Server", "127.0.0.1:0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- running servers ----------------------------------------------------------------


def test_debugging_server_session(start_cli):
    cli = start_cli("-c", "DebuggingServer")
    with cli.smtp() as smtp:
        assert smtp.ehlo("cli.test")[0] == 250
        assert "size" not in smtp.esmtp_features
        assert "smtputf8" not in smtp.esmtp_features
        assert "8bitmime" in smtp.esmtp_features
        assert (
            smtp.sendmail(
                "from@example.com",
                ["to@example.com"],
                b"Subject: cli test\r\n\r\nHello from the test\r\n",
            )
            == {}
        )
    assert cli.interrupt() == 0
    assert "---------- MESSAGE FOLLOWS ----------" in cli.stdout
    assert "b'Subject: cli test'" in cli.stdout
    assert "b'X-Peer: 127.0.0.1'" in cli.stdout
    assert "b'Hello from the test'" in cli.stdout
    assert "------------ END MESSAGE ------------" in cli.stdout
    assert "Traceback" not in cli.stderr


def test_sigint_while_idle(start_cli):
    cli = start_cli("-c", "DebuggingServer")
    assert cli.interrupt() == 0
    assert cli.stdout == ""
    assert "Traceback" not in cli.stderr


def test_size_option(start_cli):
    cli = start_cli("-c", "DebuggingServer", "-s", "1000")
    with cli.smtp() as smtp:
        smtp.ehlo("cli.test")
        assert smtp.esmtp_features["size"] == "1000"
        code, message = smtp.mail("a@b", ["SIZE=1001"])
        assert (code, message) == (
            552,
            b"Error: message size exceeds fixed maximum message size",
        )
    assert cli.interrupt() == 0


def test_long_options(start_cli):
    cli = start_cli("--class=DebuggingServer", "--size=2048", "--smtputf8")
    with cli.smtp() as smtp:
        smtp.ehlo("cli.test")
        assert smtp.esmtp_features["size"] == "2048"
        assert "smtputf8" in smtp.esmtp_features
    assert cli.interrupt() == 0


def test_smtputf8_option(start_cli):
    cli = start_cli("-c", "DebuggingServer", "-u")
    with cli.smtp() as smtp:
        smtp.ehlo("cli.test")
        assert "smtputf8" in smtp.esmtp_features
        assert (
            smtp.sendmail(
                "j\u00f6rg@example.com",
                ["to@example.com"],
                b"Subject: x\r\n\r\nhi",
                mail_options=["SMTPUTF8"],
            )
            == {}
        )
    assert cli.interrupt() == 0
    assert "mail options: ['SMTPUTF8'" in cli.stdout


def test_debug_option(start_cli):
    cli = start_cli("-c", "DebuggingServer", "-d")
    with cli.smtp() as smtp:
        smtp.noop()
    assert cli.interrupt() == 0
    assert "DebuggingServer started at " in cli.stderr
    assert "Peer: ('127.0.0.1', " in cli.stderr
    assert "Data: b'noop'" in cli.stderr


def test_no_debug_output_by_default(start_cli):
    cli = start_cli("-c", "DebuggingServer")
    with cli.smtp() as smtp:
        smtp.noop()
    assert cli.interrupt() == 0
    assert "Peer:" not in cli.stderr
    assert "Data:" not in cli.stderr


def test_dotted_class(start_cli, tmp_path):
    (tmp_path / "cli_custom_server.py").write_text(
        textwrap.dedent("""\
        import smtpd_compat

        class Recorder(smtpd_compat.SMTPServer):
            def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
                print("CUSTOM", mailfrom, rcpttos, repr(data), flush=True)
                return "250 Stored by Recorder"
        """)
    )
    cli = start_cli("-c", "cli_custom_server.Recorder", extra_paths=[str(tmp_path)])
    with cli.smtp() as smtp:
        smtp.ehlo("cli.test")
        smtp.mail("a@example.com")
        smtp.rcpt("b@example.com")
        assert smtp.data(b"one line") == (250, b"Stored by Recorder")
    assert cli.interrupt() == 0
    assert "CUSTOM a@example.com ['b@example.com'] b'one line'" in cli.stdout


@requires_ipv6
def test_ipv6_local_spec(start_cli):
    """Extension over 3.11 (which could not parse [host]:port)."""
    cli = start_cli("-c", "DebuggingServer", host="::1")
    with cli.smtp() as smtp:
        assert smtp.noop()[0] == 250
        assert smtp.sendmail("a@example.com", ["b@example.com"], b"ipv6 body") == {}
    assert cli.interrupt() == 0
    assert "b'ipv6 body'" in cli.stdout
    assert "b'X-Peer: ::1'" not in cli.stdout  # no blank line, no header


def test_port_in_use(tmp_path):
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        result = run_cli("-n", "-c", "DebuggingServer", "127.0.0.1:%d" % port)
    finally:
        blocker.close()
    assert result.returncode != 0


# --- setuid -------------------------------------------------------------------------


def _nobody_exists():
    try:
        import pwd

        pwd.getpwnam("nobody")
    except (ImportError, KeyError):
        return False
    return True


requires_nobody = pytest.mark.skipif(not _nobody_exists(), reason="no user 'nobody'")


@requires_nobody
def test_setuid_failure_subprocess(tmp_path):
    wrapper = tmp_path / "run_without_setuid.py"
    wrapper.write_text(
        textwrap.dedent("""\
        import os, runpy, sys

        def refuse(uid):
            raise PermissionError(1, "Operation not permitted")

        os.setuid = refuse
        sys.argv = ["smtpd_compat", "-c", "DebuggingServer", "127.0.0.1:0"]
        runpy.run_module("smtpd_compat", run_name="__main__", alter_sys=True)
        """)
    )
    result = subprocess.run(
        [sys.executable, str(wrapper)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        text=True,
        env=subprocess_env(),
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr == SETUID_ERROR + "\n"


@requires_nobody
@pytest.mark.skipif(not hasattr(smtpd_compat, "_main"), reason="no _main entry point")
def test_setuid_failure_in_process(monkeypatch, capsys):
    calls = []

    def refuse(uid):
        calls.append(uid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setuid", refuse)
    monkeypatch.setattr(
        sys, "argv", ["smtpd_compat", "-c", "DebuggingServer", "127.0.0.1:0"]
    )
    before = set(asyncore.socket_map)
    try:
        with pytest.raises(SystemExit) as info:
            smtpd_compat._main()
    finally:
        for fd in set(asyncore.socket_map) - before:
            asyncore.socket_map[fd].close()
    assert info.value.code == 1
    assert len(calls) == 1
    assert capsys.readouterr().err == SETUID_ERROR + "\n"
