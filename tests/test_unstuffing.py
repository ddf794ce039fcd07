"""Incremental DATA unstuffing: pieces give what the whole message gives.

A channel that batches its replies unstuffs a message piece by piece as it
arrives (smtpd_compat._protocol.Unstuffer), so the pieces must add up to
what unstuffing the whole message at once gives, wherever a read cuts it:
in a ``CRLF .``, in a CRLF pair, or in the end-of-data mark.
"""

import io
import select
import socket

from conftest import TIMEOUT, DummyServer, RecordingServer, pump
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import smtpd_compat
from smtpd_compat import asyncore
from smtpd_compat._protocol import Unstuffer, unstuff

# Pieces that make the interesting shapes likely: dots at line starts,
# CRLF pairs, bare CRs and LFs, UTF-8.
PIECES = [b".", b"..", b"\r\n", b"\r", b"\n", b"a", b"\r\n.", b"\xc3\xa9", b" "]
contents = st.lists(st.sampled_from(PIECES), max_size=24).map(b"".join)


def cut(data, points):
    """``data`` cut at the given offsets (sorted, duplicates give b"")."""
    offsets = sorted(point % (len(data) + 1) for point in points)
    pieces = []
    start = 0
    for offset in offsets:
        pieces.append(data[start:offset])
        start = offset
    pieces.append(data[start:])
    return pieces


@settings(max_examples=3000, deadline=None, database=None)
@given(contents, st.lists(st.integers(min_value=0), max_size=8))
def test_pieces_unstuff_like_the_whole(content, points):
    unstuffer = Unstuffer()
    for piece in cut(content, points):
        unstuffer.feed(piece)
    assert unstuffer.so_far() == unstuff(content)
    result = unstuffer.finish()
    assert type(result) is bytes
    assert result == unstuff(content)
    # finish() starts over: the next message does not see this one
    unstuffer.feed(b".x\r\n..y")
    assert unstuffer.finish() == b"x\n.y"


def test_examples_cut_at_every_offset():
    for content, expected in [
        (b".a\r\n..b\r\nc.\r\n.", b"a\n.b\nc.\n"),
        (b"a\r\rb\r\n.\r\r\n", b"a\r\rb\n\r\n"),
        (b"\r\n.\r\n.", b"\n\n"),
        (b"x\r", b"x\r"),
        (b"..\r\n..", b".\n."),
    ]:
        assert unstuff(content) == expected
        for first in range(len(content) + 1):
            for second in range(first, len(content) + 1):
                unstuffer = Unstuffer()
                for piece in (
                    content[:first],
                    content[first:second],
                    content[second:],
                ):
                    unstuffer.feed(piece)
                assert unstuffer.finish() == expected, (content, first, second)


def test_many_small_pieces_are_gathered():
    """A byte per read does not cost an object per byte."""
    unstuffer = Unstuffer()
    line = b"0123456789\r\n"
    for byte in line * 2000:
        unstuffer.feed(bytes([byte]))
    assert len(unstuffer._pieces) <= 3
    assert unstuffer.finish() == b"0123456789\n" * 2000


def test_large_pieces_are_kept_without_copying_them_again():
    piece = b"x" * 10000  # no CR, no dot: nothing to change
    unstuffer = Unstuffer()
    unstuffer.feed(piece)
    assert unstuffer.finish() is piece


def test_small_and_large_pieces_stay_in_order():
    """Small pieces after a large one are gathered after it, not before."""
    large = b"L" * 5000 + b"\r\n"
    pieces = [b"a\r\n", b"b\r\n", large, b"c\r\n", b".d\r\n", large, b"e"]
    unstuffer = Unstuffer()
    for piece in pieces:
        unstuffer.feed(piece)
    expected = unstuff(b"".join(pieces))
    assert unstuffer.so_far() == expected
    assert unstuffer.finish() == expected


