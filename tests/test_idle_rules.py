"""The idle-timeout rule, driven by a clock the test chooses.

``SMTPServer._close_idle_channels(now)`` is what the server's loop calls
from ``readable()`` with ``time.monotonic()``; calling it with chosen
times checks the rule's edges without waiting (tests/test_idle_timeout.py
checks the same against real time, end to end).  The times chosen are
near the real clock, since pumping the loop runs the server's own sweeps.
"""

import time

import pytest
from conftest import FQDN, TIMEOUT, pump
from tls_support import Certificates, tls_socket_pair

import smtpd_compat
from smtpd_compat import asyncore

IDLE = 10.0
NOTICE = b"421 " + FQDN.encode() + b" Idle timeout, closing connection\r\n"


class Session:
    """A server with an idle timeout, one channel on a socket pair, its client."""

    def __init__(
        self,
        sock_map,
        server_end,
        client,
        idle_timeout=IDLE,
        own_sweeps=True,
        channel_class=smtpd_compat.SMTPChannel,
        **server_kw,
    ):
        self.map = sock_map
        self.server = smtpd_compat.SMTPServer(
            ("127.0.0.1", 0), None, map=sock_map, idle_timeout=idle_timeout, **server_kw
        )
        if not own_sweeps:
            # The server's loop then never sweeps by itself: only the test does.
            self.server._next_idle_sweep = float("inf")
        self.channel = channel_class(
            self.server, server_end, ("127.0.0.1", 2525), map=sock_map
        )
        self.client = client
        pump(sock_map)
        assert client.recv(1024).startswith(b"220 ")

    def sweep(self, now):
        self.server._close_idle_channels(now)

    def received_now(self):
        """What the client can read without waiting: bytes, b"" at EOF, None."""
        self.client.setblocking(False)
        try:
            return self.client.recv(65536)
        except BlockingIOError:
            return None
        finally:
            self.client.settimeout(TIMEOUT)

    def channel_open(self):
        return self.channel in self.map.values()


@pytest.fixture
def session(private_map, sockpair):
    return Session(private_map, *sockpair)


def test_silence_of_exactly_the_timeout_is_not_idle(session):
    start = session.channel._last_activity
    for now in (start + IDLE / 2, start + IDLE):
        session.sweep(now)
        pump(session.map)
        assert session.received_now() is None
        assert session.channel_open()


def test_silence_past_the_timeout_gets_421_then_eof(session):
    session.sweep(session.channel._last_activity + IDLE + 0.001)
    # Only queued while the loop asks readable(): nothing sent, nothing
    # closed (select() must not be handed a closed descriptor).
    assert session.received_now() is None
    assert session.channel_open()
    pump(session.map, until=lambda: not session.channel_open())
    assert session.client.recv(1024) == NOTICE
    assert session.client.recv(1024) == b""


def test_the_clock_starts_when_the_client_connects(private_map, sockpair):
    """Silent from the start: cut a timeout after connecting (not after a
    first sweep that would only start the clock)."""
    session = Session(private_map, *sockpair, own_sweeps=False)
    session.sweep(time.monotonic() + IDLE + 1)
    pump(session.map, until=lambda: not session.channel_open())
    assert session.client.recv(1024) == NOTICE


def test_input_restarts_the_clock(private_map, sockpair, monkeypatch):
    session = Session(private_map, *sockpair, own_sweeps=False)
    later = Clock(session.channel._last_activity + 100)
    monkeypatch.setattr(smtpd_compat, "time", later)
    session.client.sendall(b"NOOP\r\n")
    pump(session.map, until=lambda: session.received_now() is not None)
    session.sweep(later.now + IDLE)  # a whole timeout since the NOOP: not more
    pump(session.map)
    assert session.received_now() is None
    assert session.channel_open()


