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
    "has_control_characters",
    "parse_hostport",
    "parse_params",
    "parse_size",
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
# directly; anything else goes to the email package's parser, whose result
# the fast path reproduces exactly for the shapes it accepts.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_MAILBOX = rf"{_DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_BARE_ADDRESS = re.compile(rf"({_PLAIN_MAILBOX})(?:[ \t]+|\Z)")
_ANGLE_ADDRESS = re.compile(rf"<({_PLAIN_MAILBOX})>[ \t]*")


def split_address(arg: str) -> tuple[str, str]:
    """Split the argument of MAIL FROM:/RCPT TO:/VRFY into (address, rest).

    ``address`` is the addr-spec as CPython's smtpd reported it (``'<>'``
    for the null sender) and ``rest`` is the text after it, which holds
    the ESMTP parameters.  An empty argument gives ``('', '')``.

    Raises AddressError where the RFC 5322 parser gives up.
    """
    if not arg:
        return "", ""
    match = _ANGLE_ADDRESS.match(arg)
    if match is not None:
        rest = arg[match.end() :]
        if not rest.startswith("("):  # a comment: the parser skips it
            return match.group(1), rest
    elif arg.startswith("<>") and not arg.startswith("<>>"):
        return "<>", arg[2:]
    else:
        match = _BARE_ADDRESS.match(arg)
        if match is not None:
            rest = arg[match.end() :]
            # Only parameters may follow; anything else (a dot, a comment)
            # the parser might still read as part of the address.
            if not rest or rest[0].isalnum():
                return match.group(1), rest
    token: Any
    try:
        if arg.lstrip().startswith("<"):
            token, rest = get_angle_addr(arg)
        else:
            token, rest = get_addr_spec(arg)
        return (token.addr_spec if token else ""), rest
    except Exception as exc:  # the parser raises IndexError, HeaderParseError...
        raise AddressError(arg) from exc


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


def parse_size(value: str | bool) -> int | None:
    """The byte count of a ``SIZE=`` parameter, or None if it is no number."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


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
