"""The literal blocks of README.rst, run as tests so that they cannot rot.

Every literal block in README.rst is preceded by an rst comment (invisible
once rendered) saying whether and how it is tested::

    .. readme-test: KIND NAME
    .. readme-test: not-run (REASON)

The comment applies to the next literal block; it stands before the
paragraph that introduces the block, or before a lone ``::``.  The kinds:

``install``
    Shell commands that create a virtual environment and install the
    package.  Run with bash in a copy of the project, with ``HOME`` set to
    a scratch directory (so ``~/.venvs/...`` lands there); the ``cli``
    block named ``quickstart-server`` then runs with that environment's
    Python.  Needs the package index: marked slow.
``cli``
    One ``... -m smtpd_compat ...`` (or ``-m smtpd``) command line.  It is
    run with the Python under test, its local address replaced by
    ``127.0.0.1:0`` (the child reports the port it got) and its remote
    address, if any, by a local capturing server; one message is sent
    through it and must come out (printed, or relayed to the local server).
``client``
    A shell command that sends a message to ``localhost:8025``; run against
    a capturing server, with 8025 replaced by that server's port and a
    leading ``python3`` by the Python under test.
``python``
    Python code, executed after the setup code of ``EXAMPLES[NAME]`` and
    checked by its ``check`` function.
``unittest``
    A module of ``unittest`` test cases, executed after the setup code;
    every test in it must pass.
``pytest``
    A pytest test module, run by pytest in a child process after the setup
    code (and, with ``prelude_previous``, after the literal block before
    it); the outcome must be ``EXAMPLES[NAME].outcome``.
``pytest-ini``
    A ``[pytest]`` section, used as the ini file of a pytest run of the
    setup code, which holds tests checking that the settings apply.

``not-run`` blocks are shown to the reader only; the reason says why.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import smtplib
import subprocess
import sys
import textwrap
import threading
import unittest
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pytest
from conftest import TIMEOUT, subprocess_env, swaks_path

from smtpd_compat.capture import CapturingController

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).resolve().parent.parent
README = PROJECT / "README.rst"
PLUGIN = "smtpd_compat.pytest_plugin"

KINDS = {"install", "cli", "client", "python", "unittest", "pytest", "pytest-ini"}
# Kinds whose blocks need an entry in EXAMPLES.
KINDS_WITH_SUPPORT = {"python", "unittest", "pytest", "pytest-ini"}

MARKER = re.compile(r"^\.\. readme-test: (?P<spec>.*\S)\s*$")
NOT_RUN = re.compile(r"^not-run \(.+\)$")
RUN = re.compile(r"^(?P<kind>[a-z-]+) (?P<name>[a-z0-9-]+)$")

# The message every runnable example sends.
SENDER = "me@example.com"
RECIPIENT = "you@example.com"
BODY_LINE = "sent by test_readme_examples"


class Block(NamedTuple):
    line: int  # 1-based number of the block's first line in README.rst
    text: str  # the block, dedented
    spec: str | None  # what follows "readme-test:", None if unmarked

    @property
    def kind(self) -> str:
        assert self.spec is not None
        return self.spec.split(" ", 1)[0]

    @property
    def name(self) -> str:
        match = RUN.match(self.spec or "")
        assert match, self.spec
        return match.group("name")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_readme(text: str):
    """All literal blocks, with their markers, and the markers left over.

    A literal block follows a line ending in ``::`` (not a directive or
    comment line) after blank lines, and holds the lines indented deeper
    than that line.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending = None  # (line number, spec) of the marker not yet used
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        marker = MARKER.match(line)
        if marker:
            if pending is not None:
                problems.append("line %d: marker without a block" % pending[0])
            pending = (index + 1, marker.group("spec"))
        elif stripped.endswith("::") and not stripped.startswith(".."):
            start = index + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            end = start
            while end < len(lines) and (
                not lines[end].strip() or _indent(lines[end]) > _indent(line)
            ):
                end += 1
            if end > start:
                body = textwrap.dedent("\n".join(lines[start:end])).strip("\n")
                spec = pending[1] if pending else None
                blocks.append(Block(start + 1, body + "\n", spec))
                pending = None
                index = end
                continue
        index += 1
    if pending is not None:
        problems.append("line %d: marker without a block" % pending[0])
    return blocks, problems


BLOCKS, MARKER_PROBLEMS = parse_readme(README.read_text(encoding="utf-8"))


def blocks_of(kind: str) -> list[Any]:
    return [
        pytest.param(block, id=block.name)
        for block in BLOCKS
        if block.spec and block.kind == kind
    ]


