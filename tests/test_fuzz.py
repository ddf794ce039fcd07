"""Property-based fuzzing of one SMTPChannel over a socket pair.

Each example is one SMTP session: a byte stream (random, or built from a
rough SMTP grammar mixed with garbage), cut into arbitrary chunks, fed to a
channel on a private asyncore map, which is pumped until its output
settles.  Then a model of the session is built by walking the client's
bytes and the server's replies side by side, and checked against what the
channel did:

* no exception reached the channel's error handling, except the ones the
  test's own process_message() raises on purpose (which must give 451);
* every reply line is well formed, and every complete command line or
  message got exactly one reply (none after QUIT);
* the state machine agrees with the model: MAIL is accepted only when
  greeted and outside a transaction, RCPT only after MAIL, DATA only with
  recipients; HELO, EHLO, RSET and the end of DATA reset the transaction;
* the messages handed to process_message() are exactly those that got
  ``250`` after ``354``, with the envelope and the (unstuffed) content the
  client sent in that transaction.

The number of examples per test comes from SMTPD_COMPAT_FUZZ_EXAMPLES
(default 100); the ``slow`` tox environment raises it.
"""

import os
import select
import socket

from hypothesis import event, given, settings
from hypothesis import strategies as st
from robustness_support import DeliberateFailure, WatchedChannel, parse_replies

import smtpd_compat
from smtpd_compat import _protocol, asyncore

EXAMPLES = int(os.environ.get("SMTPD_COMPAT_FUZZ_EXAMPLES", "100"))

# No deadline: a session's duration depends on the machine's load (CI runs
# two environments at once), not on the input alone.  No example database:
# every run explores afresh; a failure prints how to reproduce it.
fuzz_settings = settings(max_examples=EXAMPLES, deadline=None, database=None)

#: A message containing this is refused by process_message() with an exception.
FAILURE_MARKER = b"FAIL-HERE"

#: (decode_data, enable_SMTPUTF8) combinations a channel accepts.
MODES = [(False, False), (True, False), (False, True)]
SIZE_LIMITS = [None, 0, 100, smtpd_compat.DATA_SIZE_DEFAULT]


# ---------------------------------------------------------------------------
# Running one session
# ---------------------------------------------------------------------------


class FuzzServer:
    """What a channel needs of its server: process_message() and a log."""

    def __init__(self):
        self.deliveries = []
        self.unexpected = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        if FAILURE_MARKER in raw:
            raise DeliberateFailure("marker in message")
        self.deliveries.append((mailfrom, list(rcpttos), data, kwargs))


class Session:
    """The outcome of feeding one byte stream to a channel."""

    def __init__(self, output, deliveries, unexpected, final_state, violations):
        self.output = output
        self.deliveries = deliveries
        self.unexpected = unexpected
        # None when the channel closed (after QUIT), else a dict of attributes
        self.final_state = final_state
        self.violations = violations


def _channel_state(channel):
    return {
        "smtp_state": channel.smtp_state,
        "mailfrom": channel.mailfrom,
        "rcpttos": list(channel.rcpttos),
        "greeted": bool(channel.seen_greeting),
    }


def _state_violations(channel):
    """Invariants that must hold whenever the channel is idle."""
    problems = []
    if channel.smtp_state not in (channel.COMMAND, channel.DATA):
        problems.append("smtp_state %r" % channel.smtp_state)
    if channel.rcpttos and channel.mailfrom is None:
        problems.append("recipients %r without a sender" % channel.rcpttos)
    if channel.smtp_state == channel.DATA and not channel.rcpttos:
        problems.append("DATA state without recipients")
    return problems


