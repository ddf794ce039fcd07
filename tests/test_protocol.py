"""The pure protocol helpers in smtpd_compat._protocol."""

import email._header_value_parser as header_parser
import itertools
import random
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpd_compat import _protocol
from smtpd_compat._protocol import (
    AddressError,
    SpecError,
    has_control_characters,
    parse_hostport,
    parse_params,
    size_exceeds,
    split_address,
    unstuff,
)

OK = b"250 OK\r\n"
MAIL_SYNTAX_EXT = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
TOO_BIG = b"552 Error: message size exceeds fixed maximum message size\r\n"

# --- split_address -------------------------------------------------------------


def reference_split(arg):
    """What 3.11's SMTPChannel._getaddr computes, via the email parser.

    Uses the parser functions smtpd_compat uses (a test may have replaced
    them with stand-ins) and accepts both of their result shapes: the rest
    of the string, or the index where it starts.  Raises whatever the
    parser raises.
    """
    if not arg:
        return "", ""
    if arg.lstrip().startswith("<"):
        token, rest = _protocol.get_angle_addr(arg)
    else:
        token, rest = _protocol.get_addr_spec(arg)
    if isinstance(rest, int):
        rest = arg[rest:]
    if not token:
        return "", rest
    return token.addr_spec, rest


def _skip_cfws(text, index):
    """Index after the comments and whitespace at ``text[index:]``.

    As the parser reads them: a run of whitespace starts with a space or a
    tab and takes every whitespace character; a comment nests and a
    backslash escapes the next character unless whitespace follows; an
    unclosed comment runs to the end.
    """
    while index < len(text) and text[index] in " \t(":
        if text[index] != "(":
            while index < len(text) and text[index].isspace():
                index += 1
            continue
        depth = 0
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text):
                index += 1 if text[index + 1].isspace() else 2
                continue
            index += 1
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    break
    return index


def lone_open_quote(arg):
    """Whether the local part of ``arg`` is one ``"`` that ends the input.

    Python 3.8 to 3.13's parser raises IndexError there; a fixed parser
    (CPython gh-148518) does not, and split_address refuses it anyway.
    """
    index = _skip_cfws(arg, 0)
    if arg.lstrip().startswith("<"):
        if arg[index : index + 1] != "<":
            return False
        index = _skip_cfws(arg, index + 1)
    return arg[index:] == '"'


def expected_split(arg):
    """``reference_split`` with parser failures mapped to AddressError."""
    try:
        result = reference_split(arg)
    except Exception:  # noqa: BLE001 - any parser failure counts
        return AddressError
    return AddressError if lone_open_quote(arg) else result


def actual_split(arg):
    """``split_address`` with AddressError, or any other exception, as a value."""
    try:
        return split_address(arg)
    except AddressError:
        return AddressError
    except Exception as exc:  # noqa: BLE001 - a wrong exception type is a mismatch too
        return type(exc)


def index_shaped(parse):
    """A stand-in for a get_* function that returns an index, not the rest.

    The shape proposed for the parser in CPython gh-136063: ``(value,
    pos=0)`` in, ``(token, position after the token)`` out.
    """

    def stand_in(value, pos=0):
        token, rest = parse(value[pos:])
        return token, len(value) - len(rest)

    return stand_in


def tolerate_lone_quote(monkeypatch):
    """Make this interpreter's parser read ``"`` as newer ones do.

    Python 3.8 to 3.13 raise IndexError in LocalPart.local_part for an
    empty, unterminated quoted string; a fixed parser (CPython gh-148518)
    gives an empty local part instead.
    """
    original = header_parser.LocalPart.local_part

    def local_part(self):
        try:
            return original.fget(self)
        except IndexError:
            return ""

    monkeypatch.setattr(header_parser.LocalPart, "local_part", property(local_part))


@pytest.fixture(params=["rest", "index"])
def parser_shape(request, monkeypatch):
    """Run a test with the parser's real result shape, then the index one."""
    if request.param == "index":
        for name in ("get_addr_spec", "get_angle_addr"):
            monkeypatch.setattr(_protocol, name, index_shaped(getattr(_protocol, name)))
    return request.param


