"""What subclasses see: output timing, send(), hooks' arguments, asynchat.

Legacy programs observe more than the wire: they override ``send()``,
close the channel from a handler, block in one, look at the pieces handed
to ``collect_incoming_data()``, and check ``isinstance(channel,
asynchat.async_chat)``.  Each test here pins what Python 3.11's smtpd and
asynchat did at one of those points.
"""

import smtplib
import socket
import ssl
import sys
import sysconfig
import threading
from unittest import mock

import pytest
import trustme
from conftest import TIMEOUT, DummyServer, RecordingServer, wait_for

import smtpd_compat
from smtpd_compat import asyncore

# -- output leaves when pushed ---------------------------------------------


class HandlerChannel(smtpd_compat.SMTPChannel):
    """Custom verbs that do what legacy handlers do after a push."""

    released = None  # threading.Event the client sets (see XWAIT)

    def smtp_BYE(self, arg):
        self.push("250 Ok")
        self.close()

    def smtp_STOPALL(self, arg):
        self.push("250 Stopping")
        asyncore.close_all(map=self._map)

    def smtp_EXIT(self, arg):
        self.push("250 Exiting")
        raise asyncore.ExitNow()

    def smtp_XWAIT(self, arg):
        # Blocks until the client says it has the replies sent so far.
        got_them = self.released.wait(TIMEOUT / 2)
        self.push("250 waited" if got_them else "451 replies were held back")

    def smtp_XPUSHWAIT(self, arg):
        self.push("250 first")
        got_it = self.released.wait(TIMEOUT / 2)
        self.push("250 second" if got_it else "451 first was held back")


class HandlerServer(RecordingServer):
    channel_class = HandlerChannel


