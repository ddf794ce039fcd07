"""The scripted sessions of the hook-call differential.

``generate()`` builds the same list of sessions in every process (a seeded
``random.Random``), so the reference run (CPython 3.11's own smtpd) and the
smtpd_compat run replay identical scripts.  Standard library only: this
module is imported by ``recorder.py`` under a plain 3.11 interpreter.

A session is a dict:

``id``           unique name, ``<family>-<nnn>``
``desc``         what it exercises, in words (printed with a mismatch)
``server``       ``base`` (SMTPServer, DebuggingServer, PureProxy or
                 MailmanProxy) and the constructor arguments
                 ``data_size_limit`` ("default" for smtpd's default),
                 ``decode_data`` and ``enable_SMTPUTF8``
``channel_mods`` names of the channel behaviours (see recorder.py) mixed
                 into the SMTPChannel subclass, outermost first
``server_mods``  the same for the server subclass
``debug``        whether DEBUGSTREAM is captured
``steps``        ``(client, action)`` pairs: action is bytes to send in one
                 write, or ``"connect"``, ``"shutdown"`` (half-close) or
                 ``"close"``; client 0 connects before the first step
``rule``         None, or the name of the documented difference the session
                 demonstrates (see compare.py)
``expect``       with a rule: what smtpd_compat must do instead, see
                 compare.py
"""

import random

SEED = 20261201

# Envelope addresses the email parser reads the same way in 3.11 and
# smtpd_compat (unparsable ones are a documented difference).
ADDRESSES = [
    "alice@example.com",
    "bob@example.org",
    "carol@test.example",
    "dave+tag@example.net",
    "Eve.Smith@example.com",
]

# Lines of message text, before dot-stuffing.  Non-ASCII text only
# appears in whole lines so that reads are never cut inside a character.
BODY_LINES = [
    "Subject: hook differential",
    "From: alice@example.com",
    "To: bob@example.org",
    "",
    "Hello world.",
    ".a line that starts with a dot",
    "..two dots",
    ".",
    "The last line.",
    "caf\u00e9 cr\u00e8me",
    "x" * 70,
    "  indented",
    "tab\there",
]

# Commands every implementation answers the same way, whatever the state.
NEUTRAL_COMMANDS = [
    "NOOP",
    "noop",
    "NOOP x",
    "RSET",
    "RSET now",
    "HELP",
    "HELP MAIL",
    "HELP rcpt",
    "HELP DATA",
    "HELP XYZ",
    "VRFY",
    "VRFY <alice@example.com>",
    "VRFY bob@example.org",
    "EXPN list",
    "FOO",
    "FOO bar",
    "",
    "HELO",
    "EHLO",
    "MAIL",
    "MAIL TO:<a@example.com>",
    "RCPT",
    "RCPT FROM:<a@example.com>",
    "DATA x",
    "XYZZY magic",
    "XYZZY",
    "PUSHMANY",
]


def _crlf(text):
    return text.encode("utf-8") + b"\r\n"


def _stuffed(lines):
    """The message as sent after DATA: dot-stuffed, with the end marker."""
    out = b""
    for line in lines:
        if line.startswith("."):
            line = "." + line
        out += _crlf(line)
    return out + b".\r\n"


def _split_points(data, rng, pieces):
    """Up to ``pieces - 1`` cut positions that do not split a character."""
    candidates = [i for i in range(1, len(data)) if not 0x80 <= data[i] <= 0xBF]
    rng.shuffle(candidates)
    return sorted(candidates[: max(0, pieces - 1)])


def _cut(data, points):
    out, start = [], 0
    for point in points:
        out.append(data[start:point])
        start = point
    out.append(data[start:])
    return [piece for piece in out if piece]