def test_address_error_is_value_error():
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    "arg,expected",
    [
        ("", ("", "")),
        ("a@b", ("a@b", "")),
        ("<a@b>", ("a@b", "")),
        ("<a@b> SIZE=10", ("a@b", "SIZE=10")),
        ("a@b  x", ("a@b", "x")),
        ("<a@b>(c) x", ("a@b", "x")),
        ("<>", ("<>", "")),
        ("<> SIZE=3", ("<>", " SIZE=3")),
        ('<"a b"@c>', ('"a b"@c', "")),
        ('"a"@c', ("a@c", "")),
    ],
)
def test_split_address_examples(arg, expected):
    assert split_address(arg) == expected


@pytest.mark.parametrize(
    "arg",
    [
        "a@b",
        "<a@b>",
        "<a@b> SIZE=10 BODY=8BITMIME",
        "<>",
        "<> SIZE=3",
        "a@b  x",
        "a@b\tx",
        "<a@b>(c) x",
        "a@b (comment) x",
        '<"a b"@c>',
        '"a\\"b"@c d',
        '"quoted"@example.com',
        "  <a@b>",
        " a@b",
        "first.last@sub.example.com",
        "<a@[1.2.3.4]>",
        "a@b.c.d",
        "user+tag@example.com",
        "<@route:a@b>",
        "j\u00f6rg@b\u00fccher.example",
        "<a.b@c> x y z",
        "a@b>",
        # whitespace before a dot continues the dot-atom for the parser
        "a@b .c",
        "a@b\t.a@b;;<a@b>",
        "a@b .;1,",
        "a .b@c",
        # the parser raises inside addr_spec for a lone quote
        '"',
        'x"',
        # RFC 2047 encoded words, which the parser decodes
        "=?utf-8?q?x?=@b",
        "<=?utf-8?q?x?=@b>",
        "=?utf-8?q?x?=@b SIZE=10",
        "=?us-ascii?b?eA==?=.y@b",
        "a.=?utf-8?q?x?=@b",
        # whitespace other than space and tab after the address
        "<a@b> \x0bX",
        "<a@b>\x0bX",
        "<a@b>\xa0X",
        "a@b \x0bX",
    ],
)
def test_split_address_matches_parser(arg, parser_shape):
    assert actual_split(arg) == expected_split(arg)


@pytest.mark.parametrize(
    "arg",
    [
        "<",
        "@",
        "a@",
        "<a@>",
        "<<a@b>>",
        "a@b.",
        "<a@b",
        '"unterminated@b',
    ],
)
def test_split_address_parser_failures(arg, parser_shape):
    # Where this interpreter's parser copes, follow it; else AddressError.
    assert actual_split(arg) == expected_split(arg)


ALPHABET = [
    "a",
    "b",
    ".",
    "@",
    "<",
    ">",
    '"',
    "(",
    ")",
    "[",
    "]",
    " ",
    "\t",
    ",",
    ";",
    "\u00e9",
    "1",
    "-",
    "\\",
    ":",
    "a@b",
    "<a@b>",
    "x.y",
]


def random_args(seed, count, max_len):
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, max_len)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_split_address_differential(seed, parser_shape):
    mismatches = []
    for arg in random_args(seed, 1500, 8):
        expected = expected_split(arg)
        actual = actual_split(arg)
        if actual != expected:
            mismatches.append((arg, expected, actual))
    assert mismatches == []


def test_split_address_plain_mailboxes():
    rng = random.Random(99)
    atoms = ["a", "bob", "x1", "first.last", "o'neil", "t+z", "A-B", "q_r"]
    for _ in range(500):
        address = "%s@%s.%s" % (
            rng.choice(atoms),
            rng.choice(atoms[:3]),
            rng.choice(["com", "org"]),
        )
        rest = rng.choice(["", " SIZE=5", "  BODY=7BIT", "\tX", " (c)"])
        for arg in (address + rest, "<%s>%s" % (address, rest)):
            assert actual_split(arg) == expected_split(arg), arg


