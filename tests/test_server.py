"""SMTPServer construction, channel creation, module globals, DEBUGSTREAM."""

import errno
import io
import os
import re
import select
import smtplib
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from email.message import EmailMessage

import pytest
from conftest import (
    FQDN,
    GREETING,
    TIMEOUT,
    RecordingServer,
    data_reply_ok,
    do_transaction,
    pump,
    requires_ipv6,
    server_address,
    subprocess_env,
    wait_for,
)

import smtpd_compat
from smtpd_compat import asynchat, asyncore

OK = b"250 OK\r\n"


# --- module globals -------------------------------------------------------------


def test_all():
    assert {"SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy"} <= set(
        smtpd_compat.__all__
    )
    for name in smtpd_compat.__all__:
        assert hasattr(smtpd_compat, name), name


def test_constants():
    assert smtpd_compat.__version__ == "Python SMTP proxy version 0.3"
    assert smtpd_compat.DATA_SIZE_DEFAULT == 33554432
    assert smtpd_compat.NEWLINE == "\n"
    assert smtpd_compat.COMMASPACE == ", "


def test_devnull():
    sink = smtpd_compat.Devnull()
    assert sink.write("anything") is None
    assert sink.flush() is None
    assert isinstance(smtpd_compat.DEBUGSTREAM, smtpd_compat.Devnull)


def test_asyncore_is_the_importable_one():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import asyncore as imported
    assert smtpd_compat.asyncore is imported