def _drain(client, output):
    while True:
        try:
            chunk = client.recv(1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            return
        output += chunk


def _settle(sock_map, channel, client, output, max_passes=10000):
    """Pump the map until the channel has no input to read and nothing to send."""
    for _ in range(max_passes):
        asyncore.loop(timeout=0, count=1, map=sock_map)
        _drain(client, output)
        if channel._fileno not in sock_map:
            return
        waiting_input = select.select([channel.socket], [], [], 0)[0]
        if not waiting_input and not channel.producer_fifo:
            return
    raise AssertionError("channel did not settle")


def run_session(chunks, decode_data=False, smtputf8=False, size_limit=None):
    """Feed ``chunks`` to a fresh channel; return a Session."""
    server = FuzzServer()
    client, server_side = socket.socketpair()
    sock_map = {}
    output = bytearray()
    violations = []
    try:
        client.setblocking(False)
        channel = WatchedChannel(
            server,
            server_side,
            ("fuzz", 0),
            size_limit,
            sock_map,
            smtputf8,
            decode_data,
        )
        _settle(sock_map, channel, client, output)
        for chunk in chunks:
            view = memoryview(chunk)
            while view and channel._fileno in sock_map:
                try:
                    sent = client.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError:  # the channel closed (QUIT) and the pair with it
                    break
                view = view[sent:]
                _settle(sock_map, channel, client, output)
            if channel._fileno in sock_map:
                violations.extend(_state_violations(channel))
        final_state = _channel_state(channel) if channel._fileno in sock_map else None
    finally:
        asyncore.close_all(map=sock_map, ignore_all=True)
        client.close()
    return Session(
        bytes(output), server.deliveries, server.unexpected, final_state, violations
    )


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def unstuff(content):
    """Remove one leading dot per line and join lines with LF (RFC 5321 4.5.2)."""
    lines = content.split(b"\r\n")
    return b"\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class SessionModel:
    """The session as the client's bytes and the server's replies describe it."""

    def __init__(self, decode_data, size_limit):
        self.decode_data = decode_data
        self.size_limit = size_limit
        self.greeted = False
        self.in_data = False
        self.closed = False
        self.expected_deliveries = []
        self._reset()

    def _reset(self):
        self.mailfrom = None
        self.rcpttos = []
        self.mail_options = []
        self.rcpt_options = []

    def command(self, line, code):
        """Account for one command line and the code of its reply."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            assert code == 500, "undecodable line %r got %d" % (line, code)
            return
        verb, space, rest = text.partition(" ")
        verb = verb.upper()
        arg = rest.strip() if space else None
        if code == 354:
            assert verb == "DATA", "354 for %r" % line
            assert self.greeted and self.rcpttos, "354 without recipients: %r" % line
            self.in_data = True
        elif code == 221:
            assert verb == "QUIT", "221 for %r" % line
            self.closed = True
        elif code == 250:
            self._accepted(verb, arg, line)

    def _accepted(self, verb, arg, line):
        if verb in ("HELO", "EHLO"):
            assert not self.greeted, "second greeting accepted: %r" % line
            self.greeted = True
            self._reset()
        elif verb == "RSET":
            self._reset()
        elif verb == "MAIL":
            assert self.greeted, "MAIL accepted before HELO: %r" % line
            assert self.mailfrom is None, "nested MAIL accepted: %r" % line
            address, params = _protocol.split_address(arg[len("FROM:") :].strip())
            self.mailfrom = address
            self.mail_options = params.upper().split()
        elif verb == "RCPT":
            assert self.mailfrom is not None, "RCPT accepted without MAIL: %r" % line
            address, params = _protocol.split_address(arg[len("TO:") :].strip())
            self.rcpttos.append(address)
            self.rcpt_options = params.upper().split()
        else:
            assert verb in ("NOOP", "HELP"), "250 for %r" % line

    def message(self, content, code):
        """Account for one complete message (without its CRLF.CRLF)."""
        self.in_data = False
        too_big = bool(self.size_limit) and len(content) > self.size_limit
        if code == 552:
            assert too_big, "552 for a message of %d bytes" % len(content)
        elif code == 554:
            assert self.decode_data and not too_big
            self._assert_not_utf8(content)
        elif code == 451:
            assert FAILURE_MARKER in content and not too_big
        else:
            assert code == 250, "reply %d to a message" % code
            assert not too_big, "accepted a message of %d bytes" % len(content)
            data = unstuff(content)
            kwargs = {
                "mail_options": self.mail_options,
                "rcpt_options": self.rcpt_options,
            }
            if self.decode_data:
                data = data.decode("utf-8")
                kwargs = {}
            self.expected_deliveries.append(
                (self.mailfrom, list(self.rcpttos), data, kwargs)
            )
        self._reset()

    @staticmethod
    def _assert_not_utf8(content):
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return
        raise AssertionError("554 for a UTF-8 message")


def check_session(stream, session, decode_data, smtputf8, size_limit):
    """Assert every invariant of the module docstring for one session.

    Returns the reply codes, greeting included.
    """
    assert session.unexpected == [], "\n".join(session.unexpected)
    assert session.violations == []
    replies = parse_replies(session.output, utf8=smtputf8)
    codes = [int(reply[-1][:3]) for reply in replies]
    assert codes and codes[0] == 220
    pending = codes[1:]
    model = SessionModel(decode_data, size_limit)
    pos = 0
    while not model.closed:
        if model.in_data:
            # The CRLF that ended DATA also starts the end-of-data marker.
            seeded = b"\r\n" + stream[pos:]
            end = seeded.find(b"\r\n.\r\n")
            if end < 0:
                break
            unit = ("message", seeded[2:end] if end else b"")
            pos += end + 3
        else:
            end = stream.find(b"\r\n", pos)
            if end < 0:
                break
            unit = ("command", stream[pos:end])
            pos = end + 2
        assert pending, "no reply to %r" % (unit,)
        code = pending.pop(0)
        if unit[0] == "message":
            model.message(unit[1], code)
        else:
            model.command(unit[1], code)
    assert pending == [], "replies without a command: %r" % pending
    assert session.deliveries == model.expected_deliveries
    if model.closed:
        assert session.final_state is None, "channel still open after QUIT"
    else:
        assert session.final_state == {
            "smtp_state": smtpd_compat.SMTPChannel.DATA
            if model.in_data
            else smtpd_compat.SMTPChannel.COMMAND,
            "mailfrom": model.mailfrom,
            "rcpttos": model.rcpttos,
            "greeted": model.greeted,
        }
    return codes


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


@st.composite
def chunked(draw, stream):
    """``stream`` cut at arbitrary points: a list of non-empty chunks."""
    cuts = draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=12))
    bounds = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


line_ends = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b""])
words = st.sampled_from(
    [
        b"x",
        b"example.com",
        b"",
        b" ",
        b"\t",
        b"\x00",
        b"\xff",
        "é".encode(),
        b"<>",
        b":",
    ]
)
addresses = st.one_of(
    st.sampled_from(
        [
            b"<a@example.com>",
            b"<b.c@example.org>",
            b"d@example.net",
            b"<>",
            b"<@>",
            b"<a@>",
            b"a@b@c",
            b'<"q w"@example.com>',
            b"<(comment)a@b>",
            "<δ@例え.jp>".encode(),
            b"<",
            b"",
        ]
    ),
    st.binary(max_size=20),
)
esmtp_params = st.lists(
    st.sampled_from(
        [
            b"SIZE=10",
            b"SIZE=99999999999",
            b"SIZE=",
            b"SIZE=x",
            b"BODY=8BITMIME",
            b"BODY=7BIT",
            b"BODY=BINARY",
            b"SMTPUTF8",
            b"SMTPUTF8=yes",
            b"FOO=bar",
            b"=",
        ]
    ),
    max_size=3,
)
verbs = st.sampled_from(
    [b"HELO", b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT"]
    + [b"VRFY", b"HELP", b"EXPN", b"helo", b"Mail", b"rcpt", b"data", b"BDAT"]
)


@st.composite
def command_lines(draw):
    verb = draw(verbs)
    upper = verb.upper()
    if upper in (b"MAIL", b"RCPT") and draw(st.integers(0, 4)):
        keyword = b"FROM:" if upper == b"MAIL" else b"TO:"
        keyword = draw(st.sampled_from([keyword, keyword.lower(), keyword + b" ", b""]))
        arg = keyword + draw(addresses)
        params = draw(esmtp_params)
        if params:
            arg += b" " + b" ".join(params)
    elif upper in (b"HELO", b"EHLO", b"VRFY", b"HELP") and draw(st.integers(0, 3)):
        arg = draw(st.one_of(words, addresses, verbs))
    else:
        arg = draw(st.one_of(st.none(), words))
    line = verb if arg is None else verb + b" " + arg
    return line + draw(line_ends)


message_lines = st.one_of(
    st.sampled_from(
        [b"Subject: hi", b"", b".", b"..", b".x", b"a\nb", b"\r", FAILURE_MARKER]
        + [b"\xff\xfe", "ünïcode".encode(), b"x" * 120]
    ),
    st.binary(max_size=30),
)


@st.composite
def messages(draw):
    """DATA, a message body, and (usually) the end-of-data line."""
    body = b"\r\n".join(draw(st.lists(message_lines, max_size=8)))
    end = draw(st.sampled_from([b"\r\n.\r\n"] * 12 + [b"\n.\n", b"\r\n.", b""]))
    if not body and end.startswith(b"\r\n") and draw(st.booleans()):
        end = end[2:]  # an empty message: "." right after DATA
    return b"DATA\r\n" + body + end


garbage = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\r\n", b"\r\n\r\n", b".\r\n", b"\x00\r\n", b"\xff\xff\r\n"]),
    st.integers(505, 530).map(lambda n: b"NOOP " + b"y" * n + b"\r\n"),
)

#: A session start that gets a transaction going, so random tails hit DATA.
opening = st.sampled_from(
    [
        b"",
        b"EHLO fuzz\r\n",
        b"HELO fuzz\r\n",
        b"HELO fuzz\r\nMAIL FROM:<a@example.com>\r\n",
        b"EHLO fuzz\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
        b"HELO f\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
    ]
)

good_addresses = st.sampled_from(
    [
        b"<a@example.com>",
        b"<b@example.org>",
        b"c@example.net",
        b"<>",
        "<ü@ex.com>".encode(),
    ]
)


@st.composite
def transactions(draw):
    """A mostly valid MAIL, RCPT..., DATA, message sequence."""
    mail = b"MAIL FROM:" + draw(good_addresses)
    params = draw(esmtp_params)
    if params and draw(st.booleans()):
        mail += b" " + b" ".join(params)
    lines = [
        draw(st.sampled_from([b"", b"", b"HELO fuzz\r\n", b"EHLO fuzz\r\n"])),
        mail + b"\r\n",
    ]
    for address in draw(st.lists(good_addresses, min_size=1, max_size=3)):
        lines.append(b"RCPT TO:" + address + b"\r\n")
    return b"".join(lines) + draw(messages())


grammar_streams = st.lists(
    st.one_of(command_lines(), command_lines(), transactions(), messages(), garbage),
    max_size=25,
).map(b"".join)

modes = st.sampled_from(MODES)
size_limits = st.sampled_from(SIZE_LIMITS)


# ---------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------


def _run_and_check(stream, chunks, mode, size_limit):
    decode_data, smtputf8 = mode
    session = run_session(chunks, decode_data, smtputf8, size_limit)
    codes = check_session(stream, session, decode_data, smtputf8, size_limit)
    # shown by --hypothesis-show-statistics: how far sessions get
    event("messages delivered: %s" % min(len(session.deliveries), 3))
    for code in sorted(set(codes) & {354, 451, 552, 554, 221}):
        event("got a %d reply" % code)
    return session


@fuzz_settings
@given(st.data(), opening, st.binary(max_size=600), modes, size_limits)
def test_random_bytes(data, start, tail, mode, size_limit):
    """Random bytes, after an opening that may put the channel anywhere."""
    stream = start + tail
    _run_and_check(stream, data.draw(chunked(stream)), mode, size_limit)


@fuzz_settings
@given(st.data(), opening, grammar_streams, modes, size_limits)
def test_grammar_sessions(data, start, body, mode, size_limit):
    """Commands with random arguments, messages and garbage, in any chunking."""
    stream = start + body
    _run_and_check(stream, data.draw(chunked(stream)), mode, size_limit)


@fuzz_settings
@given(st.data(), opening, grammar_streams, modes, size_limits)
def test_chunking_changes_nothing(data, start, body, mode, size_limit):
    """The same bytes in one piece and in many give the same replies and mail."""
    stream = start + body
    whole = _run_and_check(stream, [stream] if stream else [], mode, size_limit)
    pieces = _run_and_check(stream, data.draw(chunked(stream)), mode, size_limit)
    assert pieces.output == whole.output
    assert pieces.deliveries == whole.deliveries