# --- the fast path: only where it is certain to agree with the parser ----------

# RFC 5322 atext, all of it.
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# What the parser treats specially, or may: specials, whitespace of every
# kind, non-ASCII, control characters.
NEAR_MISSES = '.()<>[]:;@\\,"' + " \t\x0b\x0c\x1c\x85\xa0\u2028\u3000\x00\x7f\xe9\u0661"


def assert_fast_path_agrees(arg):
    """If the fast path answers for ``arg``, its answer is the parser's."""
    fast = _protocol._split_plain_address(arg)
    if fast is not None:
        assert fast == reference_split(arg), arg
    return fast


@pytest.mark.parametrize(
    "arg",
    [
        "a@b",
        "first.last@sub.example.com",
        "user+tag@example.com",
        "o'neil@b",
        "a@b SIZE=10",
        "a@b\tBODY=8BITMIME",
        "<a@b>",
        "<a@b> SIZE=10 BODY=8BITMIME",
        "<a@b>SIZE=10",
        "<>",
        "<> SIZE=3",
        "<a=b?c@d>",
        # all of atext ("=?" would start an encoded word)
        "<" + ATEXT.replace("=?", "=x?") + "@b>",
        ATEXT.replace("=?", "?=") + "@b",
    ],
)
def test_fast_path_takes_common_shapes(arg):
    # These never reach the parser (that is the point of the fast path) ...
    assert assert_fast_path_agrees(arg) is not None
    # ... and split exactly as the parser does.
    assert split_address(arg) == reference_split(arg)


@pytest.mark.parametrize(
    "arg",
    [
        "=?utf-8?q?x?=@b",
        "<=?utf-8?q?x?=@b>",
        "a=?b@c",
        "<x.=?utf-8?q?y?=@b>",
        "<a@b> (comment)",
        "<a@b>(comment)",
        "<a@b> \x0bX",
        "<a@b>\xa0X",
        "a@b .c",
        "a@b (c) X",
        " <a@b>",
        '"a"@b',
        "a@[1.2.3.4]",
        "<>>",
    ],
)
def test_fast_path_leaves_special_shapes_to_the_parser(arg):
    assert _protocol._split_plain_address(arg) is None
    assert actual_split(arg) == expected_split(arg)


def test_encoded_word_address_as_in_311():
    # The email parser decodes RFC 2047 encoded words; 3.11's smtpd
    # reported the decoded address, in MAIL and RCPT alike.
    assert split_address("<=?utf-8?q?x?=@b>") == ("x@b", "")
    assert split_address("=?utf-8?q?x?=@b SIZE=1") == ("x@b", "SIZE=1")


@pytest.mark.parametrize("char", sorted(set(ATEXT + NEAR_MISSES)))
def test_fast_path_single_characters(char):
    """Every character in every position of a plain address."""
    # (with "?" the last local part is an RFC 2047 encoded word)
    locals_ = [
        "a",
        char,
        "a" + char,
        char + "a",
        "a." + char,
        "=%sus-ascii?q?x?=" % char,
    ]
    domains = ["b", "b" + char, "b." + char, char + "b"]
    suffixes = ["", " X", char, " " + char, char + "X", " " + char + "X"]
    answered = 0
    for local, domain, suffix in itertools.product(locals_, domains, suffixes):
        address = local + "@" + domain
        for arg in (address + suffix, "<" + address + ">" + suffix):
            answered += assert_fast_path_agrees(arg) is not None
    assert answered >= 4  # at least "a@b" and "<a@b>", bare and with " X"


