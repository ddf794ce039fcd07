"""The asynchat layer: smtpd_compat.asynchat.async_chat / simple_producer."""

import select
import socket
import struct
import time
from collections import deque

import pytest
from conftest import GREETING, TIMEOUT, RecordingServer, pump, server_address

import smtpd_compat
from smtpd_compat import asynchat, asyncore


class Collector(asynchat.async_chat):
    """Records every chunk and every complete item."""

    def __init__(self, sock, sock_map, terminator=b"\r\n"):
        asynchat.async_chat.__init__(self, sock, map=sock_map)
        self.chunks = []
        self.items = []
        self.terminators_seen = []
        self.next_terminators = []
        self.reads = 0
        self.set_terminator(terminator)

    def handle_read(self):
        self.reads += 1
        asynchat.async_chat.handle_read(self)

    def collect_incoming_data(self, data):
        self.chunks.append(data)

    def found_terminator(self):
        self.terminators_seen.append(self.get_terminator())
        self.items.append(b"".join(self.chunks))
        self.chunks = []
        if self.next_terminators:
            self.set_terminator(self.next_terminators.pop(0))


@pytest.fixture
def chat(private_map, sockpair):
    return Collector(sockpair[0], private_map)


@pytest.fixture
def peer(sockpair):
    return sockpair[1]


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_to_eof(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def drain(sock, sock_map, size, timeout=TIMEOUT):
    """Pump ``sock_map`` while reading ``size`` bytes from ``sock``."""
    deadline = time.monotonic() + timeout
    parts = []
    got = 0
    sock.settimeout(0.01)
    try:
        while got < size and time.monotonic() < deadline:
            asyncore.loop(timeout=0.01, count=1, map=sock_map)
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    finally:
        sock.settimeout(TIMEOUT)
    return b"".join(parts)


def test_class_attributes():
    assert asynchat.async_chat.ac_in_buffer_size == 65536
    assert asynchat.async_chat.ac_out_buffer_size == 65536
    assert asynchat.async_chat.use_encoding == 0
    assert asynchat.async_chat.encoding == "latin-1"


def test_is_a_dispatcher(chat):
    assert issubclass(asynchat.async_chat, asyncore.dispatcher)
    assert isinstance(chat, asyncore.dispatcher)


def test_registered_in_private_map(chat, private_map):
    assert private_map[chat.socket.fileno()] is chat


def test_bytes_terminator(chat, peer, private_map):
    peer.sendall(b"one\r\ntwo\r\nthr")
    pump(private_map, until=lambda: len(chat.items) == 2)
    assert chat.items == [b"one", b"two"]
    peer.sendall(b"ee\r\n")
    pump(private_map, until=lambda: len(chat.items) == 3)
    assert chat.items == [b"one", b"two", b"three"]


def test_terminator_split_across_reads(chat, peer, private_map):
    peer.sendall(b"abc\r")
    pump(private_map, until=lambda: chat.chunks)
    pump(private_map)
    assert chat.items == []
    # The possible start of the terminator is held back.
    assert b"".join(chat.chunks) == b"abc"
    peer.sendall(b"\ndef\r\n")
    pump(private_map, until=lambda: len(chat.items) == 2)
    assert chat.items == [b"abc", b"def"]


def test_read_of_only_a_terminator_start_collects_nothing(chat, peer, private_map):
    # As asynchat did: no empty piece for the collector.
    peer.sendall(b"\r")
    assert pump(private_map, until=lambda: chat.reads == 1)
    assert chat.chunks == []
    peer.sendall(b"\n")
    assert pump(private_map, until=lambda: chat.items)
    assert chat.items == [b""]
    assert chat.chunks == []


def test_large_read_with_one_terminator_at_its_start(chat, peer, private_map):
    # More than 4 KiB after the terminator, and no other: a large read is
    # searched from its end first; the terminator at index 0 still counts.
    tail = b"x" * 5000
    peer.sendall(b"\r\n" + tail)
    assert pump(private_map, until=lambda: chat.reads == 1)
    assert chat.items == [b""]
    assert b"".join(chat.chunks) == tail


def test_long_terminator_byte_by_byte(private_map, sockpair):
    left, right = sockpair
    chat = Collector(left, private_map, terminator=b"\r\n.\r\n")
    payload = b"line one\r\n.not end\r\nline\r\r\n.\r\nafter"
    for i in range(len(payload)):
        reads = chat.reads
        right.sendall(payload[i : i + 1])
        # one read per byte: the terminator really arrives in pieces
        assert pump(private_map, until=lambda before=reads: chat.reads > before)
    assert chat.reads == len(payload)
    assert chat.items == [b"line one\r\n.not end\r\nline\r"]
    pump(private_map, until=lambda: b"".join(chat.chunks) == b"after")
    assert b"".join(chat.chunks) == b"after"


def test_empty_items(chat, peer, private_map):
    peer.sendall(b"\r\n\r\nx\r\n")
    pump(private_map, until=lambda: len(chat.items) == 3)
    assert chat.items == [b"", b"", b"x"]


def test_int_terminator(chat, peer, private_map):
    chat.set_terminator(5)
    chat.next_terminators.append(b"\n")
    peer.sendall(b"abc")
    pump(private_map, until=lambda: chat.get_terminator() == 2)
    assert chat.get_terminator() == 2
    assert chat.items == []
    peer.sendall(b"defgh\nij\n")
    pump(private_map, until=lambda: len(chat.items) == 3)
    assert chat.items == [b"abcde", b"fgh", b"ij"]
    # When the count is reached the terminator has counted down to zero.
    assert chat.terminators_seen == [0, b"\n", b"\n"]


def test_int_terminator_exact(chat, peer, private_map):
    chat.set_terminator(4)
    chat.next_terminators.append(3)
    peer.sendall(b"1234567")
    pump(private_map, until=lambda: len(chat.items) == 2)
    assert chat.items == [b"1234", b"567"]


def test_none_terminator_collects_everything(chat, peer, private_map):
    chat.set_terminator(None)
    assert chat.get_terminator() is None
    peer.sendall(b"a\r\nb\r\n.\r\n")
    pump(private_map, until=lambda: b"".join(chat.chunks) == b"a\r\nb\r\n.\r\n")
    assert b"".join(chat.chunks) == b"a\r\nb\r\n.\r\n"
    assert chat.items == []


def test_none_terminator_keeps_reading(chat, peer):
    """With no terminator each read is collected whole, the buffer is left
    empty, and the channel goes on reading."""
    chat.set_terminator(None)
    for data in (b"a\r\n", b"b"):
        peer.sendall(data)
        chat.handle_read()
        assert chat.ac_in_buffer == b""
    assert chat.chunks == [b"a\r\n", b"b"]
    assert chat.connected


def test_initial_terminator_counts_once_at_the_start(chat, peer):
    """The second terminator an SMTP channel sets for DATA (".\r\n") ends
    an item only at the very start of the input; after that only the
    terminator itself does."""
    chat.set_terminator(b"\r\n.\r\n")
    chat._initial_terminator = b".\r\n"
    peer.sendall(b".\r\nabc\r\n.\r\n.\r\nx\r\n.\r\n")
    chat.handle_read()
    assert chat.items == [b"", b"abc", b".\r\nx"]
    assert chat._initial_terminator is None
    # Setting a terminator forgets one that has not been met yet.
    chat._initial_terminator = b".\r\n"
    chat.set_terminator(b"\n")
    assert chat._initial_terminator is None
    peer.sendall(b".\r\n")
    chat.handle_read()
    assert chat.items[3:] == [b".\r"]


def test_set_get_terminator(chat):
    assert chat.get_terminator() == b"\r\n"
    for value in (b"\n", b"END", 0, 17, None):
        chat.set_terminator(value)
        assert chat.get_terminator() == value


def test_negative_int_terminator(chat):
    with pytest.raises(
        ValueError, match="^the number of received bytes must be positive$"
    ):
        chat.set_terminator(-1)


def test_text_with_use_encoding(private_map, sockpair):
    """With use_encoding, a text terminator and text from recv() are
    encoded; bytes and counts are taken as they are."""

    class TextReader(Collector):
        def recv(self, buffer_size):
            return Collector.recv(self, buffer_size).decode("latin-1")

    left, right = sockpair
    chat = TextReader(left, private_map)
    chat.use_encoding = 1
    chat.set_terminator(";")
    assert chat.get_terminator() == b";"
    chat.set_terminator(b"\r\n")
    assert chat.get_terminator() == b"\r\n"
    chat.set_terminator(3)
    assert chat.get_terminator() == 3
    chat.set_terminator("\u00e9")
    right.sendall(b"caf\xe9")
    pump(private_map, until=lambda: chat.items)
    assert chat.items == [b"caf"]
    # Without use_encoding a text terminator is kept as text.
    chat.use_encoding = 0
    chat.set_terminator(";")
    assert chat.get_terminator() == ";"


def test_bytes_read_with_use_encoding(chat, peer, private_map):
    chat.use_encoding = 1
    peer.sendall(b"one\r\n")
    pump(private_map, until=lambda: chat.items)
    assert chat.items == [b"one"]


def test_none_terminator_after_an_item_in_the_same_read(chat, peer, private_map):
    chat.next_terminators.append(None)
    peer.sendall(b"abc\r\nrest")
    pump(private_map, until=lambda: chat.chunks)
    assert chat.items == [b"abc"]
    assert chat.chunks == [b"rest"]


def test_empty_items_collect_nothing(chat, peer, private_map):
    collected = []

    def collect(data):
        collected.append(data)
        Collector.collect_incoming_data(chat, data)

    chat.collect_incoming_data = collect
    peer.sendall(b"\r\n\r\nx\r\n")
    pump(private_map, until=lambda: len(chat.items) == 3)
    assert chat.items == [b"", b"", b"x"]
    assert collected == [b"x"]


def test_input_is_handled_while_the_backlog_is_at_the_limit(chat, peer, private_map):
    """Reading stops only once the output waiting is *over* the limit."""
    chat.send = lambda data: 0  # a full socket
    chat.push(b"x" * 100)
    chat.ac_out_pending_limit = 100 + asynchat._ITEM_COST
    peer.sendall(b"a\r\nb\r\n")
    pump(private_map, until=lambda: len(chat.items) == 2)
    assert chat.items == [b"a", b"b"]


@pytest.mark.parametrize("value", ["text", 5, None, [b"x"]])
def test_push_requires_bytes(chat, value):
    with pytest.raises(TypeError) as info:
        chat.push(value)
    # asynchat's arguments: the message and the type, not formatted
    assert info.value.args == ("data argument must be byte-ish (%r)", type(value))


def test_push_sends_at_once(chat, peer):
    # Without waiting for the loop: what the socket takes leaves now.
    chat.push(b"hello")
    assert recv_exactly(peer, 5) == b"hello"
    assert not chat.writable()
    # ... also a piece of exactly ac_out_buffer_size bytes.
    chat.ac_out_buffer_size = 5
    chat.push(b"world")
    assert recv_exactly(peer, 5) == b"world"
    assert not chat.writable()


@pytest.mark.parametrize("value", [b"abc", bytearray(b"abc"), memoryview(b"abc")])
def test_push_bytes_like(chat, peer, private_map, value):
    chat.push(value)
    pump(private_map, until=lambda: not chat.writable())
    assert recv_exactly(peer, 3) == b"abc"


def test_push_large(chat, peer, private_map):
    data = bytes(range(256)) * 1024  # 256 KiB, more than ac_out_buffer_size
    chat.push(data)
    received = drain(peer, private_map, len(data))
    assert received == data


def test_simple_producer_chunks():
    producer = asynchat.simple_producer(b"abcdefghij", buffer_size=4)
    assert [producer.more() for _ in range(4)] == [b"abcd", b"efgh", b"ij", b""]


def test_simple_producer_default_size():
    data = b"x" * 1300
    producer = asynchat.simple_producer(data)
    chunks = []
    while True:
        chunk = producer.more()
        if not chunk:
            break
        chunks.append(chunk)
    assert b"".join(chunks) == data
    # asynchat's default piece size: 512 bytes
    assert [len(chunk) for chunk in chunks] == [512, 512, 276]


def test_push_with_producer(chat, peer, private_map):
    data = b"0123456789" * 100
    chat.push_with_producer(asynchat.simple_producer(data, buffer_size=7))
    # read while pumping: many tiny sends can fill a socketpair's buffer
    assert drain(peer, private_map, len(data)) == data
    pump(private_map, until=lambda: not chat.writable())
    assert not chat.writable()


def test_push_and_producer_keep_order(chat, peer, private_map):
    chat.push(b"first;")
    chat.push_with_producer(asynchat.simple_producer(b"second;", buffer_size=2))
    chat.push(b"third")
    assert drain(peer, private_map, 18) == b"first;second;third"


def test_close_when_done(chat, peer, private_map):
    chat.push(b"goodbye\r\n")
    chat.close_when_done()
    pump(private_map, until=lambda: not private_map)
    assert not private_map
    assert recv_to_eof(peer) == b"goodbye\r\n"


def test_close_when_done_after_producer(chat, peer, private_map):
    data = b"z" * 5000
    chat.push_with_producer(asynchat.simple_producer(data, buffer_size=100))
    chat.close_when_done()
    received = drain(peer, private_map, len(data))
    pump(private_map, until=lambda: not private_map)
    assert not private_map
    assert received + recv_to_eof(peer) == data


BIG = b"q" * (16 * 1024 * 1024)


def test_discard_buffers(chat, peer, private_map):
    chat.set_terminator(b"\n")
    peer.sendall(b"partial")
    pump(private_map, until=lambda: chat.chunks or chat.ac_in_buffer)
    # Far more than the socket buffers hold: most of it stays queued.
    chat.push(BIG)
    assert chat.writable()
    chat.discard_buffers()
    assert chat.ac_in_buffer == b""
    assert not chat.writable()
    pump(private_map)
    peer.setblocking(False)
    received = 0
    try:
        while True:
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
    except BlockingIOError:
        pass
    assert received < len(BIG)


def test_readable_writable(chat, peer, private_map):
    assert chat.readable()
    assert not chat.writable()
    chat.push(BIG)
    assert chat.writable()
    assert len(drain(peer, private_map, len(BIG))) == len(BIG)
    assert not chat.writable()
    assert chat.readable()


def test_peer_close_calls_handle_close(chat, peer, private_map):
    peer.sendall(b"tail")
    peer.close()
    pump(private_map, until=lambda: not private_map)
    assert not private_map
    assert b"".join(chat.chunks) == b"tail"


def test_abstract_methods():
    chat = asynchat.async_chat()
    message = "^must be implemented in subclass$"  # asynchat's message
    try:
        with pytest.raises(NotImplementedError, match=message):
            chat.collect_incoming_data(b"x")
        with pytest.raises(NotImplementedError, match=message):
            chat.found_terminator()
    finally:
        chat.close()


def test_collect_helpers(private_map, sockpair):
    class Simple(asynchat.async_chat):
        def __init__(self, sock, sock_map):
            asynchat.async_chat.__init__(self, sock, map=sock_map)
            self.set_terminator(b";")
            self.items = []

        def collect_incoming_data(self, data):
            self._collect_incoming_data(data)

        def found_terminator(self):
            self.items.append(self._get_data())

    left, right = sockpair
    chat = Simple(left, private_map)
    right.sendall(b"ab;cd;")
    pump(private_map, until=lambda: len(chat.items) == 2)
    assert chat.items == [b"ab", b"cd"]
    # An item that arrives in two reads is collected twice, joined once.
    right.sendall(b"ef")
    pump(private_map, until=lambda: chat.incoming)
    assert chat.incoming == [b"ef"]
    right.sendall(b"gh;")
    pump(private_map, until=lambda: len(chat.items) == 3)
    assert chat.items == [b"ab", b"cd", b"efgh"]
    assert chat.incoming == []


def test_collector_replacing_ac_in_buffer_mid_read(private_map, sockpair):
    """A collect_incoming_data() that assigns ac_in_buffer while later items
    of the same read wait: the terminator's end, counted from where that
    item began, is cut from the new buffer (what Python's asynchat did)."""

    class Rewinding(Collector):
        saved = None

        def collect_incoming_data(self, data):
            Collector.collect_incoming_data(self, data)
            if self.saved is None:
                self.saved = self.ac_in_buffer  # the whole read: b"a\nbb\ncc\n"
            elif len(self.items) == 1:
                self.ac_in_buffer = self.saved

    left, right = sockpair
    chat = Rewinding(left, private_map, terminator=b"\n")
    right.sendall(b"a\nbb\ncc\n")
    chat.handle_read()
    # "bb" began 2 bytes in and its terminator ends 3 bytes after that:
    # the restored buffer loses its first 3 bytes, leaving "b\ncc\n".
    assert chat.items == [b"a", b"bb", b"b", b"cc"]
    assert chat.ac_in_buffer == b""


def test_int_terminator_after_an_item_in_the_same_read(chat, peer, private_map):
    chat.set_terminator(4)
    chat.next_terminators.append(3)
    # "1234" ends the first item; of the second, "5" has come, 2 bytes to go.
    peer.sendall(b"12345")
    pump(private_map, until=lambda: chat.get_terminator() == 2)
    assert chat.items == [b"1234"]
    assert chat.get_terminator() == 2
    peer.sendall(b"67")
    pump(private_map, until=lambda: len(chat.items) == 2)
    assert chat.items == [b"1234", b"567"]


def test_push_with_producer_sends_at_once(chat, peer):
    # As push() does: the first piece leaves without waiting for the loop.
    chat.push_with_producer(asynchat.simple_producer(b"hello"))
    assert recv_exactly(peer, 5) == b"hello"


def test_producer_text_is_encoded_with_use_encoding(chat, peer, private_map):
    class Pieces:
        def __init__(self, *pieces):
            self.pieces = list(pieces)

        def more(self):
            return self.pieces.pop(0) if self.pieces else b""

    chat.use_encoding = 1
    chat.encoding = "latin-1"
    chat.push_with_producer(Pieces("caf\u00e9 ", b"bytes stay"))
    assert drain(peer, private_map, 15) == b"caf\xe9 bytes stay"


def test_backlog_counts_bytes_and_an_item_cost_per_piece(chat):
    """readable() turns false once the output waiting to be sent holds
    more than ac_out_pending_limit: its bytes plus a fixed cost for each
    queued piece, producer output included."""
    cost = asynchat._ITEM_COST
    allowances = []  # bytes the socket takes at the next send() calls

    def send(data):
        return min(len(data), allowances.pop(0)) if allowances else 0

    def assert_backlog(size):
        chat.ac_out_pending_limit = size
        assert chat.readable()
        chat.ac_out_pending_limit = size - 1
        assert not chat.readable()

    chat.send = send
    # Sent in full: nothing is left.
    allowances.append(5)
    chat.push(b"start")
    assert not chat.writable()
    # Stalled: a producer's first piece and a push wait.
    chat.push_with_producer(asynchat.simple_producer(b"p" * 200, buffer_size=100))
    chat.push(b"b" * 5000)
    assert_backlog(100 + cost + 5000 + cost)  # the producer itself is free
    # 40 bytes of the first piece leave, then the other 60.
    allowances.append(40)
    chat.initiate_send()
    assert_backlog(60 + cost + 5000 + cost)
    allowances.append(60)
    chat.initiate_send()
    assert_backlog(5000 + cost)
    # The producer's second piece takes their place.
    chat.initiate_send()
    assert_backlog(100 + cost + 5000 + cost)
    # discard_buffers() forgets the backlog with the queue.
    chat.discard_buffers()
    assert not chat.writable()
    chat.push(b"c" * 1000)
    assert_backlog(1000 + cost)
    # An empty piece costs its item until it is dropped.
    chat.push(b"")
    chat.push(b"e" * 10)
    assert_backlog(1000 + cost + cost + 10 + cost)
    allowances.append(1000)
    chat.initiate_send()
    assert_backlog(cost + 10 + cost)
    chat.initiate_send()  # drops the empty piece
    assert_backlog(10 + cost)
    # Data longer than ac_out_buffer_size is queued in pieces of that size,
    # each with its cost.
    chat.ac_out_buffer_size = 1000
    chat.push(b"d" * 2500)
    assert list(chat.producer_fifo)[1:] == [b"d" * 1000, b"d" * 1000, b"d" * 500]
    assert_backlog(10 + cost + 2500 + 3 * cost)


def test_close_drops_output_still_queued(chat, peer):
    # As asyncore's close() did: what the socket has not taken is dropped.
    chat.send = lambda data: 0  # a full socket
    chat.push(b"never sent")
    assert chat.writable()
    chat.close()
    assert recv_to_eof(peer) == b""


def test_queued_text_is_encoded_with_use_encoding(chat, peer):
    # Text put in producer_fifo by hand, as asynchat allowed with use_encoding.
    chat.use_encoding = 1
    chat.producer_fifo.append("caf\u00e9")
    chat.initiate_send()
    assert recv_exactly(peer, 4) == b"caf\xe9"


def test_which_classes_may_batch():
    """Only subclasses of the batching class that override nothing of it
    but commands (and dunders) may batch.  The classes are made here, so
    the answer is computed, not taken from the per-class cache."""
    base = smtpd_compat.SMTPChannel

    class OnlyCommands(base):
        ac_in_buffer_size = 4096  # data, not behaviour

        def __init__(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)

        def smtp_XFOO(self, arg):
            self.push("250 foo")

        def smtp_NOOP(self, arg):  # a command of the base class
            self.push("250 noop")

        def helper(self):  # a new name
            return None

    class MoreCommands(OnlyCommands):
        def smtp_XBAR(self, arg):
            self.push("250 bar")

    class OverridesPush(base):
        def push(self, msg):
            base.push(self, msg)

    class OverridesAProperty(base):
        @property
        def ac_in_buffer(self):
            return b""

    class OverridesBelowCommands(OnlyCommands):
        def found_terminator(self):
            base.found_terminator(self)

    class Unrelated:
        pass

    assert asynchat._adds_only_commands(base, base)
    assert asynchat._adds_only_commands(OnlyCommands, base)
    assert asynchat._adds_only_commands(MoreCommands, base)
    assert not asynchat._adds_only_commands(OverridesPush, base)
    assert not asynchat._adds_only_commands(OverridesAProperty, base)
    assert not asynchat._adds_only_commands(OverridesBelowCommands, base)
    assert not asynchat._adds_only_commands(Unrelated, base)


def test_one_gathered_send_takes_pieces_up_to_the_budget():
    """What one sendmsg() is given: the byte pieces at the head of the
    queue until they reach the budget, never more than _MAX_GATHER, and
    nothing from a producer on."""
    a, b, c = b"a" * 10, b"b" * 10, b"c" * 10
    assert asynchat._gather(deque([a, b, c]), 20) == [a, b]
    assert asynchat._gather(deque([a, b, c]), 11) == [a, b]
    assert asynchat._gather(deque([a, b, c]), 10) == [a]
    assert asynchat._gather(deque([a, b, c]), 31) == [a, b, c]
    producer = asynchat.simple_producer(b"p")
    assert asynchat._gather(deque([a, producer, b]), 100) == [a]
    many = deque([b"x"] * (asynchat._MAX_GATHER + 5))
    assert len(asynchat._gather(many, 1 << 20)) == asynchat._MAX_GATHER


@pytest.mark.parametrize(
    "haystack,needle,expected",
    [
        (b"abc\r", b"\r\n", 1),
        (b"abc", b"\r\n", 0),
        (b"abc\r\n", b"\r\n", 0),
        (b"ab\r\n.", b"\r\n.\r\n", 3),
        (b"ab\r\n.\r", b"\r\n.\r\n", 4),
        (b"\r", b"\r\n", 1),
        (b"", b"\r\n", 0),
    ],
)
def test_find_prefix_at_end(haystack, needle, expected):
    assert asynchat.find_prefix_at_end(haystack, needle) == expected


def test_close_while_batching_sends_the_held_back_replies(private_map):
    """close() in the middle of a batch first sends the replies queued so
    far (as far as the socket takes them without blocking)."""
    server = RecordingServer(("127.0.0.1", 0), None, map=private_map)
    client = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    try:
        asyncore.loop(timeout=TIMEOUT, count=1, map=private_map)  # accept
        (channel,) = [d for d in private_map.values() if d is not server]
        assert channel._ac_batching()
        channel._deferring_send = True  # as while the commands of a read run
        channel.push("250 one")
        channel.push("250 two")
        assert recv_exactly(client, len(GREETING)) == GREETING
        channel.close()
        assert recv_to_eof(client) == b"250 one\r\n250 two\r\n"
    finally:
        client.close()


class SocketWithoutSendmsg(socket.socket):
    """Like an ssl.SSLSocket, it refuses sendmsg()."""

    def sendmsg(self, *args, **kwargs):
        raise OSError("sendmsg() not available")


def test_batched_replies_on_a_socket_without_sendmsg(private_map):
    """Replies batched for one read are sent one by one where the socket's
    sendmsg() is not the kernel's."""
    server = RecordingServer(("127.0.0.1", 0), None, map=private_map)
    client = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    try:
        asyncore.loop(timeout=TIMEOUT, count=1, map=private_map)  # accept
        (channel,) = [d for d in private_map.values() if d is not server]
        plain = channel.socket
        channel.socket = SocketWithoutSendmsg(
            plain.family, plain.type, fileno=plain.detach()
        )
        assert channel._ac_batching()
        assert recv_exactly(client, len(GREETING)) == GREETING
        client.sendall(b"NOOP\r\nNOOP\r\nNOOP\r\n")
        replies = b"250 OK\r\n" * 3
        received = drain(client, private_map, len(replies))
        assert received == replies
        # A piece larger than ac_out_buffer_size goes out in parts.
        large = bytes(range(256)) * 400  # 100 KiB in one producer piece
        channel.push_with_producer(asynchat.simple_producer(large, len(large)))
        assert drain(client, private_map, len(large)) == large
    finally:
        client.close()


def test_batching_channel_sends_producers_and_empty_pieces_at_once(private_map):
    """On a channel that batches, initiate_send() sends all it can at once:
    past empty pieces, and a producer's output too."""
    server = RecordingServer(("127.0.0.1", 0), None, map=private_map)
    client = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    try:
        asyncore.loop(timeout=TIMEOUT, count=1, map=private_map)  # accept
        (channel,) = [d for d in private_map.values() if d is not server]
        assert channel._ac_batching()
        assert recv_exactly(client, len(GREETING)) == GREETING
        channel.push_with_producer(asynchat.simple_producer(b"from a producer\r\n", 4))
        assert recv_exactly(client, 17) == b"from a producer\r\n"
        channel._deferring_send = True  # as while the commands of a read run
        asynchat.async_chat.push(channel, b"")
        asynchat.async_chat.push(channel, b"after an empty piece\r\n")
        channel._deferring_send = False
        channel.initiate_send()
        assert recv_exactly(client, 22) == b"after an empty piece\r\n"
        assert not channel.writable()
    finally:
        client.close()


def test_batching_channel_waits_on_a_full_socket(private_map):
    """Output that fills the socket waits, none of it lost."""
    server = RecordingServer(("127.0.0.1", 0), None, map=private_map)
    client = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    try:
        asyncore.loop(timeout=TIMEOUT, count=1, map=private_map)  # accept
        (channel,) = [d for d in private_map.values() if d is not server]
        assert channel._ac_batching()
        assert recv_exactly(client, len(GREETING)) == GREETING
        # 16 MiB queued at once: more than the socket buffers hold.
        pieces = [bytes([n]) * 65536 for n in range(256)]
        channel._deferring_send = True
        asynchat.async_chat.push(channel, pieces[0])
        asynchat.async_chat.push(channel, b"")
        for piece in pieces[1:]:
            asynchat.async_chat.push(channel, piece)
        channel._deferring_send = False
        channel.initiate_send()
        assert channel.writable()  # the socket is full: the rest waits
        # What waits is counted as its bytes plus a cost per piece.
        fifo = channel.producer_fifo
        backlog = sum(map(len, fifo)) + asynchat._ITEM_COST * len(fifo)
        channel.ac_out_pending_limit = backlog
        assert channel.readable()
        channel.ac_out_pending_limit = backlog - 1
        assert not channel.readable()
        del channel.ac_out_pending_limit
        expected = b"".join(pieces)
        assert drain(client, private_map, len(expected)) == expected
    finally:
        client.close()


def test_gathered_send_to_a_reset_client_closes_quietly(private_map):
    """sendmsg() failing because the client is gone (reset) closes the
    channel as a disconnect does: nothing logged, no exception."""
    server = RecordingServer(("127.0.0.1", 0), None, map=private_map)
    client = socket.create_connection(server.socket.getsockname()[:2], timeout=TIMEOUT)
    asyncore.loop(timeout=TIMEOUT, count=1, map=private_map)  # accept
    (channel,) = [d for d in private_map.values() if d is not server]
    logged = []
    channel.log_info = lambda message, type="info": logged.append(message)
    assert channel._ac_batching()
    assert recv_exactly(client, len(GREETING)) == GREETING
    # SO_LINGER with a zero timeout: close() resets the connection.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    # The reset has arrived when the server's socket turns readable; the
    # channel has not read it (the loop is not run): the send finds it.
    assert select.select([channel.socket], [], [], TIMEOUT)[0]
    channel._deferring_send = True  # as while the commands of a read run
    channel.push("250 one")
    channel.push("250 two")
    channel._deferring_send = False
    channel.initiate_send()
    assert channel not in private_map.values()
    assert logged == []
    # Nothing counts as sent that did not leave.
    assert b"".join(channel.producer_fifo) == b"250 one\r\n250 two\r\n"


class CountingSocket(socket.socket):
    """Counts the system calls that send: send() and sendmsg()."""

    calls = 0

    def send(self, *args, **kwargs):
        type(self).calls += 1
        return socket.socket.send(self, *args, **kwargs)

    def sendmsg(self, *args, **kwargs):
        type(self).calls += 1
        return socket.socket.sendmsg(self, *args, **kwargs)


@pytest.fixture
def counting_session(private_map, monkeypatch):
    """Starts sessions on a RecordingServer whose channels send through a
    CountingSocket; yields a function (channel_class=None) that returns
    (channel, client) once the greeting is read."""
    monkeypatch.setattr(CountingSocket, "calls", 0)
    # This class's sendmsg() is to count as the kernel's own.
    monkeypatch.setattr(asynchat, "_PLAIN_SENDMSG", CountingSocket.sendmsg)
    server = RecordingServer(("127.0.0.1", 0), None, map=private_map)
    clients = []

    def start(channel_class=None):
        if channel_class is not None:
            server.channel_class = channel_class
        client = socket.create_connection(server_address(server), timeout=TIMEOUT)
        clients.append(client)
        asyncore.loop(timeout=TIMEOUT, count=1, map=private_map)  # accept
        (channel,) = [d for d in private_map.values() if d is not server]
        plain = channel.socket
        channel.socket = CountingSocket(plain.family, plain.type, fileno=plain.detach())
        assert recv_exactly(client, len(GREETING)) == GREETING
        CountingSocket.calls = 0
        return channel, client

    yield start
    for client in clients:
        client.close()
    server.close()


def send_one_read(client, channel, data):
    """Send ``data`` and have ``channel`` take it in one handle_read()."""
    client.sendall(data)
    assert select.select([channel.socket], [], [], TIMEOUT)[0]
    channel.handle_read()


@pytest.mark.parametrize("commands", [2, 20])
def test_replies_to_one_read_leave_in_one_system_call(counting_session, commands):
    """The replies to all the commands of one read are sent together, by
    one sendmsg(): what makes pipelining cheap (see benchmarks/)."""
    channel, client = counting_session()
    send_one_read(client, channel, b"NOOP\r\n" * commands)
    assert recv_exactly(client, 8 * commands) == b"250 OK\r\n" * commands
    assert CountingSocket.calls == 1


def test_a_subclass_command_interrupts_the_batch(counting_session):
    """A command a subclass adds runs as with Python's smtpd: what it
    pushes leaves at once.  The replies after it are batched again."""

    class WithXyzzy(smtpd_compat.SMTPChannel):
        def smtp_XYZZY(self, arg):
            self.push("250 nothing happens")
            self.calls_after_push = CountingSocket.calls

    channel, client = counting_session(WithXyzzy)
    assert channel._ac_batching()
    send_one_read(client, channel, b"NOOP\r\nXYZZY\r\nNOOP\r\nNOOP\r\n")
    expected = b"250 OK\r\n250 nothing happens\r\n250 OK\r\n250 OK\r\n"
    assert recv_exactly(client, len(expected)) == expected
    # The first NOOP's reply, then XYZZY's, then the last two together.
    assert channel.calls_after_push == 2
    assert CountingSocket.calls == 3


@pytest.mark.parametrize("where", ["instance", "class"])
def test_push_replaced_later_sends_each_reply_at_once(
    counting_session, monkeypatch, where
):
    """A push() put on a channel, or on SMTPChannel, after its class was
    found fit for batching ends the batching: each reply leaves when it
    is pushed, as the replacement may expect of Python's smtpd."""
    channel, client = counting_session()
    assert channel._ac_batching()  # the class's verdict is now cached
    original = smtpd_compat.SMTPChannel.push
    calls_after_push = []

    def push(self, msg):
        original(self, msg)
        calls_after_push.append(CountingSocket.calls)

    if where == "instance":
        channel.push = lambda msg: push(channel, msg)
    else:
        monkeypatch.setattr(smtpd_compat.SMTPChannel, "push", push)
    send_one_read(client, channel, b"NOOP\r\nNOOP\r\n")
    assert recv_exactly(client, 16) == b"250 OK\r\n" * 2
    assert calls_after_push == [1, 2]


def test_quit_closes_at_the_next_write_event(counting_session):
    """After QUIT the channel stays open until the loop's next write event,
    as with Python's smtpd: handle_close() is not called by the read."""
    channel, client = counting_session()
    assert channel._ac_batching()
    send_one_read(client, channel, b"NOOP\r\nQUIT\r\n")
    assert recv_exactly(client, 17) == b"250 OK\r\n221 Bye\r\n"
    assert channel.connected
    assert list(channel.producer_fifo) == [None]
    assert channel.writable()
    channel.handle_write()
    assert not channel.connected
    assert channel not in channel._map.values()
    assert recv_to_eof(client) == b""
