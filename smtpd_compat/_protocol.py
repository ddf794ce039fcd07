"""Protocol rules of the SMTP server, as small pure functions.

Nothing here touches a socket, so the rules can be tested on their own:
envelope address splitting, ESMTP parameter parsing, DATA dot-unstuffing
and the ``host:port`` specs of the command line.
"""

from __future__ import annotations

import re
from email._header_value_parser import get_addr_spec, get_angle_addr
from typing import Any, AnyStr, overload

__all__ = [
    "AddressError",
    "SpecError",
    "Unstuffer",
    "has_control_characters",
    "parse_hostport",
    "parse_params",
    "size_exceeds",
    "split_address",
    "unstuff",
]


class AddressError(ValueError):
    """An envelope address that the RFC 5322 parser cannot read."""


class SpecError(ValueError):
    """A bad ``host:port`` spec; ``part`` says which half was wrong."""

    def __init__(self, part: str, spec: str) -> None:
        super().__init__(f"bad {part}: {spec}")
        self.part = part
        self.spec = spec


# An ordinary mailbox (dot-atom local part, dot-atom domain), the shape of
# nearly every address a client sends.  Such addresses are split here
# directly, and only where the result is certain to be the email parser's
# (tests/test_protocol.py compares the two on generated addresses); anything
# else goes to the parser.  Left to the parser although the pattern matches:
# - a local part holding "=?": a dot-atom that starts with it is read as an
#   RFC 2047 encoded word and decoded (=?utf-8?q?x?=@b gives x@b);
# - whitespace or a comment after the address that the pattern did not
#   consume: the parser skips every kind of whitespace there, and comments,
#   and may read what follows as part of the address.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_MAILBOX = rf"{_DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_BARE_ADDRESS = re.compile(rf"({_PLAIN_MAILBOX})(?:[ \t]+|\Z)")
_ANGLE_ADDRESS = re.compile(rf"<({_PLAIN_MAILBOX})>[ \t]*")
_ENCODED_WORD_START = "=?"


def split_address(arg: str) -> tuple[str, str]:
    """Split the argument of MAIL FROM:/RCPT TO:/VRFY into (address, rest).

    ``address`` is the addr-spec as CPython's smtpd reported it (``'<>'``
    for the null sender) and ``rest`` is the text after it, which holds
    the ESMTP parameters.  An empty argument gives ``('', '')``.

    Raises AddressError where the RFC 5322 parser gives up.
    """
    if not arg:
        return "", ""
    split = _split_plain_address(arg)
    if split is not None:
        return split
    return _split_with_parser(arg)


def _split_plain_address(arg: str) -> tuple[str, str] | None:
    """split_address() for the common shapes, or None to ask the parser."""
    if arg.startswith("<"):
        if arg.startswith("<>") and not arg.startswith("<>>"):
            # The parser takes nothing after a null address, not even spaces.
            return "<>", arg[2:]
        match = _ANGLE_ADDRESS.match(arg)
        if match is None:
            return None
        rest = arg[match.end() :]
        if rest and (rest[0] == "(" or rest[0].isspace()):
            return None
    else:
        match = _BARE_ADDRESS.match(arg)
        if match is None:
            return None
        rest = arg[match.end() :]
        # Only parameters may follow; anything else (a dot, a comment)
        # the parser might still read as part of the address.
        if rest and not rest[0].isalnum():
            return None
    address = match.group(1)
    if _ENCODED_WORD_START in address:
        return None
    return address, rest


def _split_with_parser(arg: str) -> tuple[str, str]:
    """split_address() by the email package's parser, as 3.11's smtpd did.

    Any exception from the parser (IndexError, HeaderParseError, or
    whatever a newer version raises) becomes AddressError.
    """
    parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
    try:
        token, rest = _parse_prefix(parse, arg)
        if _is_lone_open_quote(token):
            raise AddressError(arg)
        return (token.addr_spec if token else ""), rest
    except AddressError:
        raise
    except Exception as exc:  # the parser's failures vary by version
        raise AddressError(arg) from exc


def _parse_prefix(parse: Any, arg: str) -> tuple[Any, str]:
    """Run one of the parser's get_* functions: (token, unparsed rest).

    email._header_value_parser is private and its shape changes: up to now
    a get_* function returns the rest of the string after the token; a
    proposed rewrite (CPython PR 152521, for gh-136063) returns the index
    where the rest starts instead.  Both are accepted.
    """
    token, after = parse(arg)
    if isinstance(after, str):
        return token, after
    if isinstance(after, int) and not isinstance(after, bool):
        return token, arg[after:]
    raise TypeError(f"unexpected parser result: {after!r}")


