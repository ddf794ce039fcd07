"""``python -m smtpd_compat``: the command line interface."""

import errno
import os
import select
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import types

import pytest
from conftest import TIMEOUT, requires_ipv6, run_cli, start_cli, subprocess_env

import smtpd_compat
from smtpd_compat import asyncore

VERSION = "Python SMTP proxy version 0.3"
SETUID_ERROR = 'Cannot setuid "nobody"; try running with -n option.'

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals used")


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


@pytest.fixture(name="start_cli")
def start_cli_fixture():
    """Factory: start ``python -m smtpd_compat -n [args] host:0``.

    The server binds a port of the OS's choice (see conftest.start_cli).
    """
    started = []

    def start(*args, host="127.0.0.1", extra_paths=()):
        proc, port = start_cli(
            ["-n", *args],
            host=host,
            env=subprocess_env(extra_paths),
            universal_newlines=True,
        )
        running = RunningCLI(proc, host, port)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


# --- options that exit immediately ----------------------------------------------


@pytest.mark.parametrize("option", ["-V", "--version"])
def test_version(cli, option):
    result = cli(option)
    assert result.returncode == 0
    assert result.stdout == VERSION + "\n"


USAGE_FIRST_LINE = (
    "Usage: python -m smtpd_compat [options]"
    " [localhost:localport [remotehost:remoteport]]\n"
)
#: What the help says about --size: 3.11's help claimed a default of
#: 33554432 bytes that the command line never applied.
SIZE_HELP = (
    "  -s, --size LIMIT    refuse messages larger than LIMIT bytes and announce\n"
    "                      the limit with the SIZE extension (RFC 1870);\n"
    "                      without it, message size is not limited\n"
)


@pytest.fixture(scope="module")
def help_text():
    """What ``-h`` prints on stderr; usage errors print the same first."""
    result = run_cli("-h")
    assert (result.returncode, result.stdout) == (0, "")
    return result.stderr


@pytest.mark.parametrize("option", ["-h", "--help"])
def test_help(cli, option, help_text):
    result = cli(option)
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == help_text
    assert help_text.startswith(USAGE_FIRST_LINE)
    assert help_text.endswith("\n\nVersion: " + VERSION + "\n")
    assert "  -n, --nosetuid      do not switch to the user 'nobody'" in help_text