@pytest.mark.parametrize(
    "modules", ["smtpd_compat", "smtpd_compat, smtpd_compat.asynchat, asyncore"]
)
def test_import_warns_nothing(modules):
    """No DeprecationWarning leaks, even where the stdlib asyncore warns."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import " + modules],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_asynchat_builds_on_asyncore():
    assert issubclass(asynchat.async_chat, asyncore.dispatcher)
    assert issubclass(smtpd_compat.SMTPChannel, asynchat.async_chat)
    assert issubclass(smtpd_compat.SMTPServer, asyncore.dispatcher)
    assert issubclass(smtpd_compat.DebuggingServer, smtpd_compat.SMTPServer)
    assert issubclass(smtpd_compat.PureProxy, smtpd_compat.SMTPServer)
    assert smtpd_compat.SMTPServer.channel_class is smtpd_compat.SMTPChannel


# --- construction ---------------------------------------------------------------


def test_bind_ipv4():
    sock_map = {}
    server = RecordingServer(("127.0.0.1", 0), ("remote.example", 25), map=sock_map)
    try:
        assert server.socket.family == socket.AF_INET
        assert server_address(server)[0] == "127.0.0.1"
        assert server_address(server)[1] != 0
        assert server._localaddr == ("127.0.0.1", 0)
        assert server._remoteaddr == ("remote.example", 25)
        assert list(sock_map.values()) == [server]
        assert server.accepting
        assert server.data_size_limit == smtpd_compat.DATA_SIZE_DEFAULT
        assert server.enable_SMTPUTF8 is False
        assert server._decode_data is False
    finally:
        server.close()
    assert sock_map == {}


@requires_ipv6
def test_bind_ipv6(serve, connect):
    server = serve(host="::1")
    assert server.socket.family == socket.AF_INET6
    assert server._localaddr == ("::1", 0)
    client = connect(server)
    assert client.greeting == GREETING
    assert do_transaction(client) == OK
    assert server.deliveries[0].peer[0] == "::1"


def test_bind_failure_raises():
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        sock_map = {}
        with pytest.raises(OSError):
            RecordingServer(("127.0.0.1", port), None, map=sock_map)
        assert sock_map == {}
    finally:
        blocker.close()


def test_options_stored():
    server = RecordingServer(("127.0.0.1", 0), None, 1000, {}, True, False)
    try:
        assert server.data_size_limit == 1000
        assert server.enable_SMTPUTF8 is True
    finally:
        server.close()


def test_base_process_message_not_implemented():
    server = smtpd_compat.SMTPServer(("127.0.0.1", 0), None, map={})
    try:
        with pytest.raises(NotImplementedError):
            server.process_message(("127.0.0.1", 1), "a@b", ["c@d"], b"data")
    finally:
        server.close()


def test_pure_proxy_rejects_smtputf8():
    with pytest.raises(ValueError):
        smtpd_compat.PureProxy(
            ("127.0.0.1", 0), ("127.0.0.1", 25), map={}, enable_SMTPUTF8=True
        )


# --- errors while accepting ------------------------------------------------------


class AcceptTroubleServer(RecordingServer):
    """accept() fails with ``errors`` first; records the calls and reports."""

    errors = ()

    def __init__(self, *args, **kwargs):
        self.errors = list(self.errors)
        self.accept_calls = []
        self.logged = []
        self.handled = []
        RecordingServer.__init__(self, *args, **kwargs)

    def accept(self):
        self.accept_calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return RecordingServer.accept(self)

    def handle_error(self):
        self.handled.append(sys.exc_info()[1])
        RecordingServer.handle_error(self)

    def log_info(self, message, type="info"):
        self.logged.append((type, message))


def os_error(code):
    return OSError(code, os.strerror(code))


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize(
    "code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM]
)
def test_out_of_resources_pauses_accepting(serve, connect, use_poll, code):
    """No descriptor for a new connection: wait a little, then take it.

    Asking again at once would fail again and spin; the client waits in
    the backlog meanwhile and is served once accept() works again.
    """

    class Starved(AcceptTroubleServer):
        errors = [os_error(code)]

    server = serve(Starved, use_poll=use_poll)
    client = connect(server)  # the greeting comes after the pause
    assert client.greeting == GREETING
    assert do_transaction(client) == OK
    first, second = server.accept_calls[:2]
    assert second - first >= 0.1
    assert server.logged == [
        ("warning", "cannot accept connections: %s" % os_error(code))
    ]
    assert server.handled == []
    assert server.accepting and server._map[server._fileno] is server


class FailingAccept(AcceptTroubleServer):
    """accept() fails once with an error that is not about resources."""

    errors = [os_error(errno.EPERM)]

    def log_info(self, message, type="info"):
        RecordingServer.log_info(self, message, type)  # asyncore's: print()


def test_error_while_accepting_keeps_the_server_listening(serve, connect, capsys):
    """asyncore's handle_error() closed the listener: 3.11 stopped for good."""
    server = serve(FailingAccept)
    first = socket.create_connection(server_address(server), timeout=TIMEOUT)
    try:
        assert wait_for(lambda: server.handled)
    finally:
        first.close()
    assert [type(exc) for exc in server.handled] == [PermissionError]
    client = connect(server)
    assert client.greeting == GREETING
    assert do_transaction(client) == OK
    assert server.accepting and server._map[server._fileno] is server
    report = capsys.readouterr().out
    assert re.match(
        r"error: uncaptured python exception, closing channel"
        r" <test_server\.FailingAccept listening 127\.0\.0\.1:0 at 0x[0-9a-f]+>"
        r" \(<class 'PermissionError'>:\[Errno %d\] %s \[[^]]+\](?: \[[^]]+\])*\)\n\Z"
        % (errno.EPERM, re.escape(os.strerror(errno.EPERM))),
        report,
    ), report