def block_named(name: str) -> Block:
    [block] = [b for b in BLOCKS if b.spec and RUN.match(b.spec) and b.name == name]
    return block


def block_before(block: Block) -> Block:
    return BLOCKS[BLOCKS.index(block) - 1]


def message_text() -> str:
    return "Subject: readme\r\n\r\n%s\r\n" % BODY_LINE


def send_one_message(host: str, port: int) -> None:
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
        client.sendmail(SENDER, [RECIPIENT], message_text())


# -- what the examples need besides their own text ---------------------------


class Example(NamedTuple):
    setup: str = ""  # Python source run (or put in the module) first
    check: Callable[[dict[str, Any]], None] | None = None  # kind python
    outcome: dict[str, int] | None = None  # kinds pytest, pytest-ini
    prelude_previous: bool = False  # pytest: the block before comes first
    tests: int = 0  # kind unittest: how many tests the block holds


def check_controller_factory(namespace: dict[str, Any]) -> None:
    controller = namespace["controller"]
    with controller:
        send_one_message(controller.host, controller.port)
        server = controller.server
        assert server.database == "db.sqlite"
        assert [data.decode() for data in server.stored] == [
            message_text().replace("\r\n", "\n").rstrip("\n")
        ]


SENDING_HELPERS = """
import smtplib
from email.message import EmailMessage


def _send(to, subject, content, host, port):
    message = EmailMessage()
    message["From"] = "noreply@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(content)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.send_message(message)


def send_newsletter(smtp_host, smtp_port):
    for address in ("ann@example.com", "bob@example.com"):
        _send(address, "News of the week", "Hello.", smtp_host, smtp_port)


def request_password_reset(address, smtp):
    _send(address, "Your password", "Follow the link to reset it.", *smtp)


def signup(address, smtp_host, smtp_port):
    _send(address, "Welcome", "Glad to have you.", smtp_host, smtp_port)
"""


def check_tls_starttls_login(namespace: dict[str, Any]) -> None:
    mail = namespace["mail"]
    assert (mail.mail_from, mail.rcpt_tos) == ("ann@example.com", ("bob@example.com",))
    assert namespace["sink"].ca_file is None  # removed by stop()


def check_tls_smtps(namespace: dict[str, Any]) -> None:
    mail = namespace["mail"]
    assert mail.tls in ("TLSv1.2", "TLSv1.3")
    assert mail.auth_login is None


def check_tls_from_aiosmtpd(namespace: dict[str, Any]) -> None:
    controller = namespace["controller"]
    with controller:
        with smtplib.SMTP("localhost", controller.port, timeout=TIMEOUT) as client:
            client.starttls(context=controller.client_context())
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("ann", "wrong")
            client.login("ann", "s3cret")
            client.sendmail(SENDER, [RECIPIENT], message_text())
        assert controller.server.mails == [
            ("ann", message_text().replace("\r\n", "\n").rstrip("\n").encode())
        ]


def check_tls_aiosmtpd_before(namespace: dict[str, Any]) -> None:
    """The aiosmtpd code is right about aiosmtpd (checked without a port)."""
    import asyncio

    # Only this example needs aiosmtpd (a test dependency, see tox.ini).
    from aiosmtpd.smtp import Envelope, LoginPassword, Session

    controller = namespace["controller"]
    check_password = namespace["check_password"]
    assert controller.SMTP_kwargs["tls_context"] is namespace["server_context"]
    assert controller.SMTP_kwargs["authenticator"] is check_password
    assert controller.SMTP_kwargs["auth_required"] is True
    good = LoginPassword(b"ann", b"s3cret")
    assert check_password(None, None, None, "PLAIN", good).success
    bad = LoginPassword(b"ann", b"wrong")
    assert not check_password(None, None, None, "PLAIN", bad).success
    session, envelope = Session(loop=None), Envelope()
    session.auth_data = good
    envelope.content = b"Subject: hi\r\n\r\n"
    handler = controller.handler
    assert asyncio.run(handler.handle_DATA(None, session, envelope)) == "250 OK"
    assert handler.mails == [(b"ann", b"Subject: hi\r\n\r\n")]


SENDING_WITH_LOGIN = """
import smtplib


def send_daily_report(host, port, user, password, ssl_context):
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.starttls(context=ssl_context)
        client.login(user, password)
        client.sendmail(
            "reports@example.com", ["boss@example.com"], "Subject: daily\\r\\n\\r\\nAll well."
        )
"""