_ATOMS = st.text(ATEXT, min_size=1, max_size=6)
_WORDS = st.one_of(
    _ATOMS,
    st.sampled_from(
        [
            "=?utf-8?q?x?=",
            "=?us-ascii?b?eA==?=",
            "=?utf-8?q?=41?=",
            "=?bogus?q?x?=",
            "=?utf-8?x?y?=",
            "=?",
            "?=",
            "=?=",
        ]
    ),
)
_PLAIN_LOCAL_PARTS = st.lists(_ATOMS, min_size=1, max_size=3).map(".".join)
_QUOTED = st.text(ATEXT + ' .@()<>\\"\t', max_size=6).map(lambda text: '"%s"' % text)
_ODD = st.text(ATEXT + NEAR_MISSES, min_size=1, max_size=8)
# Plain shapes, which the fast path takes, come up most often; the others
# probe its edges.
_LOCAL_PARTS = st.one_of(
    _PLAIN_LOCAL_PARTS,
    _PLAIN_LOCAL_PARTS,
    st.lists(_WORDS, min_size=1, max_size=3).map(".".join),
    _QUOTED,
    _ODD,
    st.tuples(_PLAIN_LOCAL_PARTS, _ODD).map("".join),
)
_PLAIN_DOMAINS = st.lists(
    st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=5),
    min_size=1,
    max_size=3,
).map(".".join)
_DOMAINS = st.one_of(
    _PLAIN_DOMAINS,
    _PLAIN_DOMAINS,
    st.lists(st.one_of(_ATOMS, _WORDS), min_size=1, max_size=3).map(".".join),
    st.sampled_from(["[1.2.3.4]", "[IPv6:::1]", "", "b.", ".b", "b..c"]),
    _ODD,
)
_ADDRESSES = st.one_of(
    st.tuples(_LOCAL_PARTS, _DOMAINS).map("@".join),
    st.tuples(_LOCAL_PARTS, _DOMAINS).map("@".join),
    _LOCAL_PARTS,
)
# Space and tab, which the fast path skips after an address, then any
# whitespace at all, which the parser may skip as well.
_WHITESPACE = st.tuples(
    st.sampled_from(["", " ", "  ", "\t"]),
    st.text(" \t\x0b\x0c\x1c\x85\xa0\u2028\u3000", max_size=2),
).map("".join)
_TAILS = st.one_of(
    st.sampled_from(
        [
            "",
            "SIZE=10",
            "BODY=8BITMIME SMTPUTF8",
            "(comment) X",
            "(c)",
            "(nested (c)) X",
            "(unclosed",
            "X",
            "\xe9",
            ".x",
            ">",
            "@c",
            ",x",
            ";",
            '"q"',
        ]
    ),
    st.text(ATEXT + NEAR_MISSES, max_size=6),
)
_SUFFIXES = st.tuples(_WHITESPACE, _TAILS).map("".join)


@st.composite
def _envelope_args(draw):
    address = draw(_ADDRESSES)
    shape = draw(st.sampled_from(["bare", "angle", "angle", "open", "close", "null"]))
    if shape == "angle":
        address = "<%s>" % address
    elif shape == "open":
        address = "<" + address
    elif shape == "close":
        address += ">"
    elif shape == "null":
        address = "<>"
    lead = draw(st.sampled_from(["", "", "", "", " ", "\t", "(c)", "<"]))
    return lead + address + draw(_SUFFIXES)


@settings(max_examples=1500, deadline=None, database=None)
@given(_envelope_args())
def test_fast_path_equals_parser(arg):
    """Whenever the fast path answers, it answers what the parser does."""
    assert_fast_path_agrees(arg)


@settings(max_examples=500, deadline=None, database=None)
@given(_envelope_args())
def test_split_address_property(arg):
    assert actual_split(arg) == expected_split(arg)


# --- the parser's result shapes, and parsers that read a lone '"' -------------

SMALL_ALPHABET = ["x", '"', "<", ">", "@", ".", " ", "(", ")", "\\"]


def small_args(max_len):
    for length in range(1, max_len + 1):
        for chars in itertools.product(SMALL_ALPHABET, repeat=length):
            yield "".join(chars)


@pytest.mark.parametrize("lone_quote", ["raises", "read"])
def test_split_address_exhaustive(parser_shape, lone_quote, monkeypatch):
    """Every short string, with each parser result shape and each parser
    behaviour for a lone ``"``: the same answers (the parser's, with a lone
    ``"`` always refused)."""
    if lone_quote == "read":
        tolerate_lone_quote(monkeypatch)
    mismatches = [
        (arg, expected, actual)
        for arg in small_args(4)
        for expected, actual in [(expected_split(arg), actual_split(arg))]
        if expected != actual
    ]
    assert mismatches == []