def test_help_states_the_real_size_default(help_text, start_cli):
    assert SIZE_HELP in help_text
    assert "33554432" not in help_text
    # ... and it is true: without -s no SIZE is announced and no size refused.
    cli = start_cli("-c", "DebuggingServer")
    with cli.smtp() as smtp:
        assert smtp.ehlo("cli.test")[0] == 250
        assert "size" not in smtp.esmtp_features
        assert smtp.mail("a@b", ["SIZE=%d" % (1 << 40)]) == (250, b"OK")
    assert cli.interrupt() == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["-x"], "option -x not recognized"),
        (["-X"], "option -X not recognized"),
        (["--bogus"], "option --bogus not recognized"),
        (["-c"], "option -c requires argument"),
    ],
)
def test_bad_option(cli, args, message, help_text):
    result = cli(*args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == help_text + message + "\n"


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
def test_bad_arguments(cli, args, message, help_text):
    result = cli("-n", *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == help_text + message + "\n"


@pytest.mark.parametrize("value", ["abc", "1.5", "", "-1", "-33554432", "--1"])
def test_invalid_size(cli, value):
    """A negative size too: 3.11 took it, and then refused every message."""
    result = cli("-n", "-s", value, "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Invalid size: %s\n" % value


@pytest.mark.parametrize("value", ["0", "x", "-1", "inf", "nan", ""])
def test_invalid_idle_timeout(cli, value):
    result = cli("-n", "-t", value, "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Invalid timeout: %s\n" % value


# Extensions over 3.11, which ended each of these in a traceback: one line
# on stderr and exit status 1.


@pytest.mark.parametrize(
    "name,message",
    [
        (
            "NoSuchServer",
            (
                "Cannot find server class 'NoSuchServer':"
                " module 'smtpd_compat' has no attribute 'NoSuchServer'"
            ),
        ),
        (
            "no_such_module_xyz.Server",
            (
                "Cannot find server class 'no_such_module_xyz.Server':"
                " No module named 'no_such_module_xyz'"
            ),
        ),
        (
            "os.no_such_server",
            (
                "Cannot find server class 'os.no_such_server':"
                " module 'os' has no attribute 'no_such_server'"
            ),
        ),
        # names that exist but are not classes at all
        ("DEBUGSTREAM", "Not a server class: 'DEBUGSTREAM'"),
        ("COMMASPACE", "Not a server class: 'COMMASPACE'"),
        ("os.path", "Not a server class: 'os.path'"),
    ],
)
def test_class_that_cannot_serve(cli, name, message):
    result = cli("-n", "-c", name, "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == message + "\n"


def test_constructor_value_error(cli):
    """PureProxy refuses SMTPUTF8 (ValueError): a message, not a traceback."""
    result = cli("-n", "-c", "PureProxy", "-u", "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "Cannot start PureProxy on 127.0.0.1:0: PureProxy does not support SMTPUTF8.\n"
    )


@pytest.mark.parametrize("name", ["usage", "Devnull", "smtpd_compat.SMTPChannel"])
def test_callable_that_is_no_server(cli, name):
    """Callables that cannot be built as a server: one line, exit 1."""
    result = cli("-n", "-c", name, "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("Cannot start %s on 127.0.0.1:0: " % name)
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- what the options build (in process) ------------------------------------------


def test_defaults_build_a_pure_proxy_to_port_25(main_in_process):
    run = main_in_process("-n", "127.0.0.1:0")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    [server] = run.servers
    assert type(server) is smtpd_compat.PureProxy
    assert server._localaddr == ("127.0.0.1", 0)
    assert server._remoteaddr == ("localhost", 25)
    assert server.data_size_limit is None
    assert server.enable_SMTPUTF8 is False
    assert server._decode_data is False
    assert server.idle_timeout is None
    assert run.setuid_calls == []
    assert run.loop_calls == [{"timeout": 1.0, "use_poll": hasattr(select, "poll")}]


@pytest.mark.parametrize(
    "args",
    [
        ["-n", "-c", "DebuggingServer", "-s", "1000", "-u", "-t", "2.5"],
        ["--nosetuid", "--class=DebuggingServer", "--size=1000", "--smtputf8"]
        + ["--idle-timeout=2.5"],
    ],
)
def test_options_reach_the_server(main_in_process, args):
    run = main_in_process(*args, "127.0.0.1:0", "relay.example:2525")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    [server] = run.servers
    assert type(server) is smtpd_compat.DebuggingServer
    assert server._remoteaddr == ("relay.example", 2525)
    assert server.data_size_limit == 1000
    assert server.enable_SMTPUTF8 is True
    assert server.idle_timeout == 2.5
    assert run.setuid_calls == []
    assert len(run.loop_calls) == 1


def test_without_n_the_server_becomes_nobody_after_binding(
    main_in_process, monkeypatch
):
    fake_pwd = types.ModuleType("pwd")
    # nobody's uid and gid differ here (Debian gives both 65534)
    fake_pwd.getpwnam = {"nobody": ("nobody", "x", 1111, 2222, "", "/", "")}.get
    monkeypatch.setitem(sys.modules, "pwd", fake_pwd)
    run = main_in_process("-c", "DebuggingServer", "127.0.0.1:0")
    assert run.returncode == 0
    assert run.setuid_calls == [1111]
    assert len(run.servers) == 1
    assert len(run.loop_calls) == 1


def test_debug_option_sends_debugstream_to_stderr(main_in_process):
    run = main_in_process("-n", "-d", "-c", "DebuggingServer", "127.0.0.1:0")
    assert run.returncode == 0
    assert run.stderr.startswith("DebuggingServer started at ")
    assert "\tLocal addr: ('127.0.0.1', 0)\n\tRemote addr:('localhost', 25)\n" in (
        run.stderr
    )
    assert smtpd_compat.DEBUGSTREAM is sys.stderr


def test_long_debug_option(main_in_process):
    run = main_in_process(
        "--nosetuid", "--debug", "-c", "DebuggingServer", "127.0.0.1:0"
    )
    assert run.returncode == 0
    assert run.stderr.startswith("DebuggingServer started at ")
    assert smtpd_compat.DEBUGSTREAM is sys.stderr


@pytest.mark.parametrize(
    "args,size_limit,idle_timeout",
    [(["-s", "0"], 0, None), (["-t", "0.5"], None, 0.5), (["-t", "1"], None, 1.0)],
)
def test_smallest_values_accepted(main_in_process, args, size_limit, idle_timeout):
    run = main_in_process("-n", "-c", "DebuggingServer", *args, "127.0.0.1:0")
    assert (run.returncode, run.stderr) == (0, "")
    [server] = run.servers
    assert server.data_size_limit == size_limit
    assert server.idle_timeout == idle_timeout


def test_options_parsed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["smtpd_compat"])
    options = smtpd_compat.parseargs()
    assert options.setuid is True
    assert options.classname == "PureProxy"
    assert (options.localhost, options.localport) == ("localhost", 8025)
    assert (options.remotehost, options.remoteport) == ("localhost", 25)
    monkeypatch.setattr(sys, "argv", ["smtpd_compat", "-n"])
    assert smtpd_compat.parseargs().setuid is False


def test_without_pwd_module_asks_for_n(main_in_process, monkeypatch):
    monkeypatch.setitem(sys.modules, "pwd", None)  # import fails
    run = main_in_process("-c", "DebuggingServer", "127.0.0.1:0")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == 'Cannot import module "pwd"; try running with -n option.\n'
    assert run.setuid_calls == []


def test_no_debug_output_without_d(main_in_process):
    run = main_in_process("-n", "-c", "DebuggingServer", "127.0.0.1:0")
    assert run.stderr == ""
    assert isinstance(smtpd_compat.DEBUGSTREAM, smtpd_compat.Devnull)


def test_ctrl_c_ends_the_loop_quietly(main_in_process):
    run = main_in_process(
        "-n", "-c", "DebuggingServer", "127.0.0.1:0", loop_raises=KeyboardInterrupt
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert len(run.loop_calls) == 1


def test_other_loop_errors_propagate(main_in_process):
    with pytest.raises(ZeroDivisionError):
        main_in_process(
            "-n", "-c", "DebuggingServer", "127.0.0.1:0", loop_raises=ZeroDivisionError
        )


def test_dotted_class_in_process(main_in_process):
    run = main_in_process("-n", "-c", "smtpd_compat.DebuggingServer", "127.0.0.1:0")
    assert run.returncode == 0
    assert [type(server) for server in run.servers] == [smtpd_compat.DebuggingServer]


class _FakeResource:
    """Stands in for the resource module: limits given, setrlimit recorded."""

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard, refuse=None):
        self.limits = (soft, hard)
        self.refuse = refuse
        self.set_calls = []

    def getrlimit(self, which):
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which, limits):
        assert which == self.RLIMIT_NOFILE
        self.set_calls.append(limits)
        if self.refuse is not None:
            raise self.refuse


@pytest.mark.parametrize(
    "soft,hard,expected",
    [
        (1024, 4096, [(4096, 4096)]),
        (4096, 4096, []),
        (1024, -1, [(1 << 16, 1 << 16)]),  # no hard limit: 65536
        (100000, -1, []),  # soft already above 65536
        (-1, -1, []),
    ],
)
def test_open_file_limit_is_raised_to_the_hard_limit(monkeypatch, soft, hard, expected):
    fake = _FakeResource(soft, hard)
    monkeypatch.setitem(sys.modules, "resource", fake)
    smtpd_compat._raise_open_file_limit()
    assert fake.set_calls == expected


@pytest.mark.parametrize("error", [OSError(1, "refused"), ValueError("too high")])
def test_open_file_limit_refusal_is_ignored(monkeypatch, error):
    fake = _FakeResource(1024, 4096, refuse=error)
    monkeypatch.setitem(sys.modules, "resource", fake)
    smtpd_compat._raise_open_file_limit()
    assert fake.set_calls == [(4096, 4096)]


def test_open_file_limit_without_resource_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # import fails
    assert smtpd_compat._raise_open_file_limit() is None


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


def test_port_in_use(cli):
    """Extension over 3.11 (a traceback): one line, exit status 1."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        result = cli("-n", "-c", "DebuggingServer", "127.0.0.1:%d" % port)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Cannot start DebuggingServer on 127.0.0.1:%d: %s\n" % (
        port,
        OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)),
    )


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
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == SETUID_ERROR + "\n"


def test_no_pwd_module(tmp_path):
    """Where ``pwd`` cannot be imported (Windows), only -n works."""
    wrapper = tmp_path / "run_without_pwd.py"
    wrapper.write_text(
        textwrap.dedent("""\
        import runpy, sys

        sys.modules["pwd"] = None  # makes `import pwd` raise ImportError
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
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == 'Cannot import module "pwd"; try running with -n option.\n'


@requires_nobody
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