class _Builder:
    """Collects the sessions of one run."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.sessions = []
        self.counts = {}

    def add(
        self,
        family,
        desc,
        steps,
        base="SMTPServer",
        data_size_limit="default",
        decode_data=False,
        smtputf8=False,
        channel_mods=(),
        server_mods=(),
        debug=False,
        rule=None,
        expect=None,
    ):
        number = self.counts.get(family, 0)
        self.counts[family] = number + 1
        if expect is not None and "step" in expect:
            # step 0 is the connection of client 0, made before the script
            expect = dict(expect, step=expect["step"] + 1)
        normalised = []
        for step in steps:
            if isinstance(step, tuple):
                normalised.append(step)
            else:
                normalised.append((0, step))
        self.sessions.append(
            {
                "id": "%s-%03d" % (family, number),
                "desc": desc,
                "server": {
                    "base": base,
                    "data_size_limit": data_size_limit,
                    "decode_data": decode_data,
                    "enable_SMTPUTF8": smtputf8,
                },
                "channel_mods": list(channel_mods),
                "server_mods": list(server_mods),
                "debug": debug,
                "steps": normalised,
                "rule": rule,
                "expect": expect,
                "instrument": "full",
            }
        )

    # -- building blocks ----------------------------------------------

    def message_lines(self, decode_data):
        rng = self.rng
        count = rng.randint(1, 6)
        lines = [rng.choice(BODY_LINES) for _ in range(count)]
        return lines

    def transaction(self, ehlo, params=(), rcpts=None, lines=None, decode=False):
        """Command lines (bytes, one per command) and the message bytes."""
        rng = self.rng
        if rcpts is None:
            rcpts = rng.sample(ADDRESSES, rng.randint(1, 3))
        if lines is None:
            lines = self.message_lines(decode)
        mail = "MAIL FROM:<%s>" % rng.choice(ADDRESSES)
        if params:
            mail += " " + " ".join(params)
        commands = [_crlf(mail)]
        commands += [_crlf("RCPT TO:<%s>" % rcpt) for rcpt in rcpts]
        commands.append(_crlf("DATA"))
        return commands, _stuffed(lines)

    def chunked(self, commands, message, mode):
        """Group commands into writes and cut the message into reads."""
        rng = self.rng
        steps = []
        if mode == "lines":
            steps += commands
            steps.append(message)
        elif mode == "pipelined":
            # RFC 2920: everything up to DATA in one write, then the message
            steps.append(b"".join(commands))
            steps.append(message)
        elif mode == "all-in-one":
            steps.append(b"".join(commands) + message)
        else:  # "split": the message arrives in several reads
            steps += commands
            points = _split_points(message, rng, rng.randint(2, 4))
            steps += _cut(message, points)
        return steps


# ---------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------


def _server_options(b, allow_utf8=True):
    rng = b.rng
    decode = rng.random() < 0.3
    utf8 = (not decode) and allow_utf8 and rng.random() < 0.3
    limit = rng.choice(["default", "default", None, 0, 100000])
    return decode, utf8, limit


def _plain(b):
    rng = b.rng
    for _ in range(40):
        decode, utf8, limit = _server_options(b)
        base = rng.choice(["SMTPServer", "SMTPServer", "DebuggingServer"])
        ehlo = rng.random() < 0.6
        greeting = _crlf(("EHLO" if ehlo else "HELO") + " client.example")
        mode = rng.choice(["lines", "pipelined", "all-in-one", "split"])
        server_mods = []
        if base == "SMTPServer":
            server_mods.append(rng.choice(["pm-ok", "pm-status", "pm-reject"]))
        steps = [greeting]
        messages = rng.randint(1, 3)
        for _ in range(messages):
            params = []
            if ehlo:
                if limit and rng.random() < 0.4:
                    params.append("SIZE=%d" % rng.randint(10, 900))
                if not decode and rng.random() < 0.3:
                    params.append(rng.choice(["BODY=8BITMIME", "BODY=7BIT"]))
                if utf8 and rng.random() < 0.5:
                    params.append("SMTPUTF8")
            commands, message = b.transaction(ehlo, params, decode=decode)
            steps += b.chunked(commands, message, mode)
            if rng.random() < 0.3:
                steps.append(_crlf(rng.choice(["NOOP", "RSET", "HELP"])))
        if rng.random() < 0.8:
            steps.append(b"QUIT\r\n")
        b.add(
            "plain",
            "%s %s session, %d message(s), commands sent %s, decode_data=%s, "
            "SMTPUTF8=%s, data_size_limit=%r"
            % (base, "EHLO" if ehlo else "HELO", messages, mode, decode, utf8, limit),
            steps,
            base=base,
            data_size_limit=limit,
            decode_data=decode,
            smtputf8=utf8,
            server_mods=server_mods,
            debug=rng.random() < 0.4,
        )


def _errors(b):
    """Commands out of order or malformed, answered with error replies."""
    rng = b.rng
    extra = [
        "MAIL FROM:<alice@example.com> SIZE=abc",
        "MAIL FROM:<alice@example.com> BODY=9BIT",
        "MAIL FROM:<alice@example.com> FOO=BAR",
        "MAIL FROM:<alice@example.com> SIZE=99999999999",
        "MAIL FROM:<alice@example.com> =x",
        "MAIL FROM:alice@example.com",
        "MAIL FROM: <alice@example.com>",
        "MAIL from:<alice@example.com>",
        "MAIL FROM:<alice@example.com>",
        "RCPT TO:<bob@example.org>",
        "RCPT TO: bob@example.org",
        "RCPT TO:",
        "MAIL FROM:",
        "DATA",
        "HELO again.example",
        "EHLO again.example",
        "NOOP " + "y" * 600,
        "x" * 520,
    ]
    for _ in range(25):
        decode, utf8, limit = _server_options(b)
        greet = rng.choice([None, "HELO c.example", "EHLO c.example"])
        commands = []
        if greet and rng.random() < 0.5:
            commands.append(greet)
        for _ in range(rng.randint(3, 9)):
            commands.append(rng.choice(NEUTRAL_COMMANDS + extra))
        if greet and greet not in commands:
            commands.insert(rng.randint(0, len(commands)), greet)
        # DATA would start a message; finish it so the script stays simple
        steps = []
        pipelined = rng.random() < 0.4
        pending = []
        for command in commands:
            pending.append(_crlf(command))
            if command == "DATA":
                pending.append(_stuffed(["error-family message"]))
            if not pipelined or rng.random() < 0.3:
                steps.append(b"".join(pending))
                pending = []
        if pending:
            steps.append(b"".join(pending))
        steps.append(b"QUIT\r\n")
        b.add(
            "errors",
            "error replies: %s%s"
            % (" | ".join(commands), " (pipelined)" if pipelined else ""),
            steps,
            data_size_limit=limit,
            decode_data=decode,
            smtputf8=utf8,
            server_mods=["pm-ok"],
            debug=rng.random() < 0.3,
        )


def _hello(ehlo=False):
    return _crlf("EHLO h.example" if ehlo else "HELO h.example")


def _verbs(b):
    """Custom smtp_XYZ verbs, state and terminator changes by subclasses."""
    rng = b.rng
    msg = _stuffed(["Subject: verbs", "", "body"])
    scripts = [
        (
            "custom verb with and without argument",
            [_hello(), b"XYZZY plugh\r\n", b"XYZZY\r\n", b"xyzzy lower\r\n"],
        ),
        (
            "custom verb pipelined with standard ones",
            [_hello(True) + b"XYZZY one\r\nNOOP\r\nXYZZY two\r\n", b"QUIT\r\n"],
        ),
        (
            "smtp_state set to an unknown value, then a command",
            [_hello(), b"STATE 7\r\n", b"NOOP\r\n", b"NOOP\r\n"],
        ),
        (
            "smtp_state set to DATA after MAIL/RCPT: the next line is a message",
            [
                _hello(True),
                b"MAIL FROM:<a@example.com>\r\n",
                b"RCPT TO:<b@example.com>\r\n",
                b"STATE 1\r\n",
                b"this line is the message\r\n",
                b"NOOP\r\n",
            ],
        ),
        (
            "smtp_state set to DATA, message ended by the subclass's terminator",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
                b"STATE 1\r\nline one\r\n",
                b"QUIT\r\n",
            ],
        ),
        (
            "set_terminator(b'\\n') from a verb, then LF-terminated commands",
            [_hello(), b"TERM LF\r\n", b"NOOP\n", b"HELP\nNOOP\n", b"QUIT\n"],
        ),
        (
            "set_terminator(b'\\n'), a whole transaction with LF line ends",
            [
                _hello(),
                b"TERM LF\r\n",
                b"MAIL FROM:<a@example.com>\nRCPT TO:<b@example.com>\nDATA\n",
                b"Subject: lf\r\n\r\nbody\r\n.\r\n",
                b"NOOP\n",
            ],
        ),
        (
            "set_terminator(5): a counted read, then no terminator at all",
            [_hello(), b"TERM 5\r\n", b"RSET ", b"NOOP\r\n", b"more\r\n"],
        ),
        (
            "set_terminator(12) counted across two reads",
            [_hello(), b"TERM 12\r\n", b"NOOP   ", b"     more data\r\n"],
        ),
        (
            "set_terminator(None): everything is collected, nothing answered",
            [_hello(), b"TERM NONE\r\n", b"NOOP\r\nNOOP\r\n", b"QUIT\r\n"],
        ),
        (
            "set_terminator(b'\\r\\n.\\r\\n') in command state",
            [_hello(), b"TERM DOT\r\n", b"NOOP\r\nNOOP\r\n", b".\r\n"],
        ),
        (
            "set_terminator('\\r\\n') (a str): the next read fails",
            [_hello(), b"TERM STR\r\n", b"NOOP\r\n"],
        ),
        (
            "set_terminator(b'XX') with the terminator split over reads",
            [_hello(), b"TERM XX\r\n", b"NOOPX", b"XHELPX", b"XNOOPXX"],
        ),
        (
            "set_terminator(b'\\n') and back to CRLF",
            [_hello(), b"TERM LF\r\n", b"TERM CRLF\n", b"NOOP\r\n"],
        ),
        (
            "num_bytes raised by a verb: the next line is too long",
            [_hello(), b"NUMBYTES 600\r\n", b"NOOP\r\n", b"NOOP\r\n"],
        ),
        (
            "num_bytes lowered by a verb during EHLO session",
            [_hello(True), b"NUMBYTES 0\r\n", b"NOOP\r\n"],
        ),
        (
            "num_bytes negative before a long line",
            [_hello(), b"NUMBYTES -100\r\n", b"NOOP " + b"z" * 560 + b"\r\n"],
        ),
        (
            "several pushes from one verb",
            [_hello(), b"PUSHMANY\r\n", b"PUSHMANY\r\nNOOP\r\n"],
        ),
        ("push_with_producer from a verb", [_hello(), b"PRODUCE\r\n", b"NOOP\r\n"]),
        (
            "push_with_producer pipelined with other commands",
            [_hello() + b"PRODUCE\r\nNOOP\r\nPRODUCE\r\n", b"QUIT\r\n"],
        ),
        (
            "discard_buffers from a verb with pipelined input after it",
            [_hello(), b"DISCARD\r\nNOOP\r\nNOOP\r\n", b"NOOP\r\n"],
        ),
        (
            "async_chat.push called directly, bypassing SMTPChannel.push",
            [_hello(), b"RAWPUSH\r\n", b"RAWPUSH\r\nNOOP\r\n"],
        ),
        (
            "verb that changes seen_greeting and extended_smtp",
            [
                b"GREET custom.example\r\n",
                b"MAIL FROM:<a@example.com> SIZE=10\r\n",
                b"NOOP\r\n",
            ],
        ),
        (
            "verb that starts DATA by itself (set state, terminator, push 354)",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
                b"MYDATA\r\n",
                msg,
                b"NOOP\r\n",
            ],
        ),
        (
            "verb that resets the transaction through _set_rset_state",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\n",
                b"RESETME\r\n",
                b"RCPT TO:<b@example.com>\r\n",
            ],
        ),
        (
            "verb that reads ac_in_buffer (pipelined input)",
            [_hello(), b"PEEK\r\nNOOP\r\nHELP\r\n"],
        ),
        (
            "verb that empties ac_in_buffer (drops pipelined input)",
            [_hello(), b"DROPIN\r\nNOOP\r\nNOOP\r\n", b"NOOP\r\n"],
        ),
        (
            "verb that replaces ac_in_buffer with other commands",
            [_hello(), b"INJECT\r\nNOOP\r\n", b"NOOP\r\n"],
        ),
        (
            "verb that changes the terminator to DATA mode mid-read",
            [
                _hello(),
                (
                    b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                    b"MYDATA\r\nSubject: x\r\n\r\nin one read\r\n.\r\nNOOP\r\n"
                ),
            ],
        ),
        (
            "command_size_limits changed by a verb",
            [
                _hello(True),
                b"LIMIT 600\r\n",
                b"MAIL FROM:<a@example.com> " + b"x" * 10 + b"\r\n",
                b"NOOP " + b"q" * 560 + b"\r\n",
            ],
        ),
    ]
    for desc, steps in scripts:
        b.add(
            "verbs",
            desc,
            steps,
            channel_mods=["verbs"],
            server_mods=["pm-ok"],
            debug=rng.random() < 0.5,
        )


def _exceptions(b):
    rng = b.rng
    msg = _stuffed(["Subject: boom", "", "body"])
    bad = _stuffed(["Subject: boom", "", "CIDBOOM here"])
    r451 = "handler-error-451"
    b.add(
        "exceptions",
        "custom verb raises ValueError",
        [_hello(), b"BOOM now\r\n", b"NOOP\r\n"],
        channel_mods=["verbs"],
        server_mods=["pm-ok"],
        rule=r451,
        expect={"step": 1, "after": [b"250 OK\r\n"]},
    )
    b.add(
        "exceptions",
        "custom verb pushes, then raises",
        [_hello(), b"PUSHBOOM\r\n", b"NOOP\r\n"],
        channel_mods=["verbs"],
        server_mods=["pm-ok"],
        rule=r451,
        expect={"step": 1, "after": [b"250 OK\r\n"]},
    )
    b.add(
        "exceptions",
        "custom verb raises with pipelined commands after it",
        [_hello(), b"BOOM a\r\nNOOP\r\nHELP DATA\r\n"],
        channel_mods=["verbs"],
        server_mods=["pm-ok"],
        rule=r451,
        expect={"step": 1, "after": []},
        debug=True,
    )
    b.add(
        "exceptions",
        "overridden smtp_NOOP raises KeyError",
        [_hello(), b"NOOP\r\n", b"RSET\r\n"],
        channel_mods=["noop-raise"],
        server_mods=["pm-ok"],
        rule=r451,
        expect={"step": 1, "after": [b"250 OK\r\n"]},
    )
    b.add(
        "exceptions",
        "overridden smtp_MAIL raises after super()",
        [_hello(), b"MAIL FROM:<a@example.com>\r\n", b"NOOP\r\n"],
        channel_mods=["mail-raise-after"],
        server_mods=["pm-ok"],
        rule=r451,
        expect={"step": 1, "after": [b"250 OK\r\n"]},
    )
    for variant in ["pm-raise", "pm-bytes", "pm-int"]:
        for decode in (False, True):
            b.add(
                "exceptions",
                "process_message %s (decode_data=%s)" % (variant, decode),
                [
                    _hello(),
                    b"MAIL FROM:<a@example.com>\r\n",
                    b"RCPT TO:<b@example.com>\r\n",
                    b"DATA\r\n",
                    msg,
                    b"NOOP\r\n",
                ],
                decode_data=decode,
                server_mods=[variant],
                rule=r451,
                expect={"step": 4, "after": [b"250 OK\r\n"]},
                debug=rng.random() < 0.5,
            )
    # Not handler errors: these end the connection in both implementations.
    b.add(
        "exceptions",
        "found_terminator override raises before super() on a marked line",
        [_hello(), b"FTBOOM\r\n", b"NOOP\r\n"],
        channel_mods=["ft-raise-before"],
        server_mods=["pm-ok"],
    )
    b.add(
        "exceptions",
        "found_terminator raises before super(), pipelined commands after",
        [_hello(), b"NOOP\r\nFTBOOM\r\nNOOP\r\n"],
        channel_mods=["ft-raise-before"],
        server_mods=["pm-ok"],
        debug=True,
    )
    for count in (2, 3, 6):
        b.add(
            "exceptions",
            "found_terminator raises after super() on call %d" % count,
            [
                _hello(),
                b"NOOP\r\n",
                b"MAIL FROM:<a@example.com>\r\n",
                b"RCPT TO:<b@example.com>\r\nDATA\r\n",
                msg,
                b"NOOP\r\n",
            ],
            channel_mods=["ft-raise-after:%d" % count],
            server_mods=["pm-ok"],
        )
    b.add(
        "exceptions",
        "collect_incoming_data raises on a marked command",
        [_hello(), b"NOOP CIDBOOM\r\n", b"NOOP\r\n"],
        channel_mods=["cid-raise"],
        server_mods=["pm-ok"],
    )
    for decode in (False, True):
        b.add(
            "exceptions",
            "collect_incoming_data raises inside the message (decode_data=%s)" % decode,
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
                b"DATA\r\n",
                bad,
                b"NOOP\r\n",
            ],
            decode_data=decode,
            channel_mods=["cid-raise"],
            server_mods=["pm-ok"],
        )
    b.add(
        "exceptions",
        "handle_error swallows an error from found_terminator",
        [_hello(), b"FTBOOM\r\n", b"NOOP\r\n", b"QUIT\r\n"],
        channel_mods=["handle-error-swallow", "ft-raise-before"],
        server_mods=["pm-ok"],
    )
    b.add(
        "exceptions",
        "handle_error swallows an error from a verb",
        [_hello(), b"BOOM x\r\n", b"NOOP\r\n"],
        channel_mods=["handle-error-swallow", "verbs"],
        server_mods=["pm-ok"],
        rule=r451,
        expect={"step": 1, "after": [b"250 OK\r\n"]},
    )
    b.add(
        "exceptions",
        "collect_incoming_data upper-cases what it collects",
        [
            _hello(),
            b"noop\r\nmail from:<a@example.com>\r\n",
            b"rcpt to:<b@example.com>\r\ndata\r\n",
            _stuffed(["lower case"]),
            b"quit\r\n",
        ],
        channel_mods=["cid-upper"],
        server_mods=["pm-ok"],
    )
    b.add(
        "exceptions",
        "asyncore.ExitNow raised by a verb, the session goes on",
        [_hello(), b"EXIT\r\n", b"NOOP\r\n", b"EXIT\r\nNOOP\r\n", b"NOOP\r\n"],
        channel_mods=["verbs"],
        server_mods=["pm-ok"],
    )
    b.add(
        "exceptions",
        "asyncore.ExitNow raised by process_message",
        [
            _hello(),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            msg,
            b"NOOP\r\n",
        ],
        server_mods=["pm-exitnow"],
    )
    b.add(
        "exceptions",
        "asyncore.ExitNow from found_terminator before super()",
        [_hello(), b"FTEXIT\r\nNOOP\r\n", b"NOOP\r\n"],
        channel_mods=["ft-raise-before"],
        server_mods=["pm-ok"],
    )
    b.add(
        "exceptions",
        "handle_error raising itself (escapes the loop)",
        [_hello(), b"FTBOOM\r\n", b"NOOP\r\n"],
        channel_mods=["handle-error-raise", "ft-raise-before"],
        server_mods=["pm-ok"],
    )


def _closes(b):
    rng = b.rng
    msg = _stuffed(["Subject: closes", "", "text"])
    scripts = [
        ("close() from a verb after pushing a reply", [_hello(), b"BYE\r\n"], []),
        (
            "close() from a verb with pipelined commands after it",
            [_hello(), b"BYE\r\nNOOP\r\nNOOP\r\n"],
            [],
        ),
        ("close_when_done() from a verb", [_hello(), b"BYEDONE\r\n"], []),
        (
            "close_when_done() from a verb, then more pipelined commands",
            [_hello(), b"BYEDONE\r\nNOOP\r\n"],
            [],
        ),
        ("close_when_done() without a reply", [_hello(), b"QUIETDONE\r\n"], []),
        ("asyncore.close_all(map) from a verb", [_hello(), b"CLOSEALL\r\n"], []),
        (
            "asyncore.close_all(map) from a verb with pipelined input",
            [_hello(), b"CLOSEALL\r\nNOOP\r\n"],
            [],
        ),
        ("close() from a verb, no reply", [_hello(), b"SILENTCLOSE\r\nNOOP\r\n"], []),
        ("close() twice from a verb", [_hello(), b"BYETWICE\r\n"], []),
        ("handle_close() from a verb", [_hello(), b"HCLOSE\r\n"], []),
        (
            "close() from process_message",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                msg,
            ],
            ["pm-closeall"],
        ),
        (
            "client half-closes, handle_close pushes a farewell",
            [_hello(), "shutdown"],
            [],
        ),
        (
            "client half-closes in the middle of a message",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                b"Subject: cut\r\n\r\npart",
                "shutdown",
            ],
            [],
        ),
        (
            "client closes in the middle of a command line",
            [_hello(), b"NOO", "close"],
            [],
        ),
        ("client closes right after connecting", ["close"], []),
        (
            "client half-closes with commands still pipelined",
            [_hello() + b"NOOP\r\nNOOP\r\n", "shutdown"],
            [],
        ),
        ("QUIT with nothing after it", [_hello(), b"QUIT\r\n"], []),
        ("QUIT sent alone as the first command", [b"QUIT\r\n"], []),
        (
            "close_when_done() then handle_close override",
            [_hello(), b"BYEDONE\r\n"],
            [],
        ),
    ]
    for index, (desc, steps, server_mods) in enumerate(scripts):
        mods = ["verbs"]
        if "handle_close pushes" in desc or "handle_close override" in desc:
            mods = ["close-push-bye", "verbs"]
        b.add(
            "closes",
            desc,
            steps,
            channel_mods=mods,
            server_mods=server_mods or ["pm-ok"],
            debug=rng.random() < 0.4,
        )
    b.add(
        "closes",
        "handle_close does not close (client half-closed)",
        [_hello(), "shutdown"],
        channel_mods=["handle-close-ignore"],
        server_mods=["pm-ok"],
    )
    b.add(
        "closes",
        "second client connects while the first is open",
        [
            _hello(),
            (1, "connect"),
            (1, _hello()),
            (0, b"NOOP\r\n"),
            (1, b"QUIT\r\n"),
            (0, b"QUIT\r\n"),
        ],
        channel_mods=["verbs"],
        server_mods=["pm-ok"],
    )
    b.add(
        "closes",
        "second client after the first one's close_all",
        [_hello(), b"CLOSEALL\r\n", (1, "connect")],
        channel_mods=["verbs"],
        server_mods=["pm-ok"],
    )
    for decode in (False, True):
        b.add(
            "closes",
            "QUIT pipelined after a message (decode_data=%s)" % decode,
            [
                _hello() + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                b"DATA\r\n",
                msg + b"QUIT\r\n",
            ],
            decode_data=decode,
            server_mods=["pm-ok"],
            channel_mods=["verbs"],
        )


def _output(b):
    """send(), push() and initiate_send() overrides."""
    rng = b.rng
    send_mods = [
        "send-record",
        "send-swallow",
        "send-partial:3",
        "send-partial:7",
        "send-zero-first",
        "send-upper",
        "send-partial:1",
    ]
    push_mods = [None, "push-rewrite", "push-log", "push-split"]
    for index in range(30):
        mods = []
        send = send_mods[index % len(send_mods)]
        push = push_mods[(index // len(send_mods)) % len(push_mods)]
        if push:
            mods.append(push)
        mods.append(send)
        if rng.random() < 0.3:
            mods.append("initiate-wrap")
        ehlo = rng.random() < 0.5
        commands, message = b.transaction(ehlo)
        mode = rng.choice(["lines", "pipelined", "all-in-one"])
        steps = [_hello(ehlo)] + b.chunked(commands, message, mode)
        if rng.random() < 0.5:
            steps.append(b"PUSHMANY\r\n")
        steps.append(b"QUIT\r\n")
        mods.append("verbs")
        b.add(
            "output",
            "%s / %s, commands %s, %s"
            % (send, push or "plain push", mode, "EHLO" if ehlo else "HELO"),
            steps,
            channel_mods=mods,
            server_mods=["pm-ok"],
        )


def _debugging(b):
    rng = b.rng
    for index in range(15):
        decode, utf8, limit = _server_options(b)
        ehlo = index % 2 == 0
        params = []
        if ehlo and not decode and rng.random() < 0.6:
            params.append("BODY=8BITMIME")
        if ehlo and limit and rng.random() < 0.5:
            params.append("SIZE=50")
        if ehlo and utf8 and rng.random() < 0.5:
            params.append("SMTPUTF8")
        commands, message = b.transaction(ehlo, params)
        steps = [_hello(ehlo)] + b.chunked(
            commands, message, rng.choice(["lines", "split"])
        )
        steps.append(b"QUIT\r\n")
        b.add(
            "debugging",
            "DebuggingServer prints the message, params %s, decode_data=%s"
            % (params, decode),
            steps,
            base="DebuggingServer",
            data_size_limit=limit,
            decode_data=decode,
            smtputf8=utf8,
            debug=rng.random() < 0.5,
            server_mods=["print-override"] if index % 5 == 4 else [],
        )


def _pureproxy(b):
    rng = b.rng
    variants = ["deliver-ok", "deliver-refuse-one", "deliver-ok", "deliver-ok"]
    for index in range(10):
        variant = variants[index % len(variants)]
        commands, message = b.transaction(False, rcpts=rng.sample(ADDRESSES, 2))
        steps = [_hello()] + b.chunked(
            commands, message, rng.choice(["lines", "split"])
        )
        steps.append(b"QUIT\r\n")
        b.add(
            "pureproxy",
            "PureProxy (decode_data=True) with _deliver overridden: %s" % variant,
            steps,
            base="PureProxy",
            decode_data=True,
            server_mods=[variant],
            debug=index % 2 == 0,
        )
    commands, message = b.transaction(False, rcpts=["a@example.com", "b@example.com"])
    b.add(
        "pureproxy",
        "PureProxy: upstream refuses every recipient",
        [_hello()] + commands + [message, b"NOOP\r\n"],
        base="PureProxy",
        decode_data=True,
        server_mods=["deliver-refuse-all"],
        debug=True,
        rule="pureproxy-refusals",
        expect={
            "step": 5,
            "reply": b"554 Transaction failed: all recipients "
            b"refused by the upstream server\r\n",
            "after": [b"250 OK\r\n"],
        },
    )
    b.add(
        "pureproxy",
        "PureProxy: _deliver raises",
        [_hello()] + commands + [message, b"NOOP\r\n"],
        base="PureProxy",
        decode_data=True,
        server_mods=["deliver-raise"],
        rule="handler-error-451",
        expect={"step": 5, "after": [b"250 OK\r\n"]},
    )
    b.add(
        "pureproxy",
        "PureProxy with decode_data=False relays",
        [_hello()] + commands + [message, b"NOOP\r\n"],
        base="PureProxy",
        decode_data=False,
        server_mods=["deliver-ok"],
        rule="pureproxy-bytes",
        expect={"step": 5, "reply": b"250 OK\r\n", "after": [b"250 OK\r\n"]},
    )


def _mailman(b):
    rng = b.rng
    for index in range(6):
        rcpts = rng.sample(
            [
                "alice@example.com",
                "bob@example.org",
                "x-y-z@example.com",
                "carol-foo@test.example",
            ],
            2,
        )
        commands, message = b.transaction(False, rcpts=rcpts)
        steps = [_hello()] + commands + [message, b"QUIT\r\n"]
        b.add(
            "mailman",
            "MailmanProxy, no list recipients (%s), _deliver overridden"
            % ", ".join(rcpts),
            steps,
            base="MailmanProxy",
            decode_data=True,
            server_mods=["deliver-ok"],
            debug=index % 2 == 0,
        )
    for rcpts in (
        ["announce@example.com"],
        ["dev-request@example.com", "bob@example.org"],
    ):
        commands, message = b.transaction(False, rcpts=rcpts)
        steps = [_hello()] + commands + [message, b"NOOP\r\n"]
        b.add(
            "mailman",
            "MailmanProxy with list recipients %s" % rcpts,
            steps,
            base="MailmanProxy",
            decode_data=True,
            server_mods=["deliver-ok"],
            debug=True,
            rule="mailman-load-order",
        )


def _limits(b):
    rng = b.rng
    b.add(
        "limits",
        "MAIL SIZE over the limit",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com> SIZE=2000\r\n",
            b"MAIL FROM:<a@example.com> SIZE=20\r\n",
        ],
        data_size_limit=1000,
        server_mods=["pm-ok"],
    )
    b.add(
        "limits",
        "MAIL SIZE with data_size_limit=None",
        [_hello(True), b"MAIL FROM:<a@example.com> SIZE=2000000000\r\n"],
        data_size_limit=None,
        server_mods=["pm-ok"],
    )
    b.add(
        "limits",
        "line of exactly 512 bytes, then 513",
        [
            _hello(),
            b"NOOP " + b"a" * 505 + b"\r\n",
            b"NOOP " + b"a" * 506 + b"\r\n",
            b"NOOP " + b"a" * 507 + b"\r\n",
        ],
        server_mods=["pm-ok"],
    )
    b.add(
        "limits",
        "EHLO raises the MAIL limit (SIZE and SMTPUTF8)",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com> " + b"X" * 520 + b"\r\n",
            b"MAIL FROM:<" + b"a" * 530 + b"@example.com>\r\n",
            b"NOOP " + b"b" * 520 + b"\r\n",
        ],
        smtputf8=True,
        server_mods=["pm-ok"],
    )
    b.add(
        "limits",
        "long line split over reads",
        [_hello(), b"NOOP " + b"c" * 300, b"c" * 300, b"\r\nNOOP\r\n"],
        server_mods=["pm-ok"],
    )
    b.add(
        "limits",
        "message at the limit",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            b"x" * 98 + b"\r\n.\r\n",
            b"NOOP\r\n",
        ],
        data_size_limit=100,
        server_mods=["pm-ok"],
    )
    for decode in (False, True):
        for pieces in (1, 3):
            body = b"Subject: big\r\n\r\n" + b"y" * 300 + b"\r\n.\r\n"
            steps = [
                _hello(True),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            ]
            steps += _cut(body, _split_points(body, rng, pieces))
            after_step = len(steps) - 1
            steps += [b"NOOP\r\n"]
            b.add(
                "limits",
                "message over data_size_limit=100 in %d read(s) "
                "(decode_data=%s)" % (pieces, decode),
                steps,
                data_size_limit=100,
                decode_data=decode,
                server_mods=["pm-ok"],
                rule="too-much-mail-552",
                expect={"step": after_step, "after": [b"250 OK\r\n"]},
                debug=True,
            )
    for limit in (60, 200, 1000):
        commands, message = b.transaction(True, params=["SIZE=40"], lines=["short"])
        b.add(
            "limits",
            "transaction with data_size_limit=%d" % limit,
            [_hello(True)] + commands + [message],
            data_size_limit=limit,
            server_mods=["pm-ok"],
        )
    b.add(
        "limits",
        "commands after the line-length error",
        [_hello(True), b"RCPT TO:<" + b"r" * 600 + b">\r\nNOOP\r\n"],
        server_mods=["pm-ok"],
    )


def _aliases(b):
    scripts = [
        ("deprecated __attr aliases read in a verb", [_hello(), b"ALIAS\r\n"]),
        (
            "deprecated __attr aliases read mid-transaction",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
                b"ALIAS\r\n",
            ],
        ),
        (
            "deprecated aliases written in a verb",
            [_hello(), b"ALIASSET new.example\r\n", b"ALIAS\r\n"],
        ),
        (
            "deprecated __state written: switch to DATA",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
                b"ALIASSTATE 1\r\n",
                b"message line\r\n",
            ],
        ),
        (
            "deprecated __line read while a message arrives",
            [
                _hello(),
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                b"Subject: x\r\n\r\n",
                b"body\r\n.\r\n",
            ],
        ),
    ]
    for desc, steps in scripts:
        mods = ["verbs"]
        if "__line read while" in desc:
            mods = ["cid-alias", "verbs"]
        b.add("aliases", desc, steps, channel_mods=mods, server_mods=["pm-ok"])
    b.add(
        "aliases",
        "__server and __conn read in found_terminator",
        [_hello(), b"NOOP\r\n"],
        channel_mods=["ft-alias", "verbs"],
        server_mods=["pm-ok"],
    )


def _server_hooks(b):
    msg = _stuffed(["Subject: srv", "", "x"])
    b.add(
        "server",
        "handle_accepted raises",
        [b"NOOP\r\n"],
        server_mods=["accepted-raise"],
        rule="server-error-keeps-listening",
        expect={"step": -1},
    )
    b.add(
        "server",
        "handle_accepted builds the channel with other arguments",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            msg,
            b"QUIT\r\n",
        ],
        server_mods=["accepted-custom", "pm-ok"],
    )
    b.add(
        "server",
        "handle_accepted closes the connection without a channel",
        [b"NOOP\r\n"],
        server_mods=["accepted-drop"],
    )
    b.add(
        "server",
        "handle_accept overridden, calling super()",
        [_hello(), b"QUIT\r\n"],
        server_mods=["accept-wrap", "pm-ok"],
    )
    b.add(
        "server",
        "two clients in turn with a handle_accepted override",
        [_hello(), b"QUIT\r\n", (1, "connect"), (1, _hello()), (1, b"QUIT\r\n")],
        server_mods=["accepted-wrap", "pm-ok"],
    )
    b.add(
        "server",
        "channel_class set per instance",
        [_hello(), b"XYZZY\r\n"],
        server_mods=["instance-channel-class", "pm-ok"],
    )
    b.add(
        "server",
        "process_message with the pre-3.5 signature, decode_data=True",
        [
            _hello(),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            msg,
            b"QUIT\r\n",
        ],
        decode_data=True,
        server_mods=["pm-old-signature"],
    )
    b.add(
        "server",
        "process_message with mail_options/rcpt_options as named parameters",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\n"
            + b"DATA\r\n",
            msg,
            b"QUIT\r\n",
        ],
        server_mods=["pm-named-options"],
    )
    b.add(
        "server",
        "process_message with the pre-3.5 signature, decode_data=False",
        [
            _hello(),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            msg,
            b"NOOP\r\n",
        ],
        server_mods=["pm-old-signature"],
        rule="old-process-message",
        expect={"step": 2, "reply": b"250 OK\r\n", "after": [b"250 OK\r\n"]},
    )
    b.add(
        "server",
        "server handle_error overridden, error in handle_accepted",
        [b"NOOP\r\n", (1, "connect")],
        server_mods=["srv-handle-error-log", "accepted-raise-once"],
    )
    b.add(
        "server",
        "plain SMTPServer without process_message",
        [
            _hello(),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            msg,
            b"NOOP\r\n",
        ],
        server_mods=[],
        rule="handler-error-451",
        expect={"step": 2, "after": None},
    )


def _reimplemented(b):
    """Subclasses that replace smtpd's methods instead of extending them."""
    rng = b.rng
    msg = _stuffed(["Subject: re", "", "body", ".dot"])
    full = [
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        msg,
        b"QUIT\r\n",
    ]
    cases = [
        ("smtp_DATA reimplemented without super()", ["data-reimplemented"], full),
        (
            "smtp_DATA reimplemented, message pipelined with DATA",
            ["data-reimplemented"],
            [b"".join(full)],
        ),
        (
            "smtp_DATA reimplemented, DATA followed at once by the end marker",
            ["data-reimplemented"],
            full[:3] + [b"x\r\n.\r\n", b"QUIT\r\n"],
        ),
        (
            "smtp_DATA extended after super(): terminator changed",
            ["data-after-super"],
            full[:3] + [b"line one\r\nEND\r\n", b"NOOP\r\n"],
        ),
        ("smtp_HELO reimplemented", ["helo-reimplemented"], full),
        (
            "smtp_EHLO reimplemented with an extra keyword",
            ["ehlo-reimplemented"],
            [b"MAIL FROM:<a@example.com> SIZE=100\r\n", b"RCPT TO:<b@example.com>\r\n"],
        ),
        ("smtp_QUIT reimplemented", ["quit-reimplemented"], [b"NOOP\r\n", b"QUIT\r\n"]),
        (
            "smtp_NOOP counts calls",
            ["noop-counter"],
            [b"NOOP\r\nNOOP\r\n", b"NOOP\r\n"],
        ),
        (
            "smtp_MAIL refuses by policy before super()",
            ["mail-policy"],
            [
                b"MAIL FROM:<reject@example.com>\r\n",
                b"MAIL FROM:<ok@example.com>\r\n",
                b"RCPT TO:<b@example.com>\r\n",
            ],
        ),
        (
            "smtp_RCPT limits recipients",
            ["rcpt-limit"],
            [
                b"MAIL FROM:<a@example.com>\r\n",
                b"RCPT TO:<b@example.com>\r\n",
                b"RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n",
                b"DATA\r\n",
                msg,
            ],
        ),
        ("_getaddr post-processes addresses", ["getaddr-lower"], full),
        (
            "_getparams accepts an extra parameter",
            ["getparams-allow"],
            [
                b"MAIL FROM:<a@example.com> XFOO=1\r\n",
                b"RCPT TO:<b@example.com> XFOO=2\r\n",
                b"DATA\r\n",
                msg,
            ],
        ),
        (
            "_set_post_data_state and _set_rset_state extended",
            ["state-extended"],
            full[:4] + [b"RSET\r\n", b"QUIT\r\n"],
        ),
        ("found_terminator wrapper inspects received_lines", ["ft-inspect"], full),
        ("collect_incoming_data wrapper counts bytes", ["cid-count"], full),
        ("handle_read wrapper", ["read-wrap"], full),
        (
            "handle_write and initiate_send wrappers",
            ["write-wrap", "initiate-wrap"],
            full,
        ),
        ("push override that adds a line before 250 replies", ["push-split"], full),
        ("readable()/writable() overrides", ["poll-wrap"], full),
        ("_strip_command_keyword override", ["strip-wrap"], full),
    ]
    b.add(
        "reimplemented",
        "smtp_EHLO reimplemented (it adds to the class-level "
        "command_size_limits), then a second client that sends HELO",
        [
            b"EHLO h.example\r\n",
            b"QUIT\r\n",
            (1, "connect"),
            (1, b"HELO h.example\r\n"),
            (1, b"MAIL FROM:<" + b"m" * 500 + b"@example.com>\r\n"),
            (1, b"QUIT\r\n"),
        ],
        channel_mods=["ehlo-reimplemented", "verbs"],
        server_mods=["pm-ok"],
    )
    for desc, mods, steps in cases:
        ehlo = "EHLO" in desc or "_getparams" in desc or rng.random() < 0.3
        greet = (
            []
            if "HELO reimplemented" in desc or "EHLO reimpl" in desc
            else [_hello(ehlo)]
        )
        if "EHLO reimplemented" in desc:
            greet = [b"EHLO h.example\r\n"]
        if "HELO reimplemented" in desc:
            greet = [b"HELO h.example\r\n"]
        b.add(
            "reimplemented",
            desc,
            greet + steps,
            channel_mods=mods + ["verbs"],
            server_mods=["pm-ok"],
            debug=rng.random() < 0.3,
        )