def test_lone_quote_is_what_old_parsers_could_not_read():
    """lone_open_quote() is exactly where this interpreter's parser fails in
    LocalPart.local_part, unless the parser is fixed (then nowhere)."""
    crashes = set()
    for arg in small_args(4):
        try:
            reference_split(arg)
        except IndexError as exc:
            if exc.__traceback__ is not None and any(
                frame.f_code.co_name == "local_part"
                for frame in _traceback_frames(exc.__traceback__)
            ):
                crashes.add(arg)
        except Exception:  # noqa: BLE001, S112 - other parser failures
            continue
    lone = {arg for arg in small_args(4) if lone_open_quote(arg)}
    assert '<  "' in lone and '(x)"' in lone and '"x' not in lone
    assert crashes in (lone, set())


def _traceback_frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


@pytest.mark.parametrize("arg", ['"', '<"', ' < "', '(c)"', '<(c) "'])
def test_lone_quote_refused_by_every_parser(arg, parser_shape, monkeypatch):
    tolerate_lone_quote(monkeypatch)
    # The fixed parser reads it (an angle-addr as '""') ...
    assert reference_split(arg)[0] in ("", '""')
    # ... but the reply must not depend on the Python version.
    with pytest.raises(AddressError) as info:
        split_address(arg)
    # The error names the argument the parser could not read.
    assert info.value.args == (arg,)


@pytest.mark.parametrize("arg", ['<"">', '<""@b>', '""@b', '"a"@b', '"a', '<"a"@b> X'])
def test_quoted_strings_still_parsed(arg, parser_shape, monkeypatch):
    tolerate_lone_quote(monkeypatch)
    assert split_address(arg) == reference_split(arg)


def test_index_shape_stand_in():
    """The stand-in returns what the proposed parser does: an index."""
    token, after = index_shaped(header_parser.get_angle_addr)("<a@b> SIZE=1")
    assert after == len("<a@b> ")
    assert token.addr_spec == "a@b"


@pytest.mark.parametrize("after", [None, b"x", 1.5, True, ["x"]])
def test_parser_result_of_unknown_shape(after, monkeypatch):
    token, _ = header_parser.get_addr_spec('"q"@b')
    monkeypatch.setattr(_protocol, "get_addr_spec", lambda value: (token, after))
    with pytest.raises(AddressError) as info:
        split_address('"q"@b x')
    # ... caused by a TypeError that shows what the parser returned.
    cause = info.value.__cause__
    assert type(cause) is TypeError
    assert str(cause) == "unexpected parser result: %r" % (after,)


@pytest.mark.parametrize(
    "error", [IndexError, KeyError, ValueError, TypeError, RecursionError]
)
def test_any_parser_failure_is_an_address_error(error, monkeypatch):
    def failing(value, pos=0):
        raise error("parser changed")

    monkeypatch.setattr(_protocol, "get_angle_addr", failing)
    with pytest.raises(AddressError) as info:
        split_address('<"q"@b>')
    assert isinstance(info.value.__cause__, error)
    assert info.value.args == ('<"q"@b>',)
    # the fast path does not need the parser
    assert split_address("<q@b>") == ("q@b", "")


# --- parse_params ----------------------------------------------------------------


