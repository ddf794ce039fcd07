"""The pure protocol helpers in smtpd_compat._protocol."""

import random
from email._header_value_parser import get_addr_spec, get_angle_addr

import pytest

from smtpd_compat import _protocol
from smtpd_compat._protocol import (
    AddressError,
    SpecError,
    parse_hostport,
    parse_params,
    split_address,
    unstuff,
)

# --- split_address -------------------------------------------------------------


def reference_split(arg):
    """What 3.11's SMTPChannel._getaddr computes, via the email parser.

    Raises whatever the parser raises.
    """
    if not arg:
        return "", ""
    if arg.lstrip().startswith("<"):
        token, rest = get_angle_addr(arg)
    else:
        token, rest = get_addr_spec(arg)
    if not token:
        return "", rest
    return token.addr_spec, rest


def expected_split(arg):
    """``reference_split`` with parser failures mapped to AddressError."""
    try:
        return reference_split(arg)
    except Exception:  # noqa: BLE001 - any parser failure counts
        return AddressError


def actual_split(arg):
    """``split_address`` with AddressError, or any other exception, as a value."""
    try:
        return split_address(arg)
    except AddressError:
        return AddressError
    except Exception as exc:  # noqa: BLE001 - a wrong exception type is a mismatch too
        return type(exc)


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
    ],
)
def test_split_address_matches_parser(arg):
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
def test_split_address_parser_failures(arg):
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
def test_split_address_differential(seed):
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
    ],
)
def test_parse_hostport_errors(spec, part):
    with pytest.raises(SpecError) as info:
        parse_hostport(spec)
    assert info.value.part == part


def test_module_exports():
    for name in (
        "split_address",
        "parse_params",
        "unstuff",
        "parse_hostport",
        "AddressError",
        "SpecError",
    ):
        assert hasattr(_protocol, name)