def _collisions(b):
    """Subclass helpers whose names smtpd_compat might use internally."""
    msg = _stuffed(["Subject: c", "", "x"])
    full = [
        _hello(),
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        msg,
        b"QUIT\r\n",
    ]
    for name in [
        "_deliver",
        "_handle_message",
        "_start_data",
        "_take_received",
        "_process_input",
        "_close_input",
        "_send_queued",
        "_handle_command_line",
    ]:
        b.add(
            "collisions",
            "channel subclass defines its own helper %s()" % name,
            full,
            channel_mods=["helper:" + name],
            server_mods=["pm-ok"],
        )


def _documented(b):
    msg = _stuffed(["Subject: d", "", "x"])
    b.add(
        "documented",
        "commands pipelined after QUIT",
        [_hello(), b"QUIT\r\nNOOP\r\nHELP\r\n"],
        server_mods=["pm-ok"],
        rule="quit-pipelined",
        expect={"step": 1, "reply": b"221 Bye\r\n"},
    )
    b.add(
        "documented",
        "message and QUIT then more commands in one write",
        [
            _hello(),
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            msg + b"QUIT\r\nMAIL FROM:<a@example.com>\r\n",
        ],
        server_mods=["pm-ok"],
        rule="quit-pipelined",
        expect={"step": 2, "reply": b"250 OK\r\n221 Bye\r\n"},
    )
    b.add(
        "documented",
        "a refused RCPT with parameters, then DATA",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<b@example.com>\r\n",
            b"RCPT TO:<c@example.com> NOTIFY=NEVER\r\n",
            b"DATA\r\n",
            msg,
            b"QUIT\r\n",
        ],
        server_mods=["pm-ok"],
        rule="rcpt-options-refused",
    )
    b.add(
        "documented",
        "refused RCPT parameters seen by a verb",
        [
            _hello(True),
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<c@example.com> FOO=1\r\n",
            b"RCPT TO:<c@example.com>\r\n",
        ],
        server_mods=["pm-ok"],
        channel_mods=["verbs"],
        rule="rcpt-options-refused",
    )