def test_commands_after_the_notice_are_not_run(private_map, sockpair):
    ran = []

    class Channel(smtpd_compat.SMTPChannel):
        def smtp_XMARK(self, arg):
            ran.append(arg)
            self.push("250 marked")

    session = Session(private_map, *sockpair, channel_class=Channel)
    session.sweep(session.channel._last_activity + IDLE + 1)
    session.client.sendall(b"XMARK late\r\n")
    pump(session.map, until=lambda: not session.channel_open())
    assert session.client.recv(1024) == NOTICE
    assert ran == []


def test_no_timeout_means_no_sweep_effect(session):
    session.server.idle_timeout = None
    session.sweep(session.channel._last_activity + 1e9)
    pump(session.map)
    assert session.received_now() is None
    assert session.channel_open()


def test_timeout_set_after_the_channel_started(private_map, sockpair):
    session = Session(private_map, *sockpair, idle_timeout=None)
    assert session.channel._last_activity == 0.0  # not tracked without a timeout
    session.server.idle_timeout = IDLE
    # The server's own sweeps (from readable(), while pumping) use the real
    # clock: the chosen times stay close to it.
    start = time.monotonic()
    session.sweep(start)  # starts the clock instead of cutting at once
    session.sweep(start + IDLE)
    pump(session.map)
    assert session.received_now() is None
    session.sweep(start + IDLE + 0.5)
    pump(session.map, until=lambda: not session.channel_open())
    assert session.client.recv(1024) == NOTICE


def test_client_that_does_not_take_the_notice_is_cut_off(session):
    first = session.channel._last_activity + IDLE + 1
    session.sweep(first)
    assert session.received_now() is None  # the notice is still queued
    session.sweep(first + IDLE)  # not yet a whole timeout since the notice
    assert session.received_now() is None
    session.sweep(first + IDLE + 0.5)
    # Shut down at once, the notice never sent: the client sees the end.
    assert session.client.recv(1024) == b""


def test_tls_client_that_does_not_take_the_notice_is_cut_off(private_map, tmp_path):
    certs = Certificates(tmp_path)
    server_tls, client_tls = tls_socket_pair(certs)
    try:
        session = Session(
            private_map, server_tls, client_tls, ssl_context=certs.server_context()
        )
        assert session.channel.tls_version is not None
        first = session.channel._last_activity + IDLE + 1
        session.sweep(first)
        session.sweep(first + IDLE + 0.5)
        # The plain socket's shutdown, under the TLS layer: the client's
        # TLS connection ends without a close_notify.
        assert client_tls.recv(1024) == b""
        assert session.channel_open()
        pump(private_map, until=lambda: not session.channel_open())
        assert not session.channel_open()
    finally:
        client_tls.close()
        asyncore.close_all(map=private_map, ignore_all=True)


class Clock:
    """time.monotonic() as the test sets it."""

    def __init__(self, now):
        self.now = now

    def monotonic(self):
        return self.now


@pytest.mark.parametrize(
    "idle_timeout,interval",
    [(1.0, 0.5), (10.0, 1.0)],  # half the timeout, at most a second
)
def test_sweeps_are_spaced(private_map, monkeypatch, idle_timeout, interval):
    server = smtpd_compat.SMTPServer(
        ("127.0.0.1", 0), None, map=private_map, idle_timeout=idle_timeout
    )
    sweeps = []
    monkeypatch.setattr(server, "_close_idle_channels", sweeps.append)
    clock = Clock(100.0)
    monkeypatch.setattr(smtpd_compat, "time", clock)
    for now in (
        100.0,
        100.0 + interval * 0.9,
        100.0 + interval,
        100.0 + interval * 1.5,
    ):
        clock.now = now
        assert server.readable()
    assert sweeps == [100.0, 100.0 + interval]


def test_accepting_resumes_when_the_pause_ends(private_map, monkeypatch):
    server = smtpd_compat.SMTPServer(("127.0.0.1", 0), None, map=private_map)
    server._accept_paused_until = 50.0  # as after EMFILE
    clock = Clock(49.9)
    monkeypatch.setattr(smtpd_compat, "time", clock)
    assert not server.readable()
    clock.now = 50.0
    assert server.readable()