EXAMPLES: dict[str, Example] = {
    "controller-factory": Example(
        setup="""
from smtpd_compat import SMTPServer
from smtpd_compat.controller import Controller


class MyServer(SMTPServer):
    def __init__(self, localaddr, database, map=None):
        super().__init__(localaddr, None, map=map)
        self.database = database
        self.stored = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.stored.append(data)
""",
        check=check_controller_factory,
    ),
    "newsletter": Example(setup=SENDING_HELPERS, tests=1),
    "password-reset": Example(setup=SENDING_HELPERS, outcome={"passed": 2}),
    "ini-defaults": Example(
        setup="""
def test_the_ini_settings_apply(smtpd_server):
    assert smtpd_server.host == "127.0.0.1"
    assert smtpd_server.server._decode_data is True
    assert smtpd_server.server.enable_SMTPUTF8 is False
    assert smtpd_server.server.data_size_limit == 1048576
""",
        outcome={"passed": 1},
    ),
    "sink-controller": Example(
        setup=SENDING_HELPERS, outcome={"passed": 1}, prelude_previous=True
    ),
    "tls-starttls-login": Example(check=check_tls_starttls_login),
    "tls-smtps": Example(check=check_tls_smtps),
    "tls-fixture": Example(setup=SENDING_WITH_LOGIN, outcome={"passed": 1}),
    "tls-ini": Example(
        setup="""
import smtplib

import pytest


def test_the_ini_settings_apply(smtpd_server):
    assert smtpd_server.tls_mode == "starttls"
    with smtplib.SMTP("localhost", smtpd_server.port, timeout=5) as client:
        client.starttls(context=smtpd_server.client_context())
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@example.com", ["b@example.com"], "x")
        client.login("bob", "hunter2")
        client.sendmail("a@example.com", ["b@example.com"], "x")
    [mail] = smtpd_server.wait_for(1)
    assert mail.auth_login == "bob"


@pytest.mark.smtpd_server(smtps=True)
def test_a_marker_settles_the_mode(smtpd_server):
    assert smtpd_server.tls_mode == "smtps"
    with smtplib.SMTP_SSL(
        "localhost", smtpd_server.port, context=smtpd_server.client_context(),
        timeout=5,
    ) as client:
        client.login("ann", "s3cret")
""",
        outcome={"passed": 2},
    ),
    "tls-aiosmtpd-before": Example(
        setup="""
import ssl

server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
""",
        check=check_tls_aiosmtpd_before,
    ),
    "tls-from-aiosmtpd": Example(check=check_tls_from_aiosmtpd),
}


# -- the markers ---------------------------------------------------------------


def test_every_literal_block_is_marked():
    unmarked = [
        "line %d: %s" % (block.line, block.text.splitlines()[0])
        for block in BLOCKS
        if block.spec is None
    ]
    assert unmarked == [], "literal blocks without a readme-test marker"
    assert MARKER_PROBLEMS == []


def test_markers_are_well_formed():
    names = []
    for block in BLOCKS:
        if block.spec is None or NOT_RUN.match(block.spec):
            continue
        match = RUN.match(block.spec)
        assert match, "line %d: bad marker %r" % (block.line, block.spec)
        assert match.group("kind") in KINDS, block.spec
        names.append(match.group("name"))
    assert len(names) == len(set(names)), "example names must be unique"
    with_support = {b.name for b in BLOCKS if b.spec and b.kind in KINDS_WITH_SUPPORT}
    assert with_support == set(EXAMPLES)


def test_the_parser_finds_blocks_and_markers():
    text = textwrap.dedent(
        """\
        .. readme-test: cli one

        Start it::

            python -m smtpd_compat -n

        .. list-table::

        Plain text:

        .. readme-test: not-run (reason)

        ::

          a
            b

          c
        after
        Unmarked::

            x
        .. readme-test: python two
        """
    )
    blocks, problems = parse_readme(text)
    assert blocks == [
        Block(5, "python -m smtpd_compat -n\n", "cli one"),
        Block(15, "a\n  b\n\nc\n", "not-run (reason)"),
        Block(22, "x\n", None),
    ]
    assert problems == ["line 23: marker without a block"]


# -- command lines ---------------------------------------------------------------