FAMILIES = [
    _plain,
    _errors,
    _verbs,
    _exceptions,
    _closes,
    _output,
    _debugging,
    _pureproxy,
    _mailman,
    _limits,
    _aliases,
    _server_hooks,
    _reimplemented,
    _collisions,
    _documented,
]


# The channel methods a subclass usually leaves alone: an implementation
# may take shortcuts through them (smtpd_compat batches replies when none
# of them is overridden), so the "light" twin of a session does not wrap
# them, and the shortcut is what gets compared.
UNWRAPPED_IN_LIGHT = (
    "send",
    "initiate_send",
    "handle_write",
    "push",
    "collect_incoming_data",
    "found_terminator",
)
# Channel behaviours that override one of those methods themselves.
_OVERRIDES_UNWRAPPED = ("send-", "push-", "initiate-", "write-", "cid-", "ft-")
# Families with light twins, and how many of their sessions get one.
_LIGHT_TWINS = {
    "plain": 20,
    "errors": 10,
    "verbs": None,
    "exceptions": None,
    "closes": None,
    "limits": None,
    "aliases": None,
    "server": None,
    "reimplemented": None,
    "collisions": None,
    "documented": None,
    "pureproxy": 4,
    "mailman": 3,
    "debugging": 5,
}


def _light_twins(sessions):
    twins = []
    taken = {}
    for session in sessions:
        family = session["id"].rsplit("-", 1)[0]
        if family not in _LIGHT_TWINS:
            continue
        if any(mod.startswith(_OVERRIDES_UNWRAPPED) for mod in session["channel_mods"]):
            continue
        limit = _LIGHT_TWINS[family]
        if limit is not None and taken.get(family, 0) >= limit:
            continue
        taken[family] = taken.get(family, 0) + 1
        twin = dict(session)
        twin["id"] = session["id"] + "-light"
        twin["desc"] = session["desc"] + " [light: %s not wrapped]" % "/".join(
            UNWRAPPED_IN_LIGHT
        )
        twin["instrument"] = "light"
        twins.append(twin)
    return twins


def generate(seed=SEED):
    """Every session, in a fixed order."""
    builder = _Builder(seed)
    for family in FAMILIES:
        family(builder)
    sessions = builder.sessions
    return sessions + _light_twins(sessions)


if __name__ == "__main__":
    for session in generate():
        print(session["id"], "-", session["desc"])
