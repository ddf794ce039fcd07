"""The TLS handshake dispatcher (smtpd_compat._tls.Handshake), step by step.

A stand-in context wraps the socket into a stand-in TLS socket whose
do_handshake() follows a script (want read, want write, fail, succeed), so
each step of the handshake and the events it then asks the loop for are
checked without a TLS client.  Real handshakes are tested in
test_starttls_server.py, test_tls_state.py and test_tls_clients.py.
"""

import ssl
from collections import deque

import pytest

from smtpd_compat import _tls


class ScriptedTLSSocket:
    """do_handshake() raises the script's next exception, or succeeds."""

    def __init__(self, plain, script):
        self.plain = plain
        self.script = deque(script)
        self.handshakes = 0
        self.closed = False

    def do_handshake(self):
        self.handshakes += 1
        outcome = self.script.popleft()
        if outcome is not None:
            raise outcome

    def fileno(self):
        return self.plain.fileno()

    def close(self):
        self.closed = True


class ScriptedContext:
    """wrap_socket() gives a ScriptedTLSSocket, or raises ``wrap_error``."""

    def __init__(self, script=(), wrap_error=None):
        self.script = script
        self.wrap_error = wrap_error
        self.wrapped = []

    def wrap_socket(self, plain, server_side, do_handshake_on_connect):
        assert server_side and not do_handshake_on_connect
        if self.wrap_error is not None:
            raise self.wrap_error
        tls = ScriptedTLSSocket(plain, self.script)
        self.wrapped.append(tls)
        return tls


class StandInChannel:
    """What a Handshake flushes before wrapping: a channel's queued reply."""

    connected = True

    def __init__(self):
        self.producer_fifo = deque()

    def initiate_send(self):
        pass


class Outcome:
    """Records on_done() and on_failed() calls."""

    def __init__(self):
        self.done = []
        self.failed = []


def start(sockpair, private_map, context, flush=None):
    outcome = Outcome()
    handshake = _tls.Handshake(
        sockpair[0],
        context,
        private_map,
        outcome.done.append,
        outcome.failed.append,
        flush=flush,
    )
    return handshake, outcome


def waits_for(handshake):
    """The event the handshake asks the loop for."""
    return {
        (True, False): "read",
        (False, True): "write",
    }[(handshake.readable(), handshake.writable())]


def test_each_step_asks_for_the_event_the_handshake_wants(sockpair, private_map):
    script = [ssl.SSLWantReadError(), ssl.SSLWantWriteError(), ssl.SSLWantReadError()]
    context = ScriptedContext(script + [None])
    handshake, outcome = start(sockpair, private_map, context)
    [tls] = context.wrapped
    fd = sockpair[0].fileno()
    assert repr(handshake) == "<smtpd_compat._tls.Handshake fd=%d>" % fd
    assert waits_for(handshake) == "read"  # the ClientHello comes first
    handshake.handle_read()
    assert waits_for(handshake) == "read"
    handshake.handle_read()
    assert waits_for(handshake) == "write"
    handshake.handle_write()
    assert waits_for(handshake) == "read"
    assert private_map == {fd: handshake}
    handshake.handle_read()
    assert tls.handshakes == 4
    assert outcome.done == [tls]
    assert private_map == {}  # the descriptor is the channel's now
    # Closing the finished handshake reports no failure.
    handshake.close()
    assert outcome.failed == []


def test_a_failed_handshake_is_reported_once(sockpair, private_map):
    error = ssl.SSLError("garbage instead of a ClientHello")
    context = ScriptedContext([error])
    handshake, outcome = start(sockpair, private_map, context)
    handshake.handle_read()
    assert outcome.failed == [error]
    assert context.wrapped[0].closed
    assert private_map == {}
    handshake.close()
    handshake.handle_close()
    assert outcome.failed == [error]
    assert outcome.done == []


@pytest.mark.parametrize("flush", [False, True])
def test_a_socket_that_cannot_be_wrapped_is_reported(sockpair, private_map, flush):
    """The client may be gone by the time the socket is wrapped: at once
    for implicit TLS, after the 220 reply has left for STARTTLS."""
    error = OSError("client gone")
    context = ScriptedContext(wrap_error=error)
    channel = StandInChannel() if flush else None
    handshake, outcome = start(sockpair, private_map, context, flush=channel)
    if flush:
        assert outcome.failed == []
        assert waits_for(handshake) == "write"
        handshake.handle_write()
    assert outcome.failed == [error]
    assert private_map == {}


def test_the_handshake_starts_once_the_reply_has_left(sockpair, private_map):
    channel = StandInChannel()
    channel.producer_fifo.append(b"220 Ready to start TLS\r\n")
    context = ScriptedContext([ssl.SSLWantReadError()])
    handshake, _ = start(sockpair, private_map, context, flush=channel)
    handshake.handle_write()  # the socket took nothing: the reply waits
    assert context.wrapped == []
    assert waits_for(handshake) == "write"
    channel.producer_fifo.clear()
    handshake.handle_write()
    [tls] = context.wrapped
    assert tls.handshakes == 1
    assert waits_for(handshake) == "read"
