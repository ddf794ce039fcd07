"""An SMTP server that keeps every message it receives, for tests.

``CapturingServer`` accepts all mail and records each message with its
envelope; a test waits for the mail it expects with ``wait_for()`` and
inspects it, either as received or as a parsed ``EmailMessage``.
``CapturingController`` runs one in a background thread (see
``smtpd_compat.controller``)::

    from smtpd_compat.capture import CapturingController

    with CapturingController() as sink:
        send_welcome_mail(host=sink.host, port=sink.port)
        [mail] = sink.wait_for(1)
        assert mail.rcpt_tos == ("new.user@example.com",)
        assert mail.message["Subject"] == "Welcome"
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast

from . import SMTPServer
from .controller import Controller

__all__ = ["CapturedMessage", "CapturingController", "CapturingServer"]


class _UTF8HeadersPolicy(email.policy.EmailPolicy):
    """``email.policy.default``, reading raw UTF-8 in headers as text.

    The bytes parser hands header values over with each non-ASCII byte as
    a surrogate escape; the header classes then keep those escapes in
    parsed parts such as addresses.  Messages sent with SMTPUTF8 carry
    UTF-8 headers (RFC 6532), so a value that is valid UTF-8 is decoded
    here.  Anything else is left as it came.
    """

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        try:
            value = value.encode("ascii", "surrogateescape").decode("utf-8")
        except UnicodeError:
            pass
        return name, value


_POLICY = _UTF8HeadersPolicy()


def _parse(data: bytes | str) -> EmailMessage:
    """Parse a message as received by process_message().

    Text (``decode_data=True``) was decoded from UTF-8 by the server; it is
    encoded back and parsed as bytes like everything else, since the email
    package only decodes 8-bit bodies by their charset when parsing bytes.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return cast(EmailMessage, email.message_from_bytes(data, policy=_POLICY))


@dataclass(frozen=True)
class CapturedMessage:
    """One message as a CapturingServer received it.

    ``data`` is exactly what ``process_message()`` got: the content with
    the SMTP dot-stuffing undone and lines ending in LF, as bytes (or as
    str when the server has ``decode_data=True``).  ``message`` is that
    content parsed with the email package's default policy (raw UTF-8 in
    headers, as SMTPUTF8 clients send it, is read as text).

    ``mail_options`` and ``rcpt_options`` are the upper-cased ESMTP
    parameters of MAIL FROM and of the last accepted RCPT TO, as smtpd
    reports them; with ``decode_data=True`` smtpd does not report them and
    they are empty.

    ``auth_login`` is the user the client authenticated as (None without
    AUTH) and ``tls`` the TLS protocol version of the connection, such as
    ``"TLSv1.3"`` (None when the message came in plain text).  The server
    reports them only when it offers AUTH or TLS; otherwise they are None.
    """

    peer: Any
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    data: bytes | str
    message: EmailMessage = field(compare=False, repr=False)
    auth_login: str | None = None
    tls: str | None = None

    def __str__(self) -> str:
        subject = self.message.get("Subject")
        return "message from %s to %s, Subject: %s" % (
            self.mail_from,
            ", ".join(self.rcpt_tos),
            subject if subject is not None else "(none)",
        )


class CapturingServer(SMTPServer):
    """Accepts every message and keeps it, in the order of arrival.

    Takes SMTPServer's arguments.  The loop thread records messages while
    tests read them from another thread: ``messages``, ``wait_for()`` and
    ``clear()`` are safe to use from any thread.

    Subclasses may override ``process_message()`` to answer differently;
    calling ``super().process_message(...)`` records the message.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._captured: list[CapturedMessage] = []
        self._arrival = threading.Condition(threading.Lock())
        super().__init__(*args, **kwargs)

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kwargs: Any
    ) -> str | None:
        """Record the message; the client gets ``250 OK``."""
        record = CapturedMessage(
            peer=peer,
            mail_from=mailfrom,
            rcpt_tos=tuple(rcpttos),
            mail_options=tuple(kwargs.get("mail_options") or ()),
            rcpt_options=tuple(kwargs.get("rcpt_options") or ()),
            data=data,
            message=_parse(data),
            # Passed by the server only when AUTH or TLS is on.
            auth_login=kwargs.get("auth_login"),
            tls=kwargs.get("tls_version"),
        )
        with self._arrival:
            self._captured.append(record)
            self._arrival.notify_all()
        return None

    @property
    def messages(self) -> list[CapturedMessage]:
        """A copy of the list of messages received so far."""
        with self._arrival:
            return list(self._captured)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[CapturedMessage]:
        """Wait until ``count`` messages have arrived; return all received.

        Counts every message since the start (or the last ``clear()``), so
        ``wait_for(2)`` after one message waits for one more.  Raises
        TimeoutError, saying what did arrive, after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._arrival:
            while len(self._captured) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._shortfall(count, timeout))
                self._arrival.wait(remaining)
            return list(self._captured)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._arrival:
            self._captured.clear()

    def _shortfall(self, count: int, timeout: float) -> str:
        arrived = self._captured
        text = "expected %d message%s within %g s, %d arrived" % (
            count,
            "" if count == 1 else "s",
            timeout,
            len(arrived),
        )
        if arrived:
            text += ": " + "; ".join(str(message) for message in arrived)
        return text


class CapturingController(Controller[CapturingServer]):
    """A Controller running a CapturingServer, with its methods at hand.

    ``server_class`` may be a subclass of CapturingServer; the keyword
    arguments are those of Controller (``tls``, ``auth`` and the like
    included) and of the server class::

        with CapturingController(enable_SMTPUTF8=True) as sink:
            ...
            sink.wait_for(1)
    """

    def __init__(
        self, server_class: type[CapturingServer] = CapturingServer, **kwargs: Any
    ) -> None:
        super().__init__(server_class, **kwargs)

    def _capturing_server(self) -> CapturingServer:
        if self.server is None:
            raise RuntimeError("the controller has not been started")
        return self.server

    @property
    def messages(self) -> list[CapturedMessage]:
        """A copy of the list of messages received so far."""
        return self._capturing_server().messages

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[CapturedMessage]:
        """Wait until ``count`` messages have arrived: see CapturingServer."""
        return self._capturing_server().wait_for(count, timeout)

    def clear(self) -> None:
        """Forget the messages received so far."""
        self._capturing_server().clear()
