"""SMTP AUTH (RFC 4954) without sockets: decoding, exchanges, checks.

The channel feeds an ``Exchange`` the client's lines and sends what it is
told; an exchange ends with ``Credentials`` that ``verify()`` checks against
the server's authenticator.  Everything here is pure, so that each step can
be tested on its own.

Mechanisms: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login), each
with or without an initial response, and CRAM-MD5 (RFC 2195), which needs
the server to know the password and so is only offered when the
authenticator is a mapping of user to password.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Union

# Reply texts (README "TLS and AUTH (opt-in)" lists them).
SUCCEEDED = "235 2.7.0 Authentication successful"
FAILED = "535 5.7.8 Authentication credentials invalid"
CANNOT_DECODE = "501 5.5.2 Cannot decode response"
ABORTED = "501 5.7.0 Auth aborted"
UNRECOGNIZED = "504 5.5.4 Unrecognized authentication type"
ALREADY = "503 Already authenticated"
IN_TRANSACTION = "503 Error: AUTH not allowed during a mail transaction"
ENCRYPTION_REQUIRED = (
    "538 5.7.11 Encryption required for requested authentication mechanism"
)
REQUIRED = "530 5.7.0 Authentication required"
SYNTAX = "501 Syntax: AUTH <mechanism> [initial-response]"
NO_INITIAL_RESPONSE = "501 5.5.4 Initial response not allowed for CRAM-MD5"

# Mechanisms that only need a yes/no from the authenticator, and those that
# need the password itself.
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")
DIGEST_MECHANISMS = ("CRAM-MD5",)

# What may be given as ``authenticator``: a mapping user -> password, or a
# callable (channel, mechanism, login, password) -> bool.
Authenticator = Union["Mapping[str, str]", Callable[[Any, str, str, str], Any]]


class AuthError(Exception):
    """The exchange failed; ``reply`` is what the client is told."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Credentials(NamedTuple):
    """What a finished exchange gathered.

    ``secret`` is the password (PLAIN, LOGIN) or the client's hex digest
    (CRAM-MD5, whose ``challenge`` is then the one that was sent).  The
    repr hides the secret, so that it cannot end up in a log line.
    """

    mechanism: str
    login: str
    secret: str
    challenge: bytes = b""

    def __repr__(self) -> str:
        return "Credentials(mechanism=%r, login=%r, secret='***')" % (
            self.mechanism,
            self.login,
        )


def mechanisms_for(authenticator: Any) -> tuple[str, ...]:
    """The mechanisms to offer with this authenticator, in EHLO order."""
    if isinstance(authenticator, Mapping):
        return PASSWORD_MECHANISMS + DIGEST_MECHANISMS
    return PASSWORD_MECHANISMS


def decode_base64(text: str) -> bytes:
    """Strict base64 of one response; ``=`` alone is the empty response.

    Raises AuthError(CANNOT_DECODE) for anything that is not base64.
    """
    if text == "=":  # RFC 4954: an initial response of zero length
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise AuthError(CANNOT_DECODE) from None


def encode_base64(data: bytes) -> str:
    """The base64 text of a challenge."""
    return base64.b64encode(data).decode("ascii")


def _text(data: bytes) -> str:
    # SASL strings are UTF-8 (RFC 4616, RFC 4422).
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError(CANNOT_DECODE) from None


def decode_plain(response: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of a decoded PLAIN response.

    Raises AuthError(CANNOT_DECODE) unless it holds exactly two NULs.
    """
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise AuthError(CANNOT_DECODE)
    authzid, authcid, password = (_text(part) for part in parts)
    return authzid, authcid, password


def cram_md5_challenge(fqdn: str) -> bytes:
    """A fresh challenge in the RFC 2195 form ``<random.timestamp@host>``."""
    return (
        "<%d.%d@%s>" % (int.from_bytes(os.urandom(8), "big"), time.time(), fqdn)
    ).encode("ascii", "replace")


def cram_md5_digest(password: str, challenge: bytes) -> str:
    """The hex HMAC-MD5 of the challenge keyed with the password."""
    return hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()


def split_cram_md5_response(response: bytes) -> tuple[str, str]:
    """(login, hex digest) of a decoded CRAM-MD5 response ``user SP digest``."""
    login, space, digest = _text(response).rpartition(" ")
    if not space or not login or not digest:
        raise AuthError(CANNOT_DECODE)
    return login, digest.lower()


class Exchange:
    """One AUTH exchange, from the AUTH command to its credentials.

    ``start()`` and ``feed(line)`` return either the text of a ``334``
    challenge to send (base64 already, possibly empty) or the finished
    ``Credentials``; they raise AuthError with the reply to send when the
    exchange fails.  ``*`` from the client cancels it.
    """

    def __init__(
        self, mechanism: str, initial_response: str | None, fqdn: str = "localhost"
    ) -> None:
        self.mechanism = mechanism
        self._initial = initial_response
        self._fqdn = fqdn
        self._login: str | None = None
        self._challenge = b""

    def __repr__(self) -> str:
        return "<Exchange %s>" % self.mechanism

    def start(self) -> str | Credentials:
        """The first step, right after the AUTH command."""
        initial = self._initial
        self._initial = None
        if self.mechanism == "CRAM-MD5":
            if initial is not None:
                raise AuthError(NO_INITIAL_RESPONSE)
            self._challenge = cram_md5_challenge(self._fqdn)
            return encode_base64(self._challenge)
        if initial is None:
            # PLAIN asks with an empty challenge, LOGIN with "Username:".
            return "" if self.mechanism == "PLAIN" else encode_base64(b"Username:")
        if initial == "*":
            raise AuthError(ABORTED)
        return self._take(decode_base64(initial))

    def feed(self, line: str) -> str | Credentials:
        """The next step, given the client's response line."""
        if line.strip() == "*":
            raise AuthError(ABORTED)
        return self._take(decode_base64(line.strip()))

    def _take(self, response: bytes) -> str | Credentials:
        if self.mechanism == "PLAIN":
            authzid, login, password = decode_plain(response)
            if authzid and authzid != login:
                # Acting for somebody else is not supported: refuse.
                raise AuthError(FAILED)
            return Credentials("PLAIN", login, password)
        if self.mechanism == "LOGIN":
            if self._login is None:
                self._login = _text(response)
                return encode_base64(b"Password:")
            return Credentials("LOGIN", self._login, _text(response))
        login, digest = split_cram_md5_response(response)
        return Credentials("CRAM-MD5", login, digest, self._challenge)


def verify(authenticator: Any, channel: Any, credentials: Credentials) -> bool:
    """Whether the credentials are good, by the server's authenticator.

    A mapping is looked up (comparing in constant time); a callable is
    asked ``authenticator(channel, mechanism, login, password)``.
    """
    mechanism, login, secret, challenge = credentials
    if isinstance(authenticator, Mapping):
        password = authenticator.get(login)
        if not isinstance(password, str):
            return False
        if mechanism in DIGEST_MECHANISMS:
            expected = cram_md5_digest(password, challenge)
            return hmac.compare_digest(expected.encode(), secret.encode("utf-8"))
        return hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
    if mechanism in DIGEST_MECHANISMS:
        return False  # not offered: a callable never sees the password
    return bool(authenticator(channel, mechanism, login, secret))


def redacted(line: bytes) -> bytes:
    """An AUTH command line as it may be logged: mechanism kept, rest hidden."""
    words = line.split(None, 2)
    if len(words) <= 2:
        return bytes(line)
    return b" ".join(words[:2]) + b" ***"