# The child reports the port its server got, then runs the command line.
PORT_REPORTER = """
import runpy
import sys

import asyncore  # the loop both smtpd and smtpd_compat use

real_loop = asyncore.loop


def loop_reporting_the_port(*args, **kwargs):
    asyncore.loop = real_loop
    for channel in list(asyncore.socket_map.values()):
        if channel.accepting:
            print("PORT", channel.socket.getsockname()[1], flush=True)
    return real_loop(*args, **kwargs)


asyncore.loop = loop_reporting_the_port
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""

OPTIONS_WITH_VALUES = {"-c", "--class", "-s", "--size", "-t", "--idle-timeout"}


def split_command_line(text: str):
    """(interpreter, module, options, addresses) of a ``-m`` command line."""
    [line] = text.strip().splitlines()
    words = shlex.split(line)
    at = words.index("-m")
    interpreter, module, rest = words[:at], words[at + 1], words[at + 2 :]
    options: list[str] = []
    addresses: list[str] = []
    words_left = iter(rest)
    for word in words_left:
        if word.startswith("-"):
            options.append(word)
            if word in OPTIONS_WITH_VALUES:
                options.append(next(words_left))
        else:
            addresses.append(word)
    return interpreter, module, options, addresses


def server_class(options: list[str]) -> str:
    for index, word in enumerate(options):
        if word in ("-c", "--class"):
            return options[index + 1]
    return "PureProxy"


class LineCollector(threading.Thread):
    """Reads a child's stdout, line by line; notes the reported port."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.port: int | None = None
        self.port_known = threading.Event()

    def run(self):
        for line in self.stream:
            self.lines.append(line)
            if self.port is None and line.startswith("PORT "):
                self.port = int(line.split()[1])
                self.port_known.set()
        self.port_known.set()  # EOF: no port will come