def _is_lone_open_quote(token: Any) -> bool:
    """Whether the local part parsed is a ``"`` that the input ends after.

    The parser of Python 3.8 to 3.13 raises IndexError for such an address
    (``"``, ``<"``, ``< (c) "``), and 3.11's smtpd dropped the connection;
    a fixed parser (CPython gh-148518) reads an empty local part instead,
    which an angle-addr renders as ``""``.  Treating it as unreadable on
    every version keeps the reply the same whichever parser is installed.
    """
    if _kind(token) == "angle-addr":
        token = next((t for t in token if _kind(t) == "addr-spec"), None)
    if _kind(token) != "addr-spec" or not token or not token[0]:
        return False
    word = token[0][0]  # addr-spec -> local-part -> its word
    if _kind(word) != "quoted-string":
        return False
    return any(
        _kind(part) == "bare-quoted-string" and not part and part.defects
        for part in word
    )


def _kind(token: Any) -> Any:
    return getattr(token, "token_type", None)


def parse_params(params: list[str]) -> dict[str, str | bool] | None:
    """Turn ESMTP parameters (``['SIZE=10', 'SMTPUTF8']``) into a dict.

    A keyword without a value maps to True.  Returns None when any
    parameter is malformed (RFC 1869: an alphanumeric keyword, and a
    non-empty value after ``=``).
    """
    result: dict[str, str | bool] = {}
    for param in params:
        keyword, equals, value = param.partition("=")
        if not keyword.isalnum() or (equals and not value):
            return None
        result[keyword] = value if equals else True
    return result


def size_exceeds(value: str | bool, limit: int | None) -> bool | None:
    """Whether the message size a MAIL ``SIZE=`` value declares is over limit.

    None means the MAIL syntax reply: the value is not all digits (as in
    3.11), or there is no value (a bare ``SIZE``; 3.11 raised), or there is
    a limit to compare with and int() cannot read the digits (``SIZE=²``;
    3.11 raised).  Digits int() reads count as in 3.11, ``SIZE=١٢`` is 12.
    Without a limit (0 or None) 3.11 never converted the value, so any
    digits are accepted.
    """
    if not isinstance(value, str) or not value.isdigit():
        return None
    if not limit:
        return False
    try:
        size = int(value)
    except ValueError:  # superscripts and other non-decimal digits; or too long
        return None
    return size > limit


@overload
def unstuff(raw: str) -> str: ...
@overload
def unstuff(raw: bytes | bytearray) -> bytes: ...


def unstuff(raw: str | bytes | bytearray) -> str | bytes:
    """Undo DATA transparency (RFC 5321, 4.5.2) and join lines with LF.

    ``raw`` is the message as sent, lines separated by CRLF, without the
    final ``CRLF.CRLF``.  One leading dot is removed from every line that
    starts with a dot.  Works on str and bytes, in bulk operations.

    A bytearray gives bytes and is used up (emptied) on the way, so that a
    large message is never held more than twice in memory.
    """
    if isinstance(raw, bytearray):
        return _unstuff_buffer(raw)
    if isinstance(raw, bytes):
        return _unstuff(raw, b"\r\n", b"\r\n.", b"\n", b".")
    return _unstuff(raw, "\r\n", "\r\n.", "\n", ".")


def _unstuff(
    raw: AnyStr, crlf: AnyStr, crlf_dot: AnyStr, lf: AnyStr, dot: AnyStr
) -> AnyStr:
    if raw.startswith(dot):
        raw = raw[1:]
    if crlf_dot in raw:
        raw = raw.replace(crlf_dot, crlf)
    return raw.replace(crlf, lf)


# A CR that does not start a CRLF pair.
_BARE_CR = re.compile(rb"\r(?:[^\n]|\Z)")


def _unstuff_buffer(buffer: bytearray) -> bytes:
    # _unstuff()'s steps, each copy emptying the one before it.  (rfind()
    # and a regular expression are used where they are several times
    # faster on large buffers than `in` and count().)
    if buffer.startswith(b"."):
        del buffer[0]  # cheap: a bytearray drops its head without moving
    if buffer.rfind(b"\r\n.") >= 0:
        unstuffed = buffer.replace(b"\r\n.", b"\r\n")
        buffer.clear()
        buffer = unstuffed
    if _BARE_CR.search(buffer) is None:
        # Every CR ends a line: deleting them all is the same as replacing
        # CRLF pairs, and faster.
        joined = buffer.translate(None, b"\r")
    else:
        joined = buffer.replace(b"\r\n", b"\n")
    buffer.clear()
    data = bytes(joined)
    joined.clear()
    return data


