"""smtpd_compat.controller: running a server in a thread for test suites."""

import functools
import gc
import os
import smtplib
import socket
import threading
import time

import pytest
from conftest import TIMEOUT, PeerClosed, RawClient, do_transaction, wait_for

import smtpd_compat
from smtpd_compat import asyncore
from smtpd_compat.capture import CapturingController, CapturingServer
from smtpd_compat.controller import Controller, ControllerError

HOST = "127.0.0.1"

needs_proc_fd = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"),
    reason="needs /proc/self/fd to count descriptors",
)


class Snapshot:
    """Open file descriptors and live threads at one moment."""

    def __init__(self):
        gc.collect()
        self.fd_count = len(os.listdir("/proc/self/fd"))
        self.threads = set(threading.enumerate())

    def assert_nothing_leaked_since(self, before):
        after = self
        leaked_threads = after.threads - before.threads
        assert not leaked_threads
        assert after.fd_count == before.fd_count


@pytest.fixture
def leak_check():
    """Fails the test if it leaves descriptors or threads behind."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to count descriptors")
    before = Snapshot()
    yield
    Snapshot().assert_nothing_leaked_since(before)


@pytest.fixture
def controllers():
    """Factory for Controllers that are stopped at teardown in any case."""
    made = []

    def make(*args, **kwargs):
        controller = Controller(*args, **kwargs)
        made.append(controller)
        return controller

    yield make
    for controller in made:
        controller.stop()


class RecordingServer(smtpd_compat.SMTPServer):
    """Keeps (mailfrom, rcpttos, data) of each message."""

    def __init__(self, *args, **kwargs):
        self.received = []
        super().__init__(*args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.received.append((mailfrom, rcpttos, data))


class SilentChannel(smtpd_compat.SMTPChannel):
    """A channel that never sends the 220 greeting."""

    def push(self, msg):
        if not msg.startswith("220 "):
            super().push(msg)


class SilentServer(RecordingServer):
    channel_class = SilentChannel


def send_one(address, body="Subject: hi\r\n\r\nhello\r\n", rcpt="b@example.com"):
    with smtplib.SMTP(*address, timeout=TIMEOUT) as client:
        client.sendmail("a@example.com", [rcpt], body)


def read_until_closed(raw_client):
    """What the server still sends before it closes the connection.

    A reset counts as a close (with nothing more received); a server that
    keeps the connection open makes the read time out (socket.timeout).
    """
    try:
        return raw_client.read_until_eof()
    except ConnectionResetError:
        return b""


# -- starting ----------------------------------------------------------------


def test_start_binds_a_free_port_and_the_server_greets(controllers):
    controller = controllers(RecordingServer, host=HOST).start()
    assert controller.host == HOST
    assert controller.port > 0
    assert controller.address == (HOST, controller.port)
    assert controller.server.socket.getsockname() == controller.address
    assert controller.running
    client = RawClient(controller.address)
    try:
        assert client.greeting.startswith(b"220 ")
    finally:
        client.close()


def test_server_lives_on_a_private_map_and_mail_arrives(controllers):
    global_map_before = dict(asyncore.socket_map)
    controller = controllers(RecordingServer, decode_data=True).start()
    assert controller.server._map is not asyncore.socket_map
    send_one(controller.address)
    assert controller.server.received == [
        ("a@example.com", ["b@example.com"], "Subject: hi\n\nhello")
    ]
    assert asyncore.socket_map == global_map_before


def test_server_kwargs_and_remoteaddr_reach_the_server(controllers):
    controller = controllers(
        RecordingServer, remoteaddr=("127.0.0.1", 9), data_size_limit=1234
    ).start()
    assert controller.server._remoteaddr == ("127.0.0.1", 9)
    assert controller.server.data_size_limit == 1234


def test_factory_builds_the_server(controllers):
    seen = {}

    def factory(localaddr, sock_map):
        seen["localaddr"] = localaddr
        return RecordingServer(localaddr, None, map=sock_map, decode_data=True)

    controller = controllers(factory=factory).start()
    assert seen["localaddr"] == (HOST, 0)
    send_one(controller.address)
    assert controller.server.received[0][2] == "Subject: hi\n\nhello"


def test_class_or_factory_exactly_one():
    one = "^Controller\\(\\) needs either a server class or factory=$"
    with pytest.raises(TypeError, match=one):
        Controller()
    with pytest.raises(TypeError, match=one):
        Controller(RecordingServer, factory=lambda localaddr, sock_map: None)
    with pytest.raises(TypeError) as info:
        Controller(factory=lambda localaddr, sock_map: None, decode_data=True)
    assert str(info.value) == (
        "server arguments cannot be combined with factory=; let the factory pass them"
    )


def test_start_while_running_is_refused(controllers):
    controller = controllers(RecordingServer).start()
    with pytest.raises(RuntimeError, match="already started"):
        controller.start()
    assert controller.running


def test_address_before_start_is_an_error():
    controller = Controller(RecordingServer)
    with pytest.raises(RuntimeError):
        _ = controller.address


def test_server_ignoring_the_map_argument_is_refused(leak_check):
    """An old-style __init__ that drops map= would register in the global map."""

    class OldStyleServer(RecordingServer):
        def __init__(self, localaddr, remoteaddr, **ignored):
            RecordingServer.__init__(self, localaddr, remoteaddr)

    global_map_before = dict(asyncore.socket_map)
    with pytest.raises(TypeError) as info:
        Controller(OldStyleServer).start()
    assert str(info.value) == (
        "OldStyleServer did not register in the socket map it was given; "
        "pass map= on to SMTPServer.__init__, or use factory="
    )
    assert asyncore.socket_map == global_map_before


def test_bind_error_propagates_and_nothing_is_left_open(leak_check):
    occupier = socket.socket()
    try:
        occupier.bind((HOST, 0))
        occupier.listen(1)
        busy_port = occupier.getsockname()[1]
        controller = Controller(RecordingServer, port=busy_port)
        with pytest.raises(OSError):
            controller.start()
        assert not controller.running
    finally:
        occupier.close()


def test_server_that_never_greets_fails_start_with_cause(leak_check):
    controller = Controller(SilentServer, ready_timeout=0.3)
    with pytest.raises(ControllerError, match="did not answer") as info:
        controller.start()
    assert isinstance(info.value.__cause__, OSError)  # socket.timeout
    assert not controller.running


def test_expect_greeting_false_only_needs_the_connection(controllers):
    controller = controllers(SilentServer, expect_greeting=False).start()
    assert controller.running


def test_restart_builds_a_new_server(controllers):
    controller = controllers(RecordingServer)
    first = controller.start().server
    controller.stop()
    second = controller.start().server
    assert second is not first
    send_one(controller.address)
    assert len(second.received) == 1
    assert first.received == []


# -- stopping ----------------------------------------------------------------


def test_context_manager_stops_and_closes_everything(leak_check):
    with Controller(RecordingServer) as controller:
        client = RawClient(controller.address)
        assert controller.running
    try:
        assert not controller.running
        assert controller.server._map == {}
        assert controller.server.socket.fileno() == -1
        assert read_until_closed(client) == b""
    finally:
        client.close()


def test_stop_is_idempotent_and_harmless_before_start():
    controller = Controller(RecordingServer)
    controller.stop()
    controller.start()
    controller.stop()
    controller.stop()
    assert not controller.running


def test_concurrent_stop_calls_all_return(leak_check):
    controller = Controller(RecordingServer).start()
    callers = 8
    barrier = threading.Barrier(callers)
    failures = []

    def stop_it():
        barrier.wait(TIMEOUT)
        try:
            controller.stop()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=stop_it) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert failures == []
    assert not any(thread.is_alive() for thread in threads)
    assert not controller.running


def test_stop_does_not_wait_for_the_poll_timeout(leak_check):
    """The waker ends the loop: with a 60 s poll the 5 s stop limit still holds."""
    controller = Controller(RecordingServer, poll_interval=60, stop_timeout=TIMEOUT)
    controller.start()
    send_one(controller.address)
    controller.stop()
    assert not controller.running


def test_stop_called_by_the_server_itself(leak_check):
    """From the loop thread stop() only asks; a later stop() joins."""

    class StopOnMail(RecordingServer):
        def process_message(self, *args, **kwargs):
            controller.stop()

    controller = Controller(StopOnMail).start()
    client = RawClient(controller.address)
    try:
        client.cmd("HELO me")
        client.cmd("MAIL FROM:<a@example.com>")
        client.cmd("RCPT TO:<b@example.com>")
        client.cmd("DATA")
        client.send(b"hello\r\n.\r\n")
        assert wait_for(lambda: not controller.running)
        controller.stop()
    finally:
        client.close()


def test_stop_in_the_middle_of_data(leak_check):
    controller = Controller(RecordingServer).start()
    client = RawClient(controller.address)
    try:
        client.cmd("HELO me")
        client.cmd("MAIL FROM:<a@example.com>")
        client.cmd("RCPT TO:<b@example.com>")
        assert client.cmd("DATA").startswith(b"354")
        client.send(b"Subject: unfinished\r\n\r\nhalf a mess")
        controller.stop()
        assert read_until_closed(client) == b""
        assert controller.server.received == []
    finally:
        client.close()


def test_stop_while_an_smtplib_client_waits_for_a_reply(leak_check):
    controller = Controller(RecordingServer).start()
    waiting = threading.Event()
    outcome = []

    def client_waiting_for_end_of_data():
        with smtplib.SMTP(*controller.address, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("a@example.com")
            client.rcpt("b@example.com")
            client.docmd("DATA")
            client.send(b"Subject: unfinished\r\n\r\n")
            waiting.set()
            try:
                client.getreply()  # blocks: the message never ends
            except smtplib.SMTPServerDisconnected as exc:
                outcome.append(exc)

    thread = threading.Thread(target=client_waiting_for_end_of_data)
    thread.start()
    try:
        assert waiting.wait(TIMEOUT)
        controller.stop()
    finally:
        thread.join(TIMEOUT)
        controller.stop()
    assert not thread.is_alive()
    assert len(outcome) == 1


def test_blocked_handler_makes_stop_raise_and_stop_can_be_retried(leak_check):
    entered = threading.Event()
    release = threading.Event()

    class BlockingServer(RecordingServer):
        def process_message(self, *args, **kwargs):
            entered.set()
            release.wait(TIMEOUT)

    controller = Controller(BlockingServer).start()
    sender = threading.Thread(target=send_quietly, args=(controller.address,))
    sender.start()
    try:
        assert entered.wait(TIMEOUT)
        with pytest.raises(ControllerError) as info:
            controller.stop(timeout=0.2)
        assert str(info.value) == (
            "the loop thread of %r did not end within 0.2 s "
            "(is a handler blocked?)" % controller
        )
        # Without a timeout, stop() waits stop_timeout seconds.
        controller.stop_timeout = 0.3
        with pytest.raises(ControllerError, match="did not end within 0.3 s"):
            controller.stop()
        assert controller.running
    finally:
        release.set()
        controller.stop()
        sender.join(TIMEOUT)
    assert not controller.running


def send_quietly(address):
    """send_one(), for a thread whose server may go away mid-transaction."""
    try:
        send_one(address)
    except (smtplib.SMTPException, OSError):
        pass


# -- errors in the loop --------------------------------------------------------


class ExplodingServer(RecordingServer):
    """readable() raises once armed: asyncore lets that escape the loop."""

    armed = False

    def readable(self):
        if self.armed:
            raise ValueError("boom")
        return super().readable()


def poke(address):
    """Connect and close at once; a server that is gone is fine too."""
    try:
        socket.create_connection(address, timeout=TIMEOUT).close()
    except OSError:
        pass


def test_exception_escaping_the_loop_is_raised_by_stop(leak_check):
    controller = Controller(ExplodingServer).start()
    controller.server.armed = True
    poke(controller.address)  # makes the loop go round, if it is not dead yet
    assert wait_for(lambda: not controller.running)
    with pytest.raises(ControllerError, match="ended with an exception") as info:
        controller.stop()
    assert isinstance(info.value.__cause__, ValueError)
    controller.stop()  # reported once; now simply stopped


def test_loop_dying_during_start_is_the_cause_of_the_start_error(leak_check):
    class ArmedServer(ExplodingServer):
        armed = True

    with pytest.raises(ControllerError, match="did not answer") as info:
        Controller(ArmedServer).start()
    assert isinstance(info.value.__cause__, ValueError)


def test_server_hanging_up_at_once_fails_start(leak_check):
    class HangUpServer(RecordingServer):
        def handle_accepted(self, conn, addr):
            conn.close()

    with pytest.raises(ControllerError) as info:
        Controller(HangUpServer, ready_timeout=1.0).start()
    # The probe has sent nothing: the server's close is a plain end of
    # stream, never a reset.
    assert type(info.value.__cause__) is ConnectionError
    assert str(info.value.__cause__) == "the server closed without a greeting"


def test_a_hang_up_stays_the_cause_when_a_later_probe_times_out(
    leak_check, monkeypatch
):
    """The last probe may run out of the little time left; the cause stays."""
    outcomes = iter([ConnectionResetError("hung up"), socket.timeout("timed out")])

    def probe(self, timeout):
        error = next(outcomes, None)
        if error is None:
            time.sleep(timeout)
            raise socket.timeout("timed out")
        raise error

    monkeypatch.setattr(Controller, "_probe", probe)
    with pytest.raises(ControllerError) as info:
        Controller(RecordingServer, ready_timeout=0.3).start()
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_exit_now_from_a_handler_is_a_clean_stop(leak_check):
    class ExitOnMail(RecordingServer):
        def process_message(self, *args, **kwargs):
            raise asyncore.ExitNow

    controller = Controller(ExitOnMail).start()
    send_quietly(controller.address)
    assert wait_for(lambda: not controller.running)
    controller.stop()


# -- many at once, many times ------------------------------------------------


def test_parallel_controllers_each_get_their_own_mail(leak_check):
    sinks = [CapturingController() for _ in range(5)]
    try:
        for sink in sinks:
            sink.start()
        assert len({sink.port for sink in sinks}) == len(sinks)
        senders = [
            threading.Thread(
                target=send_one,
                args=(sink.address,),
                kwargs={"rcpt": "user%d@example.com" % number},
            )
            for number, sink in enumerate(sinks)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(TIMEOUT)
        for number, sink in enumerate(sinks):
            [mail] = sink.wait_for(1, timeout=TIMEOUT)
            assert mail.rcpt_tos == ("user%d@example.com" % number,)
    finally:
        for sink in sinks:
            sink.stop()
    assert all(len(sink.messages) == 1 for sink in sinks)


@needs_proc_fd
def test_start_stop_200_times_leaks_nothing():
    """Each round also leaves a client connected, which stop() must close."""
    before = Snapshot()
    controller = Controller(CapturingServer)
    for _ in range(200):
        controller.start()
        client = RawClient(controller.address)
        try:
            assert client.greeting.startswith(b"220 ")
            controller.stop()
            assert read_until_closed(client) == b""
        finally:
            client.close()
    Snapshot().assert_nothing_leaked_since(before)


def test_mail_after_many_restarts_still_works(controllers):
    controller = controllers(RecordingServer)
    for _ in range(5):
        controller.start()
        client = RawClient(controller.address)
        try:
            assert do_transaction(client) == b"250 OK\r\n"
        finally:
            client.close()
        controller.stop()
    assert len(controller.server.received) == 1


def test_repr_says_what_and_where(controllers):
    controller = controllers(RecordingServer).start()
    assert "RecordingServer running at 127.0.0.1:%d" % controller.port in repr(
        controller
    )
    controller.stop()
    assert "stopped" in repr(controller)


def test_peer_closed_is_seen_by_raw_clients_after_stop(leak_check):
    """A client reading after stop() gets EOF, not a hang."""
    controller = Controller(RecordingServer).start()
    client = RawClient(controller.address)
    try:
        controller.stop()
        with pytest.raises((PeerClosed, ConnectionResetError)):
            client.cmd("NOOP")
    finally:
        client.close()


def test_defaults_and_repr_before_start():
    controller = Controller(factory=functools.partial(RecordingServer, None))
    assert (controller.ready_timeout, controller.stop_timeout) == (5.0, 5.0)
    assert controller.poll_interval == 0.5
    assert (controller.host, controller.port, controller.ca_file) == (None,) * 3
    # A factory without a __name__ is called "server".
    assert repr(controller) == "<Controller server stopped at None:None>"
    controller = Controller(RecordingServer, stop_timeout=2.5)
    assert controller.stop_timeout == 2.5
    assert repr(controller) == "<Controller RecordingServer stopped at None:None>"


def test_loop_thread_is_a_named_daemon():
    with Controller(RecordingServer) as controller:
        name = "smtpd-controller-%d" % controller.port
        [thread] = [t for t in threading.enumerate() if t.name == name]
        assert thread.daemon


def test_a_factory_result_without_a_socket_is_refused():
    class Socketless(asyncore.dispatcher):
        pass

    def factory(localaddr, sock_map):
        server = Socketless(map=sock_map)
        server.add_channel()  # registered, as the map check asks, but no socket
        return server

    with pytest.raises(TypeError, match="^Socketless has no socket$"):
        Controller(factory=factory).start()