def run_cli_example(block: Block, python: str, env: dict[str, str], cwd: Path):
    interpreter, module, options, addresses = split_command_line(block.text)
    assert len(interpreter) == 1, interpreter
    assert module in ("smtpd_compat", "smtpd")
    assert "-n" in options, "README command lines must show -n"
    assert 1 <= len(addresses) <= 2, addresses
    kind = server_class(options)
    sink = None
    if kind == "PureProxy":
        # Never relay anywhere but to a capturing server on this machine.
        assert len(addresses) == 2, "a PureProxy example must name its remote"
        sink = CapturingController().start()
        addresses[1] = "127.0.0.1:%d" % sink.port
    else:
        assert kind == "DebuggingServer", "no check written for %s" % kind
    addresses[0] = "127.0.0.1:0"
    child = subprocess.Popen(
        [python, "-c", PORT_REPORTER, module, *options, *addresses],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=env,
        cwd=str(cwd),
    )
    collector = LineCollector(child.stdout)
    collector.start()
    try:
        assert collector.port_known.wait(TIMEOUT * 3)
        assert collector.port, "no port reported: %s" % child.stderr.read()
        send_one_message("127.0.0.1", collector.port)
        if sink is not None:
            [mail] = sink.wait_for(1, timeout=TIMEOUT)
            assert (mail.mail_from, mail.rcpt_tos) == (SENDER, (RECIPIENT,))
            # PureProxy adds X-Peer after the headers it got.
            expected = "Subject: readme\nX-Peer: 127.0.0.1\n\n" + BODY_LINE
            assert mail.data == expected.encode()
        child.send_signal(signal.SIGINT)
        assert child.wait(TIMEOUT) == 0, child.stderr.read()
        collector.join(TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(TIMEOUT)
        child.stdout.close()
        child.stderr.close()
        if sink is not None:
            sink.stop()
    output = "".join(collector.lines)
    if kind == "DebuggingServer":
        assert "---------- MESSAGE FOLLOWS ----------\n" in output
        assert "b'%s'\n" % BODY_LINE in output
        assert output.endswith("------------ END MESSAGE ------------\n")


@pytest.mark.parametrize("block", blocks_of("cli"))
def test_cli_example(block, tmp_path):
    run_cli_example(block, sys.executable, subprocess_env(), tmp_path)


@pytest.mark.parametrize("block", blocks_of("client"))
def test_client_example(block):
    words = shlex.split(block.text.strip())
    if words[0] == "python3":
        words[0] = sys.executable
    elif words[0] == "swaks":
        words[0] = swaks_path()
    else:
        pytest.fail("no way to run %r" % words[0])
    with CapturingController() as sink:
        words = [word.replace("8025", str(sink.port)) for word in words]
        child = subprocess.run(
            words,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT * 6,
            check=False,
            env=subprocess_env(),
        )
        assert child.returncode == 0, child.stdout + child.stderr
        [mail] = sink.wait_for(1, timeout=TIMEOUT)
    assert (mail.mail_from, mail.rcpt_tos) == (SENDER, (RECIPIENT,))


def test_command_line_options_match_the_help():
    """The option list under "The command line" is that of ``--help``."""
    text = README.read_text(encoding="utf-8")
    section = text.split("The command line\n", 1)[1].split("\n~~~", 1)[0]
    option = re.compile(r"^ *(-\w)(?: \S+)?, (--[\w-]+)", re.MULTILINE)
    listed = option.findall(section)
    child = subprocess.run(
        [sys.executable, "-m", "smtpd_compat", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
        env=subprocess_env(),
    )
    assert child.returncode == 0, child.stderr
    # Like 3.11's smtpd, the help goes to stderr.
    helped = option.findall(child.stdout + child.stderr)
    assert len(listed) == 8
    assert listed == helped


@pytest.mark.slow
def test_install_example(tmp_path):
    """The quick start, as a newcomer runs it: venv, pip install ., server."""
    install = block_named("quickstart-install")
    server = block_named("quickstart-server")
    project = tmp_path / "project"
    # A copy, so that the build leaves nothing in the checkout.
    shutil.copytree(
        str(PROJECT),
        str(project),
        ignore=shutil.ignore_patterns(
            ".*", "build", "dist", "*.egg-info", "__pycache__", "benchmarks"
        ),
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        and not key.startswith("COVERAGE_")
    }
    env["HOME"] = str(home)
    installing = subprocess.run(
        ["bash", "-e", "-c", install.text],
        cwd=str(project),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installing.returncode == 0, installing.stdout + installing.stderr
    [python], _, _, _ = split_command_line(server.text)
    assert python.startswith("~/")
    python = str(home / python[2:])
    run_cli_example(server, python, env, tmp_path)


# -- Python examples -------------------------------------------------------------


@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_example(block):
    example = EXAMPLES[block.name]
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    # Running the README's code is the point of these tests.
    exec(example.setup, namespace)  # noqa: S102
    exec(block.text, namespace)  # noqa: S102
    assert example.check is not None
    example.check(namespace)


@pytest.mark.parametrize("block", blocks_of("unittest"))
def test_unittest_example(block):
    example = EXAMPLES[block.name]
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    # Running the README's code is the point of these tests.
    exec(example.setup, namespace)  # noqa: S102
    exec(block.text, namespace)  # noqa: S102
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(
        loader.loadTestsFromTestCase(value)
        for value in namespace.values()
        if isinstance(value, type) and issubclass(value, unittest.TestCase)
    )
    result = unittest.TestResult()
    suite.run(result)
    assert result.errors == [] and result.failures == []
    assert result.testsRun == example.tests


def run_pytest(pytester):
    # -p works whether or not pytest also found the plugin's entry point.
    return pytester.runpytest_subprocess(
        "-p", PLUGIN, "-p", "no:cacheprovider", "--strict-markers", timeout=60
    )


@pytest.mark.parametrize("block", blocks_of("pytest"))
def test_pytest_example(block, pytester):
    example = EXAMPLES[block.name]
    parts = [example.setup, block.text]
    if example.prelude_previous:
        parts.insert(0, block_before(block).text)
    pytester.makepyfile(test_example="\n\n".join(parts))
    result = run_pytest(pytester)
    result.assert_outcomes(**example.outcome)


@pytest.mark.parametrize("block", blocks_of("pytest-ini"))
def test_pytest_ini_example(block, pytester):
    example = EXAMPLES[block.name]
    assert block.text.startswith("[pytest]\n")
    pytester.makeini(block.text)
    pytester.makepyfile(test_example=example.setup)
    result = run_pytest(pytester)
    result.assert_outcomes(**example.outcome)


# -- figures -------------------------------------------------------------------


def test_robustness_figures_match_the_tests():
    import test_hostile

    text = " ".join(README.read_text(encoding="utf-8").split())
    sessions = re.search(
        r"(\d+) generated sessions \((\d+) in every run, (\d+) with", text
    )
    assert sessions, "the hostile sessions' counts are gone from README.rst"
    cases = test_hostile.ALL_CASES
    slow = [case for case in cases if case.marks]
    assert [int(count) for count in sessions.groups()] == [
        len(cases),
        len(cases) - len(slow),
        len(slow),
    ]
    boundaries = re.search(r"split at each of its (\d+) byte boundaries", text)
    assert boundaries
    assert int(boundaries.group(1)) == len(test_hostile.VALID_SESSION) - 1