def read_until_eof(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.fixture
def handler_server(serve):
    server = serve(HandlerServer)
    HandlerChannel.released = threading.Event()
    yield server
    HandlerChannel.released = None


def test_reply_pushed_before_close_reaches_the_client(handler_server, connect):
    client = connect(handler_server)
    # NOOP's reply is produced while the read is processed; BYE pushes and
    # closes at once.  Both must arrive, in order, before the end.
    client.send(b"NOOP\r\nBYE\r\n")
    assert read_until_eof(client.sock) == b"250 OK\r\n250 Ok\r\n"


def test_reply_pushed_before_close_all_reaches_the_client(handler_server, connect):
    client = connect(handler_server)
    client.send(b"HELO x\r\nSTOPALL\r\n")
    expected = b"250 %s\r\n250 Stopping\r\n" % socket.getfqdn().encode()
    assert read_until_eof(client.sock) == expected
    assert handler_server._map == {}


def test_reply_pushed_before_exitnow_reaches_the_client(private_map):
    server = HandlerServer(("127.0.0.1", 0), None, map=private_map)
    outcome = []

    def run_loop():
        try:
            asyncore.loop(timeout=0.05, map=private_map, count=int(TIMEOUT / 0.05))
        except asyncore.ExitNow:
            outcome.append("ExitNow")

    loop = threading.Thread(target=run_loop, daemon=True)
    loop.start()
    with socket.create_connection(server.socket.getsockname(), TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"NOOP\r\nEXIT\r\n")
        assert reader.readline() == b"250 OK\r\n"
        assert reader.readline() == b"250 Exiting\r\n"
    loop.join(TIMEOUT)
    assert outcome == ["ExitNow"]


def test_replies_queued_by_builtin_commands_leave_on_close(serve, connect):
    class Channel(smtpd_compat.SMTPChannel):
        # An override that is not a command: it runs while the replies to
        # the same read are still being gathered.
        def _getaddr(self, arg):
            result = super()._getaddr(arg)
            self.close()
            return result

    class Server(RecordingServer):
        channel_class = Channel

    client = connect(serve(Server))
    client.send(b"HELO x\r\nNOOP\r\nMAIL FROM:<a@b>\r\n")
    fqdn = socket.getfqdn().encode()
    assert read_until_eof(client.sock) == b"250 %s\r\n250 OK\r\n" % fqdn


def test_getaddr_override_finding_no_address_makes_vrfy_answer_502(serve, connect):
    """The built-in _getaddr() never finds an empty address in a non-empty
    argument (it raises instead); an override may, and VRFY then says 502."""

    class Channel(smtpd_compat.SMTPChannel):
        def _getaddr(self, arg):
            return "", ""

    class Server(RecordingServer):
        channel_class = Channel

    client = connect(serve(Server))
    assert client.cmd("VRFY nobody here") == b"502 Could not VRFY nobody here\r\n"


def test_getparams_override_taking_rcpt_parameters(serve, connect):
    """A subclass that accepts RCPT parameters (by its _getparams) gets them
    upper-cased in rcpt_options, as from Python's smtpd."""

    class Channel(smtpd_compat.SMTPChannel):
        def _getparams(self, params):
            return {}

    class Server(RecordingServer):
        channel_class = Channel

    server = serve(Server)
    client = connect(server)
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b>") == b"250 OK\r\n"
    assert client.cmd("RCPT TO:<c@d> notify=never orcpt=rfc822;c@d") == b"250 OK\r\n"
    assert client.cmd("DATA").startswith(b"354 ")
    assert client.cmd("body\r\n.") == b"250 OK\r\n"
    [delivery] = server.deliveries
    assert delivery.kwargs["rcpt_options"] == ["NOTIFY=NEVER", "ORCPT=RFC822;C@D"]


def _start_message(client):
    for line, reply in (
        (b"HELO x", b"250 "),
        (b"MAIL FROM:<a@b>", b"250 OK"),
        (b"RCPT TO:<c@d>", b"250 OK"),
        (b"DATA", b"354 "),
    ):
        assert client.cmd(line).startswith(reply)


def _channel_holding_input(server):
    """The server's channel, once it has collected part of a message."""
    [channel] = wait_for(
        lambda: [
            d
            for d in list(server._map.values())
            if isinstance(d, smtpd_compat.SMTPChannel) and d.received_lines
        ]
    )
    return channel


def test_push_replaced_in_the_middle_of_a_message(serve, connect):
    """A program that puts its own push() on a channel while a message comes
    in: the rest of the message is kept as it arrives, and the whole of it,
    unstuffed, is delivered."""
    server = serve()
    client = connect(server)
    _start_message(client)
    client.send(b"first\r\n..dot\r\n")
    channel = _channel_holding_input(server)
    pushed = []

    def push(msg):
        pushed.append(msg)
        smtpd_compat.SMTPChannel.push(channel, msg)

    channel.push = push
    client.send(b"..second\r\n")
    wait_for(lambda: len(channel.received_lines) == 2)
    assert client.cmd(b"last\r\n.") == b"250 OK\r\n"
    assert pushed == ["250 OK"]
    assert [d.data for d in server.deliveries] == [b"first\n.dot\n.second\nlast"]


def test_state_set_back_to_command_in_the_middle_of_a_message(serve, connect):
    """smtp_state set to COMMAND by a subclass while a message comes in: what
    came until the terminator is handled as a command line, as by 3.11."""

    class Channel(smtpd_compat.SMTPChannel):
        def collect_incoming_data(self, data):
            super().collect_incoming_data(data)
            if self.smtp_state == self.DATA and b"SWITCH" in data:
                self.smtp_state = self.COMMAND

    class Server(RecordingServer):
        channel_class = Channel

    server = serve(Server)
    client = connect(server)
    _start_message(client)
    reply = client.cmd(b"SWITCH\r\n.")
    assert reply == b'500 Error: command "SWITCH" not recognized\r\n'
    assert server.deliveries == []
    # (the terminator is still the message's, as it was in 3.11)


def test_state_set_to_command_from_outside_in_the_middle_of_a_message(serve, connect):
    """The same, set by the program from outside (no method overridden)."""
    server = serve()
    client = connect(server)
    _start_message(client)
    client.send(b"XFIRST")
    channel = _channel_holding_input(server)
    channel.smtp_state = channel.COMMAND
    reply = client.cmd(b"LINE\r\n.")
    assert reply == b'500 Error: command "XFIRSTLINE" not recognized\r\n'
    assert server.deliveries == []


def test_command_that_is_a_plain_function_attribute(serve, connect):
    """smtp_* found by getattr() may be any callable, as in 3.11: here a
    lambda set on the instance (it has no __func__)."""

    class Channel(smtpd_compat.SMTPChannel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.smtp_XPING = lambda arg: self.push("250 pong %s" % arg)

    class Server(RecordingServer):
        channel_class = Channel

    client = connect(serve(Server))
    assert client.cmd("XPING one") == b"250 pong one\r\n"
    assert client.cmd("NOOP") == b"250 OK\r\n"


def test_command_after_close_when_done_runs_on_an_open_channel(serve, connect):
    """As in 3.11, commands read with the one that called close_when_done()
    still run, on a channel that is still open (their replies are lost)."""
    seen = []

    class Channel(smtpd_compat.SMTPChannel):
        def smtp_XBYE(self, arg):
            self.push("221 bye")
            self.close_when_done()

        def smtp_XSEEN(self, arg):
            seen.append(self.connected)
            self.push("250 seen")

    class Server(RecordingServer):
        channel_class = Channel

    client = connect(serve(Server))
    client.send(b"XBYE\r\nXSEEN\r\n")
    assert read_until_eof(client.sock) == b"221 bye\r\n"
    assert seen == [True]


def test_terminator_set_by_a_data_override_ends_the_message(serve, connect):
    """A subclass's smtp_DATA that sets a terminator of its own: that
    terminator alone ends the message.  A "." line right after DATA is
    then text of the message, as in 3.11 (not the end of an empty one)."""

    class Channel(smtpd_compat.SMTPChannel):
        def smtp_DATA(self, arg):
            super().smtp_DATA(arg)
            self.set_terminator(b"\r\nEND\r\n")

    class Server(RecordingServer):
        channel_class = Channel

    server = serve(Server)
    client = connect(server)
    _start_message(client)
    assert client.cmd(b".\r\nbody\r\n..x\r\nEND") == b"250 OK\r\n"
    assert client.cmd(b"NOOP") == b"250 OK\r\n"
    assert [d.data for d in server.deliveries] == [b"\nbody\n.x"]


def test_unknown_state_set_by_a_subclass(serve, connect):
    """Neither COMMAND nor DATA: every line gets 3.11's 451 Internal
    confusion, and its length no longer counts toward the line limit."""
    channels = []

    class Channel(smtpd_compat.SMTPChannel):
        def smtp_XLIMBO(self, arg):
            channels.append(self)
            self.smtp_state = 2
            self.push("250 in limbo")

    class Server(RecordingServer):
        channel_class = Channel

    client = connect(serve(Server))
    assert client.cmd("XLIMBO") == b"250 in limbo\r\n"
    assert client.cmd("NOOP") == b"451 Internal confusion\r\n"
    assert client.cmd("x" * 600) == b"451 Internal confusion\r\n"
    [channel] = channels
    channel.smtp_state = channel.COMMAND
    # a line of exactly the limit: nothing from before counts
    assert client.cmd("NOOP " + "y" * 507) == b"501 Syntax: NOOP\r\n"


def test_replies_leave_before_a_blocking_handler_runs(handler_server, connect):
    client = connect(handler_server)
    client.send(b"NOOP\r\nXWAIT\r\n")
    assert client.read_reply() == b"250 OK\r\n"
    HandlerChannel.released.set()
    assert client.read_reply() == b"250 waited\r\n"


def test_push_inside_a_handler_leaves_before_it_blocks(handler_server, connect):
    client = connect(handler_server)
    client.send(b"XPUSHWAIT\r\n")
    assert client.read_reply() == b"250 first\r\n"
    HandlerChannel.released.set()
    assert client.read_reply() == b"250 second\r\n"


def test_replies_leave_before_process_message_blocks(serve, connect):
    released = threading.Event()

    class SlowServer(RecordingServer):
        def process_message(self, *args, **kwargs):
            self.waited = released.wait(TIMEOUT / 2)
            return super().process_message(*args, **kwargs)

    server = serve(SlowServer)
    client = connect(server)
    client.send(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    for _ in range(3):
        client.read_reply()
    assert client.read_reply() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    client.send(b"body\r\n.\r\n")
    released.set()
    assert client.read_reply() == b"250 OK\r\n"
    assert server.waited is True


# -- every byte goes through send() -----------------------------------------


class SendRecordingChannel(smtpd_compat.SMTPChannel):
    def send(self, data):
        self.smtp_server.sent.append(bytes(data))
        return super().send(data)


class SendRecordingServer(RecordingServer):
    channel_class = SendRecordingChannel

    def __init__(self, *args, **kwargs):
        self.sent = []
        super().__init__(*args, **kwargs)


def test_send_override_sees_every_reply_one_push_at_a_time(serve, connect):
    server = serve(SendRecordingServer)
    client = connect(server)
    ehlo = client.cmd("EHLO x")
    client.send(b"NOOP\r\nNOOP\r\nRSET\r\n")
    for _ in range(3):
        client.read_reply()
    fqdn = socket.getfqdn().encode()
    assert server.sent == [
        client.greeting,
        b"250-%s\r\n" % fqdn,
        b"250-SIZE 33554432\r\n",
        b"250-8BITMIME\r\n",
        b"250 HELP\r\n",
        b"250 OK\r\n",
        b"250 OK\r\n",
        b"250 OK\r\n",
    ]
    assert b"".join(server.sent[1:5]) == ehlo


def test_send_override_that_swallows_errors_keeps_serving(serve, connect):
    class QuietChannel(smtpd_compat.SMTPChannel):
        def send(self, data):
            try:
                return super().send(data)
            except OSError:  # pragma: no cover - what legacy code wrote
                return 0

    class Server(RecordingServer):
        channel_class = QuietChannel

    server = serve(Server)
    client = connect(server)
    client.send(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    replies = [client.read_reply() for _ in range(4)]
    assert replies[1:] == [
        b"250 OK\r\n",
        b"250 OK\r\n",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
    ]
    client.send(b"hi\r\n.\r\n")
    assert client.read_reply() == b"250 OK\r\n"
    assert server.deliveries[0].data == b"hi"


class TLSWrappingServer(RecordingServer):
    """Wraps each accepted socket in TLS itself, as legacy SMTPS sinks did."""

    context = None

    def handle_accepted(self, conn, addr):
        conn.settimeout(TIMEOUT)
        tls_conn = self.context.wrap_socket(conn, server_side=True)
        self.channel_class(self, tls_conn, addr, map=self._map)


def test_channel_on_a_tls_socket_wrapped_by_the_server(serve):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    TLSWrappingServer.context = server_context
    server = serve(TLSWrappingServer)
    host, port = server.socket.getsockname()
    with smtplib.SMTP_SSL(host, port, context=client_context, timeout=TIMEOUT) as smtp:
        code, _ = smtp.ehlo("client.example")  # four reply lines, four sends
        assert code == 250
        assert smtp.has_extn("8bitmime")
        refused = smtp.sendmail("a@b", ["c@d", "e@f"], b"Subject: tls\r\n\r\nhi\r\n")
        assert refused == {}
        assert smtp.noop() == (250, b"OK")
    assert [d.rcpttos for d in server.deliveries] == [["c@d", "e@f"]]
    assert server.deliveries[0].data == b"Subject: tls\n\nhi"


# -- what the input hooks are given ------------------------------------------


class CollectingChannel(smtpd_compat.SMTPChannel):
    def collect_incoming_data(self, data):
        self.smtp_server.pieces.append(bytes(data))
        super().collect_incoming_data(data)

    def found_terminator(self):
        self.smtp_server.lines_seen.append(list(self.received_lines))
        super().found_terminator()


class CollectingServer(RecordingServer):
    channel_class = CollectingChannel

    def __init__(self, *args, **kwargs):
        self.pieces = []
        self.lines_seen = []
        super().__init__(*args, **kwargs)


def test_message_pieces_are_what_python_gave(serve, connect):
    server = serve(CollectingServer)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    assert client.cmd("DATA").startswith(b"354")
    del server.pieces[:], server.lines_seen[:]
    client.send(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n")
    assert client.read_reply() == b"250 OK\r\n"
    # No CRLF of the DATA line in front, and received_lines is a list of
    # the pieces, as Python's smtpd kept it.
    assert server.pieces == [b"Subject: x\r\n\r\n..dot\r\nbody"]
    assert server.lines_seen == [[b"Subject: x\r\n\r\n..dot\r\nbody"]]
    assert server.deliveries[0].data == b"Subject: x\n\n.dot\nbody"


def test_empty_message_ends_at_the_dot(serve, connect):
    server = serve(CollectingServer)
    client = connect(server)
    client.cmd("HELO x")
    client.cmd("MAIL FROM:<a@b>")
    client.cmd("RCPT TO:<c@d>")
    client.cmd("DATA")
    del server.pieces[:]
    assert client.cmd(".") == b"250 OK\r\n"
    assert server.pieces == []
    assert server.deliveries[0].data == b""


def test_handler_error_is_logged_in_asyncores_words(serve, connect):
    logged = []

    class FailingChannel(smtpd_compat.SMTPChannel):
        def smtp_FAIL(self, arg):
            raise ValueError("boom")

        def log_info(self, message, type="info"):
            logged.append((type, message))

    class Server(RecordingServer):
        channel_class = FailingChannel

    server = serve(Server)
    client = connect(server)
    reply = client.cmd("FAIL")
    assert reply == b"451 Requested action aborted: local error in processing\r\n"
    assert client.cmd("NOOP") == b"250 OK\r\n"
    [(kind, message)] = logged
    assert kind == "error"
    prefix = "uncaptured python exception, closing channel <"
    assert message.startswith(prefix), message
    assert " (<class 'ValueError'>:boom [" in message


def test_other_errors_still_close_after_a_handler_error(serve, connect):
    """A handler's exception keeps the session (451); an exception elsewhere,
    later on the same channel, closes it as asyncore does."""
    logged = []

    class Channel(smtpd_compat.SMTPChannel):
        def smtp_FAIL(self, arg):
            raise ValueError("boom")

        def collect_incoming_data(self, data):
            if b"BREAK" in data:
                raise RuntimeError("broken reader")
            super().collect_incoming_data(data)

        def log_info(self, message, type="info"):
            logged.append(message)

    class Server(RecordingServer):
        channel_class = Channel

    client = connect(serve(Server))
    reply = client.cmd("FAIL")
    assert reply == b"451 Requested action aborted: local error in processing\r\n"
    assert client.cmd("NOOP") == b"250 OK\r\n"
    client.send(b"BREAK\r\n")
    assert read_until_eof(client.sock) == b""
    assert len(logged) == 2
    assert " (<class 'RuntimeError'>:broken reader [" in logged[1]


def test_log_line_survives_a_broken_repr(private_map, sockpair):
    logged = []

    class BrokenRepr(smtpd_compat.SMTPChannel):
        def __repr__(self):
            raise RuntimeError("no repr")

        def log_info(self, message, type="info"):
            logged.append(message)

    channel = BrokenRepr(DummyServer(), sockpair[0], ("127.0.0.1", 1), map=private_map)
    try:
        raise KeyError("k")
    except KeyError:
        channel.handle_error()
    expected = "<__repr__(self) failed for object at %0x>" % id(channel)
    assert logged[0].startswith(
        "uncaptured python exception, closing channel %s (" % expected
    )


# -- one asynchat ------------------------------------------------------------


def test_channels_are_asynchat_async_chat_instances(sockpair, private_map):
    import asynchat

    channel = smtpd_compat.SMTPChannel(
        DummyServer(), sockpair[0], ("127.0.0.1", 1), map=private_map
    )
    assert isinstance(channel, asynchat.async_chat)
    assert isinstance(channel, smtpd_compat.asynchat.async_chat)


def test_one_async_chat_to_patch():
    import asynchat

    if sys.version_info < (3, 12):
        # The standard library's asynchat stays; ours derives from it.
        assert asynchat is not smtpd_compat.asynchat
        assert asynchat.__file__.startswith(sysconfig.get_paths()["stdlib"])
        assert issubclass(smtpd_compat.asynchat.async_chat, asynchat.async_chat)
    else:
        assert asynchat is smtpd_compat.asynchat


def test_a_double_for_asynchat_push_sees_each_channels_output(sockpair, private_map):
    """mock.patch("asynchat.async_chat.push") is called with every reply of
    every channel, as it was with Python's smtpd: on 3.12+ that asynchat
    is ours, before it our push() hands over to the double."""
    import asynchat

    original = asynchat.async_chat.push
    with mock.patch("asynchat.async_chat.push", autospec=True) as push:
        push.side_effect = original
        channel = smtpd_compat.SMTPChannel(
            DummyServer(), sockpair[0], ("127.0.0.1", 1), map=private_map
        )
    [call] = push.call_args_list
    assert call.args[0] is channel
    assert call.args[1].startswith(b"220 ")
    assert sockpair[1].recv(100) == call.args[1]


def test_push_refuses_text_with_pythons_message(sockpair, private_map):
    channel = smtpd_compat.SMTPChannel(
        DummyServer(), sockpair[0], ("127.0.0.1", 1), map=private_map
    )
    with pytest.raises(TypeError) as caught:
        smtpd_compat.asynchat.async_chat.push(channel, "text")
    assert caught.value.args == ("data argument must be byte-ish (%r)", str)