EMFILE_SERVER = textwrap.dedent(
    """
    import os, resource, sys
    from smtpd_compat import SMTPServer, asyncore

    class Server(SMTPServer):
        def process_message(self, *args, **kwargs):
            pass

        def log_info(self, message, type="info"):
            # asyncore leaves out warnings; this test wants to see them
            print("%s: %s" % (type, message), flush=True)

    server = Server(("127.0.0.1", 0), None)
    # Room for a few connections only: accept() then fails with EMFILE.
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 4, hard))
    print(server.socket.getsockname()[1], flush=True)
    asyncore.loop(timeout=0.05, use_poll=True)
    """
)


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)"
)
def test_real_emfile_pauses_and_recovers(tmp_path):
    """A server out of file descriptors keeps its clients waiting, not spinning."""
    script = tmp_path / "emfile_server.py"
    script.write_text(EMFILE_SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    clients = []
    try:
        assert select.select([proc.stdout], [], [], 4 * TIMEOUT)[0]
        address = ("127.0.0.1", int(proc.stdout.readline()))
        warning = b"warning: cannot accept connections: %s\n" % str(
            os_error(errno.EMFILE)
        ).encode("ascii")
        # Connect until the server runs out: a client left without a greeting.
        while True:
            assert len(clients) < 20, "the server never ran out of descriptors"
            client = socket.create_connection(address, timeout=TIMEOUT)
            clients.append(client)
            ready = select.select([client, proc.stdout], [], [], TIMEOUT)[0]
            assert ready, "neither a greeting nor a warning"
            if proc.stdout in ready:
                assert proc.stdout.readline() == warning
                break
            assert client.recv(1024).startswith(b"220 ")
        assert len(clients) >= 2
        waiting = clients[-1]
        out_since = time.monotonic()
        clients.pop(0).close()  # frees a descriptor in the server
        assert waiting.recv(1024).startswith(b"220 ")
        elapsed = time.monotonic() - out_since
    finally:
        for client in clients:
            client.close()
        proc.kill()
        out, err = proc.communicate(timeout=TIMEOUT)
    assert err == b""
    # Whatever else was said: the same warning, at most once per pause
    # (0.1 s) - not a loop asking again and again.
    assert set(out.splitlines(keepends=True)) <= {warning}
    assert out.count(warning) <= elapsed / 0.1 + 2


def test_plain_smtp_server_answers_451_then_raises(serve, connect, capsys):
    """SMTPServer has no process_message(): the client is told, then asyncore
    handles the NotImplementedError as in 3.11 (report, close)."""
    server = serve(smtpd_compat.SMTPServer)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    client.send(b"hello\r\n.\r\n")
    assert client.read_until_eof() == (
        b"451 Requested action aborted: local error in processing\r\n"
    )
    assert wait_for(lambda: len(server._map) == 1)
    report = capsys.readouterr().out
    assert re.match(
        r"error: uncaptured python exception, closing channel"
        r" <smtpd_compat\.SMTPChannel connected 127\.0\.0\.1:\d+ at 0x[0-9a-f]+>"
        r" \(<class 'NotImplementedError'>: \[[^]]+\](?: \[[^]]+\])*\)\n\Z",
        report,
    ), report
    other = connect(server)
    assert other.cmd("NOOP") == OK


# --- channels -------------------------------------------------------------------


class TrackingChannel(smtpd_compat.SMTPChannel):
    instances = []

    def __init__(self, *args, **kwargs):
        smtpd_compat.SMTPChannel.__init__(self, *args, **kwargs)
        TrackingChannel.instances.append(self)


class TrackingServer(RecordingServer):
    channel_class = TrackingChannel


@pytest.fixture
def tracking():
    TrackingChannel.instances = []
    yield TrackingChannel.instances
    TrackingChannel.instances = []


def test_channel_class_honoured(serve, connect, tracking):
    server = serve(TrackingServer, data_size_limit=777, decode_data=True)
    client = connect(server)
    assert client.cmd("NOOP") == OK
    [channel] = tracking
    assert isinstance(channel, TrackingChannel)
    assert channel.smtp_server is server
    assert channel.data_size_limit == 777
    assert channel._decode_data is True
    assert channel.enable_SMTPUTF8 is False
    assert channel.peer == client.local_address
    assert channel.addr == client.local_address
    assert channel.conn.getpeername() == client.local_address
    assert server._map[channel.conn.fileno()] is channel


def test_handle_accepted_creates_channel(tracking):
    sock_map = {}
    server = TrackingServer(("127.0.0.1", 0), None, map=sock_map)
    listener = socket.socket()
    client = socket.socket()
    client.settimeout(TIMEOUT)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client.connect(listener.getsockname())
        conn, addr = listener.accept()
        server.handle_accepted(conn, addr)
        [channel] = tracking
        assert channel.conn is conn
        assert channel.addr == addr
        assert sock_map[conn.fileno()] is channel
        pump(sock_map, until=lambda: not channel.writable())
        assert client.recv(1024) == GREETING
    finally:
        client.close()
        listener.close()
        asyncore.close_all(map=sock_map, ignore_all=True)


def test_several_clients_interleaved(server, connect):
    clients = [connect(server) for _ in range(3)]
    for index, client in enumerate(clients):
        assert client.cmd("HELO c%d" % index) == ("250 %s\r\n" % FQDN).encode()
    for index, client in enumerate(clients):
        assert client.cmd("MAIL FROM:<s%d@x>" % index) == OK
    for index, client in enumerate(reversed(clients)):
        assert client.cmd("RCPT TO:<r%d@x>" % index) == OK
    for client in clients:
        assert client.cmd("DATA").startswith(b"354")
    for index, client in enumerate(clients):
        assert data_reply_ok(client, b"m%d" % index) == OK
    got = sorted((d.mailfrom, d.rcpttos, d.data) for d in server.deliveries)
    assert got == [
        ("s0@x", ["r2@x"], b"m0"),
        ("s1@x", ["r1@x"], b"m1"),
        ("s2@x", ["r0@x"], b"m2"),
    ]


def test_closed_connections_leave_the_map(serve, connect):
    server = serve()
    for _ in range(3):
        client = connect(server)
        assert client.cmd("QUIT") == b"221 Bye\r\n"
        assert client.read_until_eof() == b""
        client.close()
    other = connect(server)
    other.close()
    assert wait_for(lambda: len(server._map) == 1)
    assert list(server._map.values()) == [server]


# --- the default socket map, driven by a plain asyncore.loop --------------------


@pytest.mark.parametrize("use_poll", [False, True])
def test_default_map_with_smtplib(use_poll):
    before = set(asyncore.socket_map)
    server = RecordingServer(("127.0.0.1", 0), None)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            asyncore.loop(timeout=0.05, use_poll=use_poll, count=1)

    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    host, port = server_address(server)
    try:
        with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
            assert (
                smtp.sendmail(
                    "a@example.com",
                    ["b@example.com", "c@example.com"],
                    b"Subject: one\r\n\r\nfirst\r\n",
                )
                == {}
            )
            message = EmailMessage()
            message["From"] = "d@example.com"
            message["To"] = "e@example.com"
            message["Subject"] = "two"
            message.set_content("second\n.dotted line\n")
            assert smtp.send_message(message) == {}
        first = smtplib.SMTP(host, port, timeout=TIMEOUT)
        second = smtplib.SMTP(host, port, timeout=TIMEOUT)
        try:
            second.sendmail("x@example.com", "y@example.com", "Subject: 3\r\n\r\nthree")
            first.sendmail("p@example.com", "q@example.com", "Subject: 4\r\n\r\nfour")
        finally:
            first.quit()
            second.quit()
    finally:
        stop.set()
        thread.join(TIMEOUT)
        for fd in set(asyncore.socket_map) - before:
            dispatcher = asyncore.socket_map.get(fd)
            if dispatcher is not None:
                dispatcher.close()
    assert not thread.is_alive()
    assert set(asyncore.socket_map) == before
    got = server.deliveries
    assert [(d.mailfrom, d.rcpttos) for d in got] == [
        ("a@example.com", ["b@example.com", "c@example.com"]),
        ("d@example.com", ["e@example.com"]),
        ("x@example.com", ["y@example.com"]),
        ("p@example.com", ["q@example.com"]),
    ]
    assert got[0].data == b"Subject: one\n\nfirst"
    assert got[1].data.endswith(b"\n\nsecond\n.dotted line")
    assert b"Subject: two\n" in got[1].data
    assert got[2].data == b"Subject: 3\n\nthree"
    assert got[0].kwargs["mail_options"] == [
        "SIZE=%d" % len(b"Subject: one\r\n\r\nfirst\r\n")
    ]
    assert got[0].peer[0] == "127.0.0.1"


@pytest.mark.parametrize("use_poll", [False, True])
def test_private_map_with_poll_flag(serve, connect, use_poll):
    server = serve(use_poll=use_poll)
    client = connect(server)
    assert do_transaction(client) == OK
    assert len(server.deliveries) == 1


# --- DEBUGSTREAM --------------------------------------------------------------


@pytest.fixture
def debugstream(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    return stream


def test_debugstream_session(serve, connect, debugstream):
    server = serve()
    port = server_address(server)[1]
    client = connect(server)
    cport = client.local_address[1]
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("RCPT TO:<e@f>")
    client.cmd("DATA")
    data_reply_ok(client, b"x\r\n..y")
    client.cmd("QUIT")
    client.read_until_eof()
    lines = debugstream.getvalue().splitlines()
    assert re.match(
        r"RecordingServer started at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$",
        lines[0],
    ), lines[0]
    assert lines[1:] == [
        "\tLocal addr: ('127.0.0.1', 0)",
        "\tRemote addr:None",
        "Incoming connection from ('127.0.0.1', %d)" % cport,
        "Peer: ('127.0.0.1', %d)" % cport,
        "Data: b'HELO x'",
        "Data: b'MAIL FROM:<a@b>'",
        "===> MAIL FROM:<a@b>",
        "sender: a@b",
        "Data: b'RCPT TO:<c@d>'",
        "===> RCPT TO:<c@d>",
        "recips: ['c@d']",
        "Data: b'RCPT TO:<e@f>'",
        "===> RCPT TO:<e@f>",
        "recips: ['c@d', 'e@f']",
        "Data: b'DATA'",
        "Data: b'x\\r\\n..y'",
        "Data: b'QUIT'",
    ]
    assert port != 0


def test_debugstream_decode_data(serve, connect, debugstream):
    server = serve(decode_data=True)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL")
    lines = debugstream.getvalue().splitlines()
    assert lines[-3:] == ["Data: 'HELO x'", "Data: 'MAIL'", "===> MAIL None"]


def test_debugstream_replaced_after_start(serve, connect, monkeypatch):
    server = serve()
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    client = connect(server)
    client.cmd("NOOP")
    assert "Data: b'NOOP'" in stream.getvalue().splitlines()


def test_debugstream_custom_server_name(serve, debugstream):
    serve(smtpd_compat.DebuggingServer, remoteaddr=("mx.example", 2525))
    text = debugstream.getvalue()
    assert text.startswith("DebuggingServer started at ")
    assert text.endswith(
        "\n\tLocal addr: ('127.0.0.1', 0)\n\tRemote addr:('mx.example', 2525)\n"
    )


def test_host_name_is_asked_once_per_server(private_map, monkeypatch):
    """Python's smtpd asked socket.getfqdn() for each connection; the name is
    kept per server, and asked again when getfqdn itself was replaced."""
    calls = []

    def getfqdn(name=""):
        calls.append(name)
        return "mx%d.example" % len(calls)

    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    server = smtpd_compat.SMTPServer(("127.0.0.1", 0), None, map=private_map)
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        channels = [
            smtpd_compat.SMTPChannel(server, left, ("x", 1), map=private_map)
            for left, _ in pairs
        ]
        assert [channel.fqdn for channel in channels] == ["mx1.example"] * 3
        assert len(calls) == 1
        monkeypatch.setattr(socket, "getfqdn", lambda name="": "other.example")
        later = smtpd_compat.SMTPChannel(server, pairs[0][1], ("x", 1), map=private_map)
        assert later.fqdn == "other.example"
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_replies_are_not_held_back_by_nagle(serve, connect):
    """The channel's TCP socket has TCP_NODELAY set."""
    server = serve()
    client = connect(server)
    [channel] = [
        d for d in list(server._map.values()) if isinstance(d, smtpd_compat.SMTPChannel)
    ]
    assert channel.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert client.cmd("NOOP") == b"250 OK\r\n"


def test_client_gone_before_the_channel_is_made(private_map):
    """getpeername() fails with ENOTCONN: the channel closes quietly, as in
    3.11 (any other error is raised)."""
    server = smtpd_compat.SMTPServer(("127.0.0.1", 0), None, map=private_map)
    unconnected = socket.socket()
    channel = smtpd_compat.SMTPChannel(server, unconnected, ("x", 1), map=private_map)
    assert channel not in private_map.values()
    assert unconnected.fileno() == -1  # closed
    assert not hasattr(channel, "peer")


@requires_ipv6
def test_ipv6_local_address_with_flow_info_and_scope(private_map):
    """localaddr may be IPv6's four-tuple, as bind() takes it."""
    server = smtpd_compat.SMTPServer(("::1", 0, 0, 0), None, map=private_map)
    assert server.socket.family == socket.AF_INET6
    assert server.socket.getsockname()[0] == "::1"


def test_started_line_on_debugstream(private_map, monkeypatch):
    """3.11's line, its time from time.time() (a frozen clock freezes it)."""
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    monkeypatch.setattr(time, "time", lambda: 1700000000.0)
    server = smtpd_compat.SMTPServer(
        ("127.0.0.1", 0), ("relay.example", 25), map=private_map
    )
    assert stream.getvalue() == (
        "SMTPServer started at %s\n\tLocal addr: ('127.0.0.1', 0)\n"
        "\tRemote addr:('relay.example', 25)\n" % time.ctime(1700000000.0)
    )
    assert server.socket is not None