# A CR followed by something other than LF (Unstuffer looks at a CR at the
# end of a piece itself).
_CR_NOT_ENDING_LINE = re.compile(rb"\r[^\n]")
# Pieces shorter than this are gathered into one bytearray instead of being
# kept one by one: a client that sends a byte per segment must not cost an
# object per byte.
_SMALL_PIECE = 4096


class Unstuffer:
    """``unstuff()`` for bytes that arrive piece by piece.

    ``feed()`` takes the message as sent, cut anywhere (a ``CRLF .`` or a
    CRLF pair may be split between two pieces), and unstuffs each piece
    while it is fresh in the cache; ``finish()`` returns what ``unstuff()``
    would have returned for all the pieces put together, at the cost of
    one copy.

    Both steps of unstuffing look at most two bytes back and one ahead: a
    dot goes when the two bytes before it are CRLF (or it starts the
    message), and a CR goes when an LF follows it.  So a piece only needs
    to know whether the input so far ended with CRLF, and a CR at its end
    is kept back until the next byte tells what it is.
    """

    __slots__ = ("_held_cr", "_line_start", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[bytes | bytearray] = []
        self._line_start = True  # the input so far ended with CRLF (or is empty)
        self._held_cr = False  # the input so far ended with a CR, not yet output

    def feed(self, raw: bytes) -> None:
        """Unstuff the next piece of the message (CRLF line ends, stuffed)."""
        if not raw:
            return
        if self._held_cr:
            raw = b"\r" + raw
            self._held_cr = False
        elif self._line_start and raw[:1] == b".":
            raw = raw[1:]
            if not raw:
                self._line_start = False
                return
        self._line_start = raw.endswith(b"\r\n")
        if raw.endswith(b"\r"):
            self._held_cr = True
            raw = raw[:-1]
        # rfind() finds nothing faster than replace() or `in` do.
        if raw.rfind(b"\r\n.") >= 0:
            raw = raw.replace(b"\r\n.", b"\r\n")
        if _CR_NOT_ENDING_LINE.search(raw) is None and not raw.endswith(b"\r"):
            # Every CR ends a line: deleting them all is the same as
            # replacing CRLF pairs, and several times faster.
            raw = raw.replace(b"\r", b"")
        else:
            raw = raw.replace(b"\r\n", b"\n")
        pieces = self._pieces
        if not pieces or len(raw) >= _SMALL_PIECE:
            pieces.append(raw)  # (a message in one piece is not copied again)
        elif isinstance(pieces[-1], bytearray):
            pieces[-1] += raw
        else:
            pieces.append(bytearray(raw))

    def so_far(self) -> bytes:
        """What finish() would return now, without starting over."""
        pieces = self._pieces
        return b"".join([*pieces, b"\r"] if self._held_cr else pieces)

    def finish(self) -> bytes:
        """The message unstuffed, with LF line ends; starts over afterwards."""
        pieces = self._pieces
        if self._held_cr:
            pieces.append(b"\r")  # the message ended with a bare CR
        data = pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else None
        if data is None:
            data = b"".join(pieces)
        self._pieces = []
        self._line_start = True
        self._held_cr = False
        return data


# What RFC 5321 (4.2) does not allow in the text of a reply: control
# characters other than HT.  A CR or LF in particular would start a line the
# client reads as a reply of its own (2.3.8).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    """Whether reply text holds a character RFC 5321 forbids there.

    CRLF pairs, which separate the lines of a multi-line reply, are
    allowed; any other control character except HT is not.
    """
    if _CONTROL_CHARACTER.search(text) is None:
        return False
    return _CONTROL_CHARACTER.search(text.replace("\r\n", "")) is not None


def parse_hostport(spec: str) -> tuple[str, int]:
    """Split a command line spec ``host:port`` (or ``[v6addr]:port``).

    As CPython's smtpd did, the host ends at the first colon; a bracketed
    IPv6 address is accepted as well.  Raises SpecError with ``part``
    'spec' when there is no port separator, 'port' when the port is not
    an integer.
    """
    if spec.startswith("[") and "]:" in spec:
        host, _, port = spec[1:].partition("]:")
    else:
        host, colon, port = spec.partition(":")
        if not colon:
            raise SpecError("spec", spec)
    try:
        return host, int(port)
    except ValueError:
        raise SpecError("port", spec) from None