@pytest.mark.parametrize(
    "params,expected",
    [
        ([], {}),
        (
            ["SIZE=10", "BODY=8BITMIME", "SMTPUTF8"],
            {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": True},
        ),
        (["X=a=b"], {"X": "a=b"}),
        (["A1=\u00e9"], {"A1": "\u00e9"}),
        (["A="], None),
        (["@X"], None),
        (["=5"], None),
        (["A-B=1"], None),
        (["OK", "A="], None),
        (["SIZE=1", "SIZE=2"], {"SIZE": "2"}),
    ],
)
def test_parse_params(params, expected):
    assert parse_params(params) == expected


# --- size_exceeds: MAIL's SIZE= as 3.11 read it ----------------------------------


# True: 552 (too big); False: accepted; None: the MAIL syntax reply.  Each row
# was checked against Python 3.11's smtpd; where the comment says "3.11
# crashed" it raised (and dropped the connection) instead of answering.
@pytest.mark.parametrize(
    "value,limit,expected",
    [
        ("12", 10, True),
        ("10", 10, False),
        ("0", 10, False),
        ("007", 10, False),
        ("\u0661\u0662", 10, True),  # Arabic-Indic 12
        ("\u0661\u0662", 20, False),
        ("\u0663", 0, False),
        ("\uff11\uff12", 11, True),  # fullwidth 12
        ("\U0001d7ce", 10, False),  # mathematical bold 0
        ("9" * 30, 10**40, False),
        ("9" * 30, 10**20, True),
        ("abc", 10, None),
        ("-5", None, None),
        ("1_0", 10, None),
        (" 1", 10, None),
        ("\u00bd", 10, None),  # a number, not a digit
        ("\u00b2", 10, None),  # 3.11 crashed: int() cannot read it
        ("1\u00b2", 10, None),  # 3.11 crashed
        ("\u2460", 10, None),  # circled 1; 3.11 crashed
        ("9" * 5000, 10, None),  # 3.11 crashed: over int()'s digit limit
        ("\u00b2", 0, False),  # no limit: 3.11 never converted it
        ("\u00b2", None, False),
        ("\u2460", None, False),
        ("9" * 5000, 0, False),
        (True, 10, None),  # bare SIZE; 3.11 crashed
        (True, None, None),  # 3.11 crashed
    ],
)
def test_size_exceeds(value, limit, expected):
    assert size_exceeds(value, limit) is expected


def reference_size(value, limit):
    """size_exceeds() built from the Unicode database instead of int()."""
    if not value.isdigit():
        return None
    if not limit:
        return False
    digits = [unicodedata.decimal(char, None) for char in value]
    if None in digits or len(digits) > 4300:  # int(): decimals, 4300 at most
        return None
    number = 0
    for digit in digits:
        number = number * 10 + digit
    return number > limit


_DIGITISH = "0123456789\u0660\u0663\u0669\u06f4\u0967\uff10\uff19\U0001d7d8\u00b2\u00b9\u2460\u2081\u00bd\u2155x-_ "


@settings(max_examples=1000, deadline=None, database=None)
@given(
    st.text(_DIGITISH, min_size=1, max_size=12),
    st.sampled_from([None, 0, 1, 99, 12345, 10**11]),
)
def test_size_exceeds_property(value, limit):
    assert size_exceeds(value, limit) is reference_size(value, limit)


@pytest.mark.parametrize(
    "limit,params,reply",
    [
        (10, "SIZE=\u0661\u0662", TOO_BIG),
        (20, "SIZE=\u0661\u0662", OK),
        (None, "SIZE=\u0661\u0662", OK),
        (10, "SIZE=\u00b2", MAIL_SYNTAX_EXT),
        (0, "SIZE=\u00b2", OK),
        (10, "SIZE", MAIL_SYNTAX_EXT),
        (0, "SIZE", MAIL_SYNTAX_EXT),
        (10, "SIZE=", MAIL_SYNTAX_EXT),
    ],
)
def test_mail_size_on_the_wire(serve, connect, limit, params, reply):
    client = connect(serve(data_size_limit=limit))
    client.cmd("EHLO x")
    assert client.cmd("MAIL FROM:<a@b> " + params) == reply
    # the connection goes on, and the transaction state is as 3.11 left it
    expected = b"503 Error: nested MAIL command\r\n" if reply == OK else OK
    assert client.cmd("MAIL FROM:<a@b>") == expected


# --- unstuff --------------------------------------------------------------------


def reference_unstuff(raw):
    crlf, lf, dot = (
        ("\r\n", "\n", ".") if isinstance(raw, str) else (b"\r\n", b"\n", b".")
    )
    lines = []
    for line in raw.split(crlf):
        if line.startswith(dot):
            line = line[1:]
        lines.append(line)
    return lf.join(lines)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (b"", b""),
        (b".", b""),
        (b"..", b"."),
        (b".a\r\n..b\r\nc.\r\n.", b"a\n.b\nc.\n"),
        (b"a\r\n\r\nb", b"a\n\nb"),
        (b"a\rb\nc", b"a\rb\nc"),
        (b"a\r\n.\r\nb", b"a\n\nb"),
        ("\u00e9\r\n.\u00e9", "\u00e9\n\u00e9"),
        ("..x\r\n", ".x\n"),
    ],
)
def test_unstuff_examples(raw, expected):
    result = unstuff(raw)
    assert type(result) is type(raw)
    assert result == expected