class UnbatchedChannel(smtpd_compat.SMTPChannel):
    """Overrides a hook, so it gets the pieces Python's smtpd kept."""

    def collect_incoming_data(self, data):
        smtpd_compat.SMTPChannel.collect_incoming_data(self, data)


class UnbatchedServer(RecordingServer):
    channel_class = UnbatchedChannel


def deliver_in_reads(server_class, pieces):
    """Send ``pieces`` to a new channel, each read on its own; return the
    deliveries and everything the client received."""
    sock_map = {}
    server = server_class(("127.0.0.1", 0), None, map=sock_map)
    client = None
    try:
        client = socket.create_connection(
            server.socket.getsockname()[:2], timeout=TIMEOUT
        )
        asyncore.loop(timeout=TIMEOUT, count=1, map=sock_map)  # accept
        (channel,) = [d for d in sock_map.values() if d is not server]
        assert channel._ac_batching() is (server_class is RecordingServer)
        for piece in pieces:
            if not piece:
                continue
            client.sendall(piece)
            # Read this piece alone: wait until it is there, then let the
            # channel read once.
            assert select.select([channel.socket], [], [], TIMEOUT)[0]
            channel.handle_read()
        client.shutdown(socket.SHUT_WR)
        replies = b""
        while True:
            asyncore.loop(timeout=0.01, count=1, map=sock_map)
            ready = select.select([client], [], [], TIMEOUT)[0]
            assert ready, "no reply from the server"
            chunk = client.recv(65536)
            if not chunk:
                break
            replies += chunk
        return server.deliveries, replies
    finally:
        if client is not None:
            client.close()
        asyncore.close_all(map=sock_map, ignore_all=True)


@settings(max_examples=100, deadline=None, database=None)
@given(contents, st.lists(st.integers(min_value=0), max_size=6))
def test_channel_delivers_the_same_wherever_reads_cut(content, points):
    wire = content + b"\r\n.\r\n"
    # The content must not hold the end mark itself (nor start with the
    # ".\r\n" that ends an empty message).
    assume((b"\r\n" + wire).find(b"\r\n.\r\n") == 2 + len(content))
    dialog = b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
    pieces = [dialog, *cut(wire, points), b"QUIT\r\n"]
    for server_class in (RecordingServer, UnbatchedServer):
        deliveries, replies = deliver_in_reads(server_class, pieces)
        assert [d.data for d in deliveries] == [unstuff(content)], server_class
        assert replies.split(b"\r\n")[-3:] == [b"250 OK", b"221 Bye", b""]


def test_message_in_pieces_with_debugstream_in_use(private_map, sockpair, monkeypatch):
    """With DEBUGSTREAM in use the message is kept as sent (for its "Data:"
    line), piece after piece, and still delivered unstuffed."""
    stream = io.StringIO()
    monkeypatch.setattr(smtpd_compat, "DEBUGSTREAM", stream)
    server = DummyServer()
    channel = smtpd_compat.SMTPChannel(server, sockpair[0], ("x", 1), map=private_map)
    assert channel._ac_batching()
    client = sockpair[1]
    client.sendall(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    pump(private_map, until=lambda: channel.smtp_state == channel.DATA)

    def all_read():
        return not select.select([sockpair[0]], [], [], 0)[0]

    for piece in (b"one\r\n", b"..two\r\n", b"three"):  # each read on its own
        client.sendall(piece)
        assert pump(private_map, until=all_read)
    client.sendall(b"\r\n.\r\n")
    pump(private_map, until=lambda: server.deliveries)
    assert [d.data for d in server.deliveries] == [b"one\n.two\nthree"]
    assert "Data: b'one\\r\\n..two\\r\\nthree'\n" in stream.getvalue()


def test_command_lines_are_not_unstuffed(server, connect):
    """Only a message is dot-unstuffed: a command keeps its dots."""
    client = connect(server)
    assert client.cmd("..XYZ") == b'500 Error: command "..XYZ" not recognized\r\n'
