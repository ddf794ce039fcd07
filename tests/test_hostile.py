"""Hostile sessions against a real server on 127.0.0.1.

Every case is one client session that misbehaves in some way: random or
adversarial bytes, control characters, bare CR or LF line ends, endless
lines, pipelined garbage, a valid session cut at every byte, a message far
beyond the size limit, a disconnect or half-close in each protocol state, a
client that never reads its replies.  The cases are generated below and
each runs against a fresh server.  For every one of them:

* no exception reaches the channel's or the server's error handling
  (``WatchedServer`` records any such report and the test fails on it);
* every reply line the client got is well formed (three digits, space or
  hyphen, printable text, CRLF), as a line-reading client would split it;
* the connection is cleaned up on the server side, and afterwards the same
  server delivers a message sent with smtplib;
* case-specific expectations (replies, what was or was not delivered).

The biggest streams (10 MB lines, 100 MB of DATA) are marked ``slow``; the
normal run has 1 MB and 5 MB versions of them.
"""

import random
import select
import socket
import struct
import time

import pytest
from conftest import TIMEOUT, wait_for
from robustness_support import (
    WatchedServer,
    assert_no_unexpected_errors,
    check_fresh_delivery,
    parse_replies,
    quick_servers,
    read_until_closed,
)

MB = 1 << 20

#: Commands that put a session into each protocol state, and the replies
#: they get (the greeting is read first).
STATE_PREFIXES = {
    "greeting": b"",
    "after-helo": b"EHLO hostile\r\n",
    "after-mail": b"EHLO hostile\r\nMAIL FROM:<a@example.com>\r\n",
    "after-rcpt": b"EHLO hostile\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
    "mid-data": b"EHLO hostile\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
    b"DATA\r\nSubject: partial\r\n\r\nsome text\r\n",
}
STATES = list(STATE_PREFIXES)

#: How the client ends a session:
#: quit        finish any open line and message, send QUIT, read up to EOF;
#: eof         the payload ends the session itself (QUIT): read up to EOF;
#: half-close  shutdown(SHUT_WR), then read until the server closes;
#: close       close the socket without reading further;
#: reset       close with SO_LINGER 0, so the server gets a RST.
ENDINGS = ["quit", "half-close", "close", "reset"]

#: Bytes that end whatever the payload left open: a line, then a message.
FINISH_OPEN_INPUT = b"\r\n.\r\n"

VALID_SESSION = (
    b"EHLO split\r\n"
    b"MAIL FROM:<a@example.com>\r\n"
    b"RCPT TO:<b@example.com>\r\n"
    b"DATA\r\n"
    b"Subject: s\r\n\r\nbody\r\n..dot\r\n.\r\n"
    b"QUIT\r\n"
)
VALID_SESSION_CODES = [220, 250, 250, 250, 354, 250, 221]


class Case:
    """One hostile session.

    ``payload`` is a callable returning an iterable of byte chunks (so that
    100 MB streams are never held in memory) and ``SERVER_READ`` marks
    (wait until the server has read everything sent so far, so that what
    follows reaches it in a read of its own).  ``expect`` is called with (reply codes, deliveries of this
    session) for case-specific checks.
    """

    def __init__(
        self,
        name,
        payload,
        state="after-helo",
        ending="quit",
        read_replies=True,
        server_options=None,
        expect=None,
        marks=(),
    ):
        self.name = name
        self.payload = payload
        self.state = state
        self.ending = ending
        self.read_replies = read_replies
        self.server_options = server_options or {}
        self.expect = expect
        self.marks = marks

    def param(self):
        return pytest.param(self, id=self.name, marks=list(self.marks))


#: In a payload: wait until the server has read all that was sent before.
SERVER_READ = object()


def fixed(data):
    return lambda: [data]