PIECES = [".", "..", "\r\n", "\r", "\n", "a", "\r\n.", "\u00e9", " "]


@pytest.mark.parametrize("kind", [str, bytes, bytearray])
def test_unstuff_differential(kind):
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))
        raw = text if kind is str else kind(text.encode("utf-8"))
        expected = reference_unstuff(raw if kind is not bytearray else bytes(raw))
        result = unstuff(raw)
        assert type(result) is (str if kind is str else bytes)
        assert result == expected, repr(text)


def test_unstuff_uses_up_a_bytearray():
    """A bytearray is emptied, so a big message is not kept twice."""
    buffer = bytearray(b".a\r\n..b\r\nc\rd")
    assert unstuff(buffer) == b"a\n.b\nc\rd"
    assert buffer == bytearray()


@pytest.mark.parametrize("tail", [b"", b"\r"])
def test_unstuff_bytearray_keeps_every_byte_but_crs_ending_lines(tail):
    # Every byte value but CR and LF, in lines; with a bare CR at the end,
    # CRLF pairs are replaced instead of all CRs deleted.
    data = bytes(b for b in range(256) if b not in b"\r\n")
    raw = data + b"\r\n." + data + b"\r\n" + data + tail
    expected = data + b"\n" + data + b"\n" + data + tail
    assert unstuff(bytearray(raw)) == expected
    assert unstuff(raw) == expected


# --- has_control_characters -----------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("250 OK", False),
        ("250 tab\there", False),
        # CRLF pairs separate the lines of a multi-line reply
        ("250-first\r\n250 second", False),
        ("250-a\r\n250-b\r\n250 c", False),
        ("250 a\rb", True),
        ("250 a\nb", True),
        ("250 a\r\r\nb", True),
        ("250 a\r\n\nb", True),
        ("250 a\r", True),
        ("\x00", True),
        ("250 \x1b[0m", True),
        ("250 \x7f", True),
    ],
)
def test_has_control_characters(text, expected):
    assert has_control_characters(text) is expected


# --- parse_hostport ----------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("localhost:8025", ("localhost", 8025)),
        ("127.0.0.1:25", ("127.0.0.1", 25)),
        ("[::1]:8025", ("::1", 8025)),
        ("[fe80::1%lo]:2525", ("fe80::1%lo", 2525)),
        (":25", ("", 25)),
        ("mail.example.com:0", ("mail.example.com", 0)),
        # the host ends at the first colon unless the spec starts with "["
        ("host]:25", ("host]", 25)),
    ],
)
def test_parse_hostport(spec, expected):
    assert parse_hostport(spec) == expected


@pytest.mark.parametrize(
    "spec,part",
    [
        ("localhost", "spec"),
        ("", "spec"),
        ("localhost:", "port"),
        ("localhost:smtp", "port"),
        ("host:25:26", "port"),
        ("::1:25", "port"),
        ("host:2.5", "port"),
        # a bracketed host ends at the first "]:"
        ("[::1]:25]:26", "port"),
    ],
)
def test_parse_hostport_errors(spec, part):
    with pytest.raises(SpecError) as info:
        parse_hostport(spec)
    assert info.value.part == part
    assert info.value.spec == spec
    assert str(info.value) == "bad %s: %s" % (part, spec)


def test_module_exports():
    for name in (
        "split_address",
        "parse_params",
        "unstuff",
        "parse_hostport",
        "AddressError",
        "SpecError",
        "size_exceeds",
    ):
        assert hasattr(_protocol, name)
        assert name in _protocol.__all__