def repeated(block, total):
    """A payload of ``total`` bytes made of ``block`` repeated, in 64 KiB chunks."""

    def chunks():
        piece = block * max(1, (1 << 16) // len(block))
        left = total
        while left > 0:
            yield piece[:left]
            left -= len(piece)

    return chunks


def then(*payloads):
    """Payloads one after the other."""

    def chunks():
        for payload in payloads:
            yield from payload()

    return chunks


# -- expectations ------------------------------------------------------------


def delivers_nothing(codes, deliveries):
    assert deliveries == []


def replies_include(*wanted):
    def expect(codes, deliveries):
        for code in wanted:
            assert code in codes, "no %d reply in %r" % (code, codes[:50])

    return expect


def refused_as_too_big(codes, deliveries):
    assert 552 in codes
    assert deliveries == []


def valid_session_worked(codes, deliveries):
    assert codes == VALID_SESSION_CODES
    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert (delivery.mailfrom, delivery.rcpttos) == ("a@example.com", ["b@example.com"])
    assert delivery.data == b"Subject: s\n\nbody\n.dot"


def all_noops_answered(count):
    def expect(codes, deliveries):
        assert codes.count(250) >= count

    return expect


# -- the cases ---------------------------------------------------------------


def random_byte_cases():
    cases = []
    for seed in range(24):
        rng = random.Random(seed)
        size = rng.choice([1, 7, 64, 500, 4096, 65536])
        data = bytes(rng.getrandbits(8) for _ in range(size))
        state = STATES[seed % len(STATES)]
        ending = ENDINGS[(seed // len(STATES)) % len(ENDINGS)]
        cases.append(
            Case(
                "random-seed%d-%dB-%s-%s" % (seed, size, state, ending),
                fixed(data),
                state,
                ending,
            )
        )
    # Random lines: printable junk and SMTP-looking words, pipelined.
    words = [
        b"HELO",
        b"MAIL",
        b"RCPT",
        b"DATA",
        b"FROM:",
        b"TO:",
        b"<",
        b">",
        b"@",
        b".",
    ]
    for seed in range(6):
        rng = random.Random(1000 + seed)
        lines = []
        for _ in range(300):
            parts = [rng.choice(words) for _ in range(rng.randint(0, 4))]
            parts.append(
                bytes(rng.randint(0x21, 0x7E) for _ in range(rng.randint(0, 20)))
            )
            lines.append(b" ".join(parts))
        data = b"\r\n".join(lines) + b"\r\n"
        state = STATES[seed % len(STATES)]
        cases.append(Case("random-lines-seed%d-%s" % (seed, state), fixed(data), state))
    return cases


def control_character_cases():
    """Every C0 control character and DEL, inside a command verb."""
    cases = []
    for code in list(range(0x20)) + [0x7F]:
        if code in (0x0A, 0x0D):
            continue  # line ends have cases of their own
        char = bytes([code])
        cases.append(
            Case("ctrl-0x%02x-in-verb" % code, fixed(b"NO" + char + b"OP\r\n"))
        )
    cases += [
        Case("nul-line", fixed(b"\x00" * 100 + b"\r\n")),
        Case("nul-in-helo-arg", fixed(b"HELO a\x00b\r\n"), state="greeting"),
        Case("nul-in-address", fixed(b"MAIL FROM:<a\x00b@example.com>\r\n")),
        Case("ctrl-in-vrfy", fixed(b"VRFY \x01\x02\x1b[31m\r\n")),
        Case("escape-sequence-verb", fixed(b"\x1b[2J\x1b[H\r\n")),
        Case("del-only-line", fixed(b"\x7f\r\n")),
        Case("nul-in-data", fixed(b"\x00\x00\r\n\x00.\x00\r\n"), state="mid-data"),
        Case("high-bytes-verb", fixed(bytes(range(0x80, 0x100)) + b"\r\n")),
        Case("invalid-utf8-address", fixed(b"MAIL FROM:<\xc3\x28@example.com>\r\n")),
        Case(
            "overlong-utf8-slash",
            fixed(b"RCPT TO:<\xc0\xaf@example.com>\r\n"),
            "after-mail",
        ),
        Case("utf8-surrogate-bytes", fixed(b"HELP \xed\xa0\x80\r\n")),
        Case("utf8-bom-command", fixed(b"\xef\xbb\xbfNOOP\r\n")),
        Case(
            "utf8-verb-with-smtputf8",
            fixed(b"MAIL FROM:<a@example.com> SMTPUTF8\r\n\xc3\x89HLO x\r\n"),
            server_options={"enable_SMTPUTF8": True},
        ),
        Case(
            "undecodable-data-decode-data",
            fixed(b"\xff\xfe\r\n.\r\n"),
            state="mid-data",
            server_options={"decode_data": True},
            expect=replies_include(554),
        ),
    ]
    return cases


def line_ending_cases():
    session = [
        b"HELO x",
        b"MAIL FROM:<a@example.com>",
        b"RCPT TO:<b@example.com>",
        b"NOOP",
    ]
    cases = []
    for name, end in [("bare-lf", b"\n"), ("bare-cr", b"\r"), ("lf-cr", b"\n\r")]:
        data = end.join(session) + end
        cases.append(Case("%s-commands" % name, fixed(data), state="greeting"))
        cases.append(
            Case("%s-commands-half-close" % name, fixed(data), "greeting", "half-close")
        )
    cases += [
        Case("cr-cr-lf", fixed(b"NOOP\r\r\n")),
        Case("crlf-crlf-empty-lines", fixed(b"\r\n" * 200)),
        Case("lone-cr-at-end", fixed(b"NOOP\r"), ending="half-close"),
        Case(
            "bare-lf-dot-in-data",
            fixed(b"line\n.\nstill data\r\n.\r\n"),
            state="mid-data",
            expect=replies_include(250),
        ),
        Case(
            "bare-cr-dot-in-data",
            fixed(b"line\r.\rstill data\r\n.\r\n"),
            state="mid-data",
            expect=replies_include(250),
        ),
        Case(
            "dot-lf-only-in-data",
            fixed(b".\n" * 1000),
            state="mid-data",
            ending="reset",
        ),
    ]
    return cases


def long_line_cases():
    cases = []
    for size, label, marks in [(MB, "1MB", ()), (10 * MB, "10MB", (pytest.mark.slow,))]:
        for state in ("greeting", "after-rcpt", "mid-data"):
            for ending in ("quit", "half-close"):
                cases.append(
                    Case(
                        "long-line-%s-no-newline-%s-%s" % (label, state, ending),
                        repeated(b"A", size),
                        state,
                        ending,
                        marks=marks,
                    )
                )
        cases.append(
            Case(
                "long-line-%s-then-noop" % label,
                then(repeated(b"B", size), fixed(b"\r\nNOOP\r\n")),
                expect=replies_include(500, 250),
                marks=marks,
            )
        )
    for length in (511, 512, 513, 1000):
        line = b"NOOP " + b"x" * (length - 5) + b"\r\n"
        cases.append(Case("noop-line-%d-bytes" % length, fixed(line)))
    return cases


def pipelining_cases():
    garbage = random.Random(7)
    junk = b"".join(
        bytes(garbage.randint(0x20, 0x7E) for _ in range(garbage.randint(1, 80)))
        + b"\r\n"
        for _ in range(2000)
    )
    transaction = (
        b"MAIL FROM:<p@example.com>\r\nRCPT TO:<q@example.com>\r\nDATA\r\nhi\r\n.\r\n"
    )
    return [
        Case("pipelined-junk-2000-lines", fixed(junk)),
        Case(
            "pipelined-junk-then-mail",
            fixed(junk + transaction),
            expect=replies_include(250),
        ),
        Case(
            "pipelined-10000-noops",
            fixed(b"NOOP\r\n" * 10000),
            expect=all_noops_answered(10000),
        ),
        Case("pipelined-help-flood", fixed(b"HELP MAIL\r\n" * 20000)),
        Case(
            "commands-after-quit-ignored",
            fixed(b"QUIT\r\n" + transaction * 5),
            ending="eof",
            expect=delivers_nothing,
        ),
        Case("rset-storm", fixed(b"RSET\r\n" * 5000)),
        Case("ehlo-storm", fixed(b"EHLO a\r\n" * 5000), state="greeting"),
        Case(
            "rcpt-flood",
            fixed(b"RCPT TO:<r@example.com>\r\n" * 20000),
            state="after-mail",
        ),
    ]


def split_session_cases():
    """The valid session in two writes, split at every byte boundary."""
    cases = []
    for cut in range(1, len(VALID_SESSION)):
        payload = fixed_parts(VALID_SESSION[:cut], SERVER_READ, VALID_SESSION[cut:])
        cases.append(
            Case(
                "split-at-byte-%02d" % cut,
                payload,
                state="greeting",
                ending="eof",
                expect=valid_session_worked,
            )
        )
    cases.append(
        Case(
            "one-byte-per-write",
            fixed_parts(
                *[
                    part
                    for byte in VALID_SESSION
                    for part in (bytes([byte]), SERVER_READ)
                ]
            ),
            state="greeting",
            ending="eof",
            expect=valid_session_worked,
        )
    )
    return cases


def fixed_parts(*parts):
    return lambda: list(parts)


def oversized_data_cases():
    return [
        Case(
            "data-5MB-over-1MB-limit",
            then(repeated(b"0123456789abcdef\r\n", 5 * MB), fixed(b"\r\n.\r\n")),
            state="mid-data",
            server_options={"data_size_limit": MB},
            expect=refused_as_too_big,
        ),
        Case(
            "data-100MB-over-1MB-limit",
            then(repeated(b"0123456789abcdef\r\n", 100 * MB), fixed(b"\r\n.\r\n")),
            state="mid-data",
            server_options={"data_size_limit": MB},
            expect=refused_as_too_big,
            marks=(pytest.mark.slow,),
        ),
        Case(
            "data-5MB-one-line-over-1MB-limit",
            then(repeated(b"z", 5 * MB), fixed(b"\r\n.\r\n")),
            state="mid-data",
            server_options={"data_size_limit": MB, "decode_data": True},
            expect=refused_as_too_big,
        ),
    ]


def disconnect_cases():
    """Every way of leaving, in every state; a cut message is never delivered."""
    cases = []
    for state in STATES:
        for ending in ("half-close", "close", "reset"):
            cases.append(
                Case(
                    "leave-%s-%s" % (state, ending),
                    fixed(b""),
                    state,
                    ending,
                    expect=delivers_nothing,
                )
            )
    cases += [
        Case("leave-mid-line-reset", fixed(b"MAIL FROM:<a@exa"), ending="reset"),
        Case(
            "leave-mid-end-marker",
            fixed(b"\r\n."),
            "mid-data",
            "reset",
            expect=delivers_nothing,
        ),
        Case("leave-before-greeting", fixed(b""), "no-greeting", "reset"),
        Case(
            "half-close-before-greeting",
            fixed(b"EHLO x\r\n"),
            "no-greeting",
            "half-close",
        ),
    ]
    return cases


def never_reading_cases():
    """Clients that send and send and never read a reply."""
    return [
        Case(
            "never-reads-noops-reset",
            repeated(b"NOOP\r\n", 8 * MB),
            "after-helo",
            "reset",
            False,
        )
    ] + [
        Case(
            "never-reads-help-%s" % ending,
            repeated(b"HELP\r\n", 8 * MB),
            ending=ending,
            read_replies=False,
        )
        for ending in ("close", "reset")
    ]


ALL_CASES = (
    random_byte_cases()
    + control_character_cases()
    + line_ending_cases()
    + long_line_cases()
    + pipelining_cases()
    + split_session_cases()
    + oversized_data_cases()
    + disconnect_cases()
    + never_reading_cases()
)


# -- running a case ----------------------------------------------------------


@pytest.fixture
def serve():
    """Like conftest's ``serve``, with a loop thread that stops at once."""
    yield from quick_servers()


#: How long a client that does not read its replies keeps trying to send
#: once the server has stopped taking its bytes.  (A client that reads
#: expects the server to take everything: for it, only a far longer
#: standstill counts, so that a slow machine is not taken for a stall.)
NOT_READING_PATIENCE = 0.5
READING_PATIENCE = 3 * TIMEOUT


def exchange(sock, chunks, read_replies, bytes_read, already_sent):
    """Send every chunk, collecting what the server sends.

    ``bytes_read`` is the server's ByteCounter, for the SERVER_READ marks;
    ``already_sent`` the number of bytes the client sent before.
    Returns (received bytes, outcome): 'sent', 'closed' when the server
    closed the connection, or 'stalled' when it took nothing for a while
    (expected only of a client that does not read).
    """
    stall_limit = READING_PATIENCE if read_replies else NOT_READING_PATIENCE
    received = bytearray()
    sock.setblocking(False)
    sent_total = already_sent
    for chunk in chunks:
        if chunk is SERVER_READ:
            assert bytes_read.wait_for(sent_total), "the server did not read it all"
            continue
        pending = memoryview(chunk)
        last_progress = time.monotonic()
        while pending:
            readers = [sock] if read_replies else []
            readable, writable, _ = select.select(readers, [sock], [], 0.1)
            if readable:
                try:
                    data = sock.recv(1 << 16)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return received, "closed"
                received += data
            if writable:
                try:
                    sent = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    return received, "closed"
                pending = pending[sent:]
                sent_total += sent
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_limit:
                return received, "stalled"
    return received, "sent"


def enter_state(sock, state):
    """Send the commands leading to ``state``; return the replies received."""
    if state == "no-greeting":
        return b""
    prefix = STATE_PREFIXES[state]
    sock.sendall(prefix)
    # One reply per command line (none for the message text after DATA),
    # plus the greeting.
    commands = prefix.partition(b"DATA\r\n")
    wanted = 1 + (commands[0] + commands[1]).count(b"\r\n")
    received = b""
    deadline = time.monotonic() + TIMEOUT
    while len(parse_replies(received, allow_partial_tail=True)) < wanted:
        assert time.monotonic() < deadline, "no replies to %r: %r" % (prefix, received)
        data, how = read_until_closed(
            sock, limit=1, timeout=deadline - time.monotonic()
        )
        received += data
        assert how != "eof", "server closed while entering %s" % state
    return received


def end_session(sock, ending):
    """End the session as ``ending`` says; return (bytes read, how it ended)."""
    sock.setblocking(True)
    sock.settimeout(TIMEOUT)
    if ending in ("quit", "eof"):
        if ending == "quit":
            sock.sendall(FINISH_OPEN_INPUT + b"QUIT\r\n")
        return read_until_closed(sock, timeout=3 * TIMEOUT)
    if ending == "half-close":
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock, timeout=3 * TIMEOUT)
    if ending == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return b"", ending


@pytest.mark.parametrize("case", [case.param() for case in ALL_CASES])
def test_hostile_session(serve, case):
    server = serve(WatchedServer, use_poll=True, **case.server_options)
    address = server.socket.getsockname()[:2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if not case.read_replies:
        # A small receive window: the server's replies back up sooner.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        received = enter_state(sock, case.state)
        before = len(server.deliveries)
        data, outcome = exchange(
            sock,
            case.payload(),
            case.read_replies,
            server.bytes_read,
            len(STATE_PREFIXES.get(case.state, b"")),
        )
        received += data
        if case.read_replies and case.ending != "eof":
            # Only QUIT (in the payload: ending "eof") lets the server hang up.
            assert outcome == "sent", "server closed or stopped reading: %s" % outcome
        rest, how = end_session(sock, case.ending)
        received += rest
    finally:
        sock.close()

    # Replies: well formed; complete unless the session was cut short.
    strict = case.ending in ("quit", "eof") and outcome == "sent"
    utf8 = case.server_options.get("enable_SMTPUTF8", False)
    replies = parse_replies(received, utf8=utf8, allow_partial_tail=not strict)
    codes = [int(reply[-1][:3]) for reply in replies]
    if case.state != "no-greeting":
        assert codes[:1] == [220]
    if strict:
        assert how == "eof"
        assert codes[-1] == 221
    elif case.ending == "half-close":
        assert how == "eof", "the server did not close after the client's EOF"

    # The server let go of the connection and still works.
    assert wait_for(lambda: len(server._map) == 1), "connection left open on the server"
    assert_no_unexpected_errors(server)
    session_deliveries = server.deliveries[before:]
    if case.expect is not None:
        case.expect(codes, session_deliveries)
    check_fresh_delivery(server)
    assert wait_for(lambda: len(server._map) == 1)
    assert_no_unexpected_errors(server)


def test_enough_cases():
    """The battery is as big as promised: 150 distinct sessions or more."""
    names = [case.name for case in ALL_CASES]
    assert len(set(names)) == len(names)
    assert len([c for c in ALL_CASES if not c.marks]) >= 150
