"""An SMTP server framework with the API of Python's old ``smtpd`` module.

``smtpd`` (with ``asyncore`` and ``asynchat``) left the standard library in
Python 3.12.  This module offers the same names with the same behaviour as
CPython 3.11's ``smtpd``, so code written for it runs unchanged:

* ``SMTPChannel``: one client connection, speaking RFC 5321 with the
  SIZE (RFC 1870), 8BITMIME and SMTPUTF8 (RFC 6531) extensions;
* ``SMTPServer``: listens and hands each message to ``process_message()``;
* ``DebuggingServer``: prints each message on standard output;
* ``PureProxy``: relays each message to another SMTP server;
* ``Options``, ``parseargs()`` and ``usage()``: the command line, which
  runs as ``python -m smtpd_compat``.

Where CPython's smtpd crashed, hung or lost mail, this one answers with an
SMTP reply and keeps serving; README.rst lists each such difference.
"""

from __future__ import annotations

import collections
import errno
import functools
import getopt
import importlib
import inspect
import os
import re
import select
import socket
import sys
import time
import warnings
from typing import Any, NoReturn

from . import _protocol
from .asynchat import async_chat, asyncore

__all__ = ["DebuggingServer", "MailmanProxy", "PureProxy", "SMTPChannel", "SMTPServer"]

program = sys.argv[0]
__version__ = "Python SMTP proxy version 0.3"


class Devnull:
    """A stream that drops everything written to it."""

    def write(self, msg: str) -> None:
        pass

    def flush(self) -> None:
        pass


# Where the debugging prints go; ``-d`` on the command line sets it to
# sys.stderr.  Looked up at call time, so it can be replaced at any moment.
DEBUGSTREAM: Any = Devnull()
NEWLINE = "\n"
COMMASPACE = ", "
DATA_SIZE_DEFAULT = 33554432

# The real socket module's TCP constants: the module-level ``socket`` may be
# replaced by a test double that lacks them.
_TCP_NODELAY_OPTION = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
_SHUT_RDWR = socket.SHUT_RDWR
_LISTEN_BACKLOG = 1024
# accept() errors that mean "not now" rather than "broken", and how long
# (seconds) to stop accepting after one.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE = 0.1
_ACCEPTS_PER_PASS = 64
_LOCAL_ERROR = "451 Requested action aborted: local error in processing"
_BAD_SYNTAX = "500 Error: bad syntax"


def _debugging() -> bool:
    """Whether DEBUGSTREAM prints go anywhere (and so are worth building)."""
    return type(DEBUGSTREAM) is not Devnull


def _debug(*values: object) -> None:
    if _debugging():
        print(*values, file=DEBUGSTREAM)


def _server_fqdn(server: Any) -> str:
    """The host name for replies, looked up once per server.

    The cached name is tied to the ``socket`` module that produced it, so a
    test that swaps ``smtpd_compat.socket`` gets a fresh lookup.
    """
    cached = getattr(server, "_smtpd_compat_fqdn", None)
    if isinstance(cached, tuple) and cached[0] is socket:
        return cached[1]
    fqdn = socket.getfqdn()
    try:
        server._smtpd_compat_fqdn = (socket, fqdn)
    except AttributeError:
        pass
    return fqdn


@functools.lru_cache(maxsize=256)
def _accepted_options(process_message: Any) -> frozenset | None:
    """Which of mail_options/rcpt_options a process_message takes.

    None means all of them (it has ``**kwargs``).  Handlers written before
    Python 3.5 take none, and were called without them.
    """
    try:
        parameters = inspect.signature(process_message).parameters.values()
    except (TypeError, ValueError):
        return None
    names = set()
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
            names.add(parameter.name)
    return frozenset(names & {"mail_options", "rcpt_options"})


def _options_for(process_message: Any, options: dict[str, list[str]]) -> dict:
    target = getattr(process_message, "__func__", process_message)
    try:
        accepted = _accepted_options(target)
    except TypeError:  # unhashable callable
        accepted = _accepted_options.__wrapped__(target)
    if accepted is None:
        return options
    return {name: value for name, value in options.items() if name in accepted}


def usage(code: int, msg: object = "") -> NoReturn:
    """Print the command line help (and msg) on stderr, exit with code."""
    print(_USAGE % {"program": program, "version": __version__}, file=sys.stderr)
    if msg:
        print(msg, file=sys.stderr)
    sys.exit(code)


_USAGE = """\
Usage: python -m smtpd_compat [options] [localhost:localport [remotehost:remoteport]]

Runs an SMTP server that hands every message it receives to a server class.

Options:
  -n, --nosetuid      do not switch to the user 'nobody' after binding
                      (needed unless started as root)
  -c, --class NAME    the server class: a name defined in smtpd_compat
                      (DebuggingServer, PureProxy, ...) or a dotted
                      package.module.Class; default PureProxy
  -s, --size LIMIT    refuse messages larger than LIMIT bytes and announce
                      the limit with the SIZE extension (RFC 1870);
                      without it, message size is not limited
  -u, --smtputf8      offer the SMTPUTF8 extension (RFC 6531)
  -t, --idle-timeout SECONDS
                      disconnect clients that stay silent this long, after
                      a 421 reply; without it, clients may idle forever
  -d, --debug         print protocol details on stderr
  -V, --version       print the version and exit
  -h, --help          print this help and exit

The local address defaults to localhost:8025 and the remote address (where
PureProxy relays to) to localhost:25.  IPv6 addresses go in brackets, as in
[::1]:8025.

Version: %(version)s"""


class SMTPChannel(async_chat):
    """One SMTP session with a client, on behalf of an SMTPServer."""

    COMMAND = 0
    DATA = 1

    command_size_limit = 512
    # The class-level table is kept for code that looks at it; a channel
    # makes its own table when EHLO first changes a limit.
    command_size_limits: collections.defaultdict[str, int] = collections.defaultdict(
        functools.partial(int, command_size_limit)  # a factory giving 512
    )

    def _own_command_size_limits(self) -> collections.defaultdict[str, int]:
        """This channel's command size table, made on first use.

        (CPython shared one table among all connections; each channel
        starts from an empty table with the class table's default.)
        """
        limits = self.__dict__.get("command_size_limits")
        if limits is None:
            shared = type(self).command_size_limits
            limits = collections.defaultdict(getattr(shared, "default_factory", None))
            self.command_size_limits = limits
        return limits

    @property
    def max_command_size_limit(self) -> int:
        """The longest command line this channel accepts at the moment."""
        try:
            return max(self.command_size_limits.values())
        except ValueError:
            return self.command_size_limit

    def __init__(
        self,
        server: Any,
        conn: Any,
        addr: Any,
        data_size_limit: int | None = DATA_SIZE_DEFAULT,
        map: dict | None = None,
        enable_SMTPUTF8: bool = False,
        decode_data: bool = False,
    ) -> None:
        if enable_SMTPUTF8 and decode_data:
            raise ValueError(
                "decode_data and enable_SMTPUTF8 cannot be set to True at the same time"
            )
        async_chat.__init__(self, conn, map=map)
        self.smtp_server = server
        self.conn = conn
        self.addr = addr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        # Private attributes of CPython's smtpd that subclasses rely on
        # (CPython's own smtplib tests join received_lines with
        # _emptystring).
        self._emptystring: Any = "" if decode_data else b""
        self._linesep: Any = "\r\n" if decode_data else b"\r\n"
        self._dotsep: Any = "." if decode_data else ord(b".")
        self._newline: Any = NEWLINE if decode_data else b"\n"
        self._set_rset_state()
        self.seen_greeting = ""
        self.extended_smtp = False
        self.fqdn = _server_fqdn(server)
        try:
            self.peer = conn.getpeername()
        except OSError as err:
            # The client may already be gone.
            self.close()
            if err.errno != errno.ENOTCONN:
                raise
            return
        try:
            conn.setsockopt(*_TCP_NODELAY_OPTION, 1)
        except (OSError, AttributeError, TypeError):
            pass  # not TCP
        if getattr(server, "idle_timeout", None) is not None:
            self._last_activity = time.monotonic()
        _debug("Peer:", repr(self.peer))
        self.push("220 %s %s" % (self.fqdn, __version__))

    def _set_post_data_state(self) -> None:
        """Reset the transaction, as after a message: the greeting stays."""
        self.smtp_state = self.COMMAND
        self.mailfrom: str | None = None
        self.rcpttos: list[str] = []
        self.require_SMTPUTF8 = False
        self.num_bytes = 0
        if self._data_seeded:  # (not stored at all until a first DATA)
            self._data_seeded = False
        self.set_terminator(b"\r\n")

    def _set_rset_state(self) -> None:
        """Reset everything but the greeting (RSET, HELO, EHLO)."""
        self._set_post_data_state()
        self.received_data: Any = ""
        self.received_lines: list[Any] = []

    # -- the wire --------------------------------------------------------

    # When the client was last heard from (time.monotonic()): set by every
    # read, and on connection when the server has an idle timeout.
    _last_activity = 0.0
    _idle_notice_sent = False
    _data_seeded = False

    def handle_read(self) -> None:
        self._last_activity = time.monotonic()
        async_chat.handle_read(self)

    def _close_if_idle(self, now: float, timeout: float | None) -> None:
        """Enforce the server's idle timeout.

        A client silent for ``timeout`` seconds is told 421 and disconnected
        once that reply is sent; one that does not even take the reply
        within another ``timeout`` is cut off.
        """
        if timeout is None or now - self._last_activity <= timeout:
            return
        if not self._last_activity:  # the timeout was set after we started
            self._last_activity = now
            return
        # This runs while asyncore asks each dispatcher readable(): closing a
        # channel now would hand select() a closed descriptor.  So the
        # reply is only queued, and a socket is only shut down; the loop's
        # next pass sends, sees the end, and closes.
        if self._idle_notice_sent:
            try:
                self.socket.shutdown(_SHUT_RDWR)  # type: ignore[union-attr]
            except OSError:
                pass
            return
        self._idle_notice_sent = True
        self._last_activity = now
        self._close_input()
        deferring, self._deferring_send = self._deferring_send, True
        try:
            self.push("421 %s Idle timeout, closing connection" % self.fqdn)
            self.close_when_done()
        finally:
            self._deferring_send = deferring

    def push(self, msg: str) -> None:  # type: ignore[override]
        """Queue one reply line (without its CRLF).

        A reply that cannot be sent as it is - non-ASCII while SMTPUTF8 is
        not in force, or with control characters (a lone CR or LF would
        break it into lines the client takes for replies of their own);
        typically an echo of the client's own bytes - is replaced by
        ``500 Error: bad syntax``.
        """
        data = self._encode_reply(msg)
        async_chat.push(
            self, data if data is not None else b"500 Error: bad syntax\r\n"
        )

    def _encode_reply(self, msg: str) -> bytes | None:
        """The reply line as bytes with its CRLF, or None if it is unsendable."""
        if _protocol.has_control_characters(msg):
            return None
        try:
            return (msg + "\r\n").encode("utf-8" if self.require_SMTPUTF8 else "ascii")
        except UnicodeEncodeError:
            return None

    def collect_incoming_data(self, data: bytes) -> None:
        """Keep input up to the terminator, dropping what passes the limit."""
        limit: int | None
        if self.smtp_state == self.COMMAND:
            limit = self.max_command_size_limit
        elif self.smtp_state == self.DATA:
            limit = self.data_size_limit
        else:
            limit = None
        if limit:
            if self.num_bytes > limit:
                return
            self.num_bytes += len(data)
        if self._data_seeded:
            # The first piece of a message starts with the CRLF that
            # _start_data() put back: it is not part of the message.
            self._data_seeded = False
            data = data[2:]
        if self._decode_data:
            # str, as subclasses expect; surrogateescape keeps it lossless
            # (a character split across reads is put together again in
            # found_terminator())
            self.received_lines.append(data.decode("utf-8", "surrogateescape"))
        elif self.smtp_state == self.DATA:
            # A message grows in one buffer, so that it is never held as
            # pieces and as a whole at the same time.
            lines = self.received_lines
            if lines:
                lines[-1] += data
            else:
                lines.append(bytearray(data))
        else:
            self.received_lines.append(data)

    def found_terminator(self) -> None:
        """Act on a complete command line or a complete message."""
        line = self._take_received()
        if _debugging():
            print("Data:", repr(self._decoded_for_debug(line)), file=DEBUGSTREAM)
        if self.smtp_state == self.COMMAND:
            self._handle_command_line(line)
        elif self.smtp_state == self.DATA:
            self._handle_message(line)
        else:
            self.push("451 Internal confusion")
            self.num_bytes = 0

    def _take_received(self) -> bytes | bytearray:
        """Everything collected since the last terminator, in one piece."""
        chunks = self.received_lines
        self.received_lines = []
        if self._decode_data:
            return "".join(chunks).encode("utf-8", "surrogateescape")
        if len(chunks) == 1:
            return chunks[0]  # no copy: a message's buffer, or a short line
        return b"".join(chunks)

    def _decoded_for_debug(self, line: bytes | bytearray) -> Any:
        if isinstance(line, bytearray):
            return bytes(line)
        if self._decode_data:
            try:
                return line.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return line

    def _handle_command_line(self, raw: bytes | bytearray) -> None:
        size, self.num_bytes = self.num_bytes, 0
        if not raw:
            self.push(_BAD_SYNTAX)
            return
        valid = True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            valid = False
            text = raw.decode("utf-8", "surrogateescape")
        verb, space, rest = text.partition(" ")
        command = verb.upper()
        arg = rest.strip() if space else None
        if size > self._command_limit(command):
            self.push("500 Error: line too long")
            return
        if not valid:
            self.push(_BAD_SYNTAX)
            return
        method = getattr(self, "smtp_" + command, None)
        if not method:
            self.push('500 Error: command "%s" not recognized' % command)
            return
        try:
            method(arg)
        except asyncore.ExitNow:
            raise
        except Exception:  # noqa: BLE001 - a failing handler must not end the session
            self._recover_from_handler_error()

    def _command_limit(self, command: str) -> int:
        if not self.extended_smtp:
            return self.command_size_limit
        limits = self.command_size_limits
        if command in limits or limits.default_factory is None:
            return limits[command]
        # Not limits[command]: that would store an entry per unknown verb.
        return limits.default_factory()

    def _handle_message(self, raw: bytes | bytearray) -> None:
        if self.data_size_limit and self.num_bytes > self.data_size_limit:
            self._set_post_data_state()
            self.push("552 Error: Too much mail data")
            return
        content: Any = raw
        if self._decode_data:
            try:
                content = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._set_post_data_state()
                self.push("554 Error: message data is not valid UTF-8")
                return
        self.received_data = _protocol.unstuff(content)
        options = {}
        if not self._decode_data:
            options = {
                "mail_options": self.mail_options,
                "rcpt_options": self.rcpt_options,
            }
        self._deliver(options)

    def _deliver(self, options: dict[str, list[str]]) -> None:
        """Hand the message to the server and answer the client."""
        process_message = self.smtp_server.process_message
        try:
            status = process_message(
                self.peer,
                self.mailfrom,
                self.rcpttos,
                self.received_data,
                **_options_for(process_message, options),
            )
            reply = self._status_reply(status)
        except asyncore.ExitNow:
            raise
        except NotImplementedError:
            # SMTPServer itself: it has no process_message to run.
            self._set_post_data_state()
            self.push(_LOCAL_ERROR)
            raise
        except Exception:  # noqa: BLE001 - the client gets 451, handle_error() the rest
            self._set_post_data_state()
            self._recover_from_handler_error()
            return
        # Queued before the reset, which clears require_SMTPUTF8: the reply
        # belongs to the transaction and may be UTF-8 if it used SMTPUTF8.
        self.push(reply)
        self._set_post_data_state()

    def _status_reply(self, status: Any) -> str:
        if not status:
            return "250 OK"
        if not isinstance(status, str):
            raise TypeError(
                f"process_message() returned {type(status).__name__}, not str"
            )
        if self._encode_reply(status) is None:
            raise ValueError(
                f"process_message() returned an unsendable reply: {status!r}"
            )
        return status

    def _recover_from_handler_error(self) -> None:
        """Answer 451, then let handle_error() see the exception in flight."""
        self.push(_LOCAL_ERROR)
        self._handling_handler_error = True
        try:
            self.handle_error()
        finally:
            self._handling_handler_error = False

    _handling_handler_error = False

    def handle_error(self) -> None:
        """Report the exception being handled.

        An exception from a command or message handler leaves the
        connection open (the client got a 451 reply); any other one closes
        it, as asyncore does.
        """
        _report_exception(self)
        if not self._handling_handler_error:
            self.handle_close()

    # -- SMTP and ESMTP commands -------------------------------------------

    def _accept_greeting(self, command: str, arg: str | None) -> bool:
        """Start the session for HELO/EHLO; False after an error reply."""
        if not arg:
            self.push("501 Syntax: %s hostname" % command)
            return False
        if self.seen_greeting:
            self.push("503 Duplicate HELO/EHLO")
            return False
        self._set_rset_state()
        self.seen_greeting = arg
        return True

    def smtp_HELO(self, arg: str | None) -> None:
        if self._accept_greeting("HELO", arg):
            self.push("250 %s" % self.fqdn)

    def smtp_EHLO(self, arg: str | None) -> None:
        if not self._accept_greeting("EHLO", arg):
            return
        self.extended_smtp = True
        self.push("250-%s" % self.fqdn)
        if self.data_size_limit:
            self.push("250-SIZE %s" % self.data_size_limit)
            self._own_command_size_limits()["MAIL"] += 26
        if not self._decode_data:
            self.push("250-8BITMIME")
        if self.enable_SMTPUTF8:
            self.push("250-SMTPUTF8")
            self._own_command_size_limits()["MAIL"] += 10
        self.push("250 HELP")

    def smtp_NOOP(self, arg: str | None) -> None:
        if arg:
            self.push("501 Syntax: NOOP")
        else:
            self.push("250 OK")

    def smtp_QUIT(self, arg: str | None) -> None:
        self.push("221 Bye")
        self.close_when_done()
        # Whatever the client pipelined after QUIT would never be answered.
        self._close_input()

    def _strip_command_keyword(self, keyword: str, arg: str) -> str:
        """``arg`` without its leading keyword (``FROM:``), or '' if absent."""
        if arg[: len(keyword)].upper() == keyword:
            return arg[len(keyword) :].strip()
        return ""

    def _getaddr(self, arg: str) -> tuple[str, str]:
        """Split an address argument into (address, parameter text).

        Raises ValueError (smtpd_compat._protocol.AddressError) for an
        address that cannot be parsed.
        """
        return _protocol.split_address(arg)

    def _getparams(self, params: list[str]) -> dict[str, Any] | None:
        """ESMTP parameters as a dict, or None if any is malformed."""
        return _protocol.parse_params(params)

    def smtp_HELP(self, arg: str | None) -> None:
        if not arg:
            self.push("250 Supported commands: " + _SUPPORTED_COMMANDS)
            return
        command = arg.upper()
        syntax = _COMMAND_SYNTAX.get(command)
        if syntax is None:
            self.push("501 Supported commands: " + _SUPPORTED_COMMANDS)
            return
        if self.extended_smtp and command in ("MAIL", "RCPT"):
            syntax += _PARAMETERS_SYNTAX
        self.push("250 Syntax: " + syntax)

    def smtp_VRFY(self, arg: str | None) -> None:
        if not arg:
            self.push("501 Syntax: VRFY <address>")
            return
        try:
            address, _ = self._getaddr(arg)
        except ValueError:
            self.push("501 Syntax: VRFY <address>")
            return
        if address:
            self.push(
                "252 Cannot VRFY user, but will accept message and attempt delivery"
            )
        else:
            self.push("502 Could not VRFY %s" % arg)

    def _envelope_syntax_error(self, command: str) -> str:
        reply = "501 Syntax: " + _COMMAND_SYNTAX[command]
        if self.extended_smtp:
            reply += _PARAMETERS_SYNTAX
        return reply

    def _parse_envelope_arg(
        self, keyword: str, arg: str | None, syntax_error: str
    ) -> tuple[str, str] | None:
        """Address and parameter text of MAIL/RCPT, or None after a 501."""
        if arg is None:
            self.push(syntax_error)
            return None
        arg = self._strip_command_keyword(keyword, arg)
        try:
            address, params = self._getaddr(arg)
        except ValueError:
            address, params = "", ""
        if not address or (params and not self.extended_smtp):
            self.push(syntax_error)
            return None
        return address, params

    def smtp_MAIL(self, arg: str | None) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        _debug("===> MAIL", arg)
        syntax_error = self._envelope_syntax_error("MAIL")
        parsed = self._parse_envelope_arg("FROM:", arg, syntax_error)
        if parsed is None:
            return
        address, param_text = parsed
        if self.mailfrom:
            self.push("503 Error: nested MAIL command")
            return
        self.mail_options = param_text.upper().split()
        params = self._getparams(self.mail_options)
        if params is None:
            self.push(syntax_error)
            return
        if not self._decode_data:
            body = params.pop("BODY", "7BIT")
            if body not in ("7BIT", "8BITMIME"):
                self.push("501 Error: BODY can only be one of 7BIT, 8BITMIME")
                return
        if self.enable_SMTPUTF8:
            smtputf8 = params.pop("SMTPUTF8", False)
            if smtputf8 is True:
                self.require_SMTPUTF8 = True
            elif smtputf8 is not False:
                self.push("501 Error: SMTPUTF8 takes no arguments")
                return
        size_param = params.pop("SIZE", None)
        if size_param:
            size = _protocol.parse_size(size_param)
            if size is None:
                self.push(syntax_error)
                return
            if self.data_size_limit and size > self.data_size_limit:
                self.push("552 Error: message size exceeds fixed maximum message size")
                return
        if params:
            self.push("555 MAIL FROM parameters not recognized or not implemented")
            return
        self.mailfrom = address
        _debug("sender:", self.mailfrom)
        self.push("250 OK")

    def smtp_RCPT(self, arg: str | None) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        _debug("===> RCPT", arg)
        if not self.mailfrom:
            self.push("503 Error: need MAIL command")
            return
        syntax_error = self._envelope_syntax_error("RCPT")
        parsed = self._parse_envelope_arg("TO:", arg, syntax_error)
        if parsed is None:
            return
        address, param_text = parsed
        options = param_text.upper().split()
        params = self._getparams(options)
        if params is None:
            self.push(syntax_error)
            return
        if params:  # no RCPT parameters are supported
            self.push("555 RCPT TO parameters not recognized or not implemented")
            return
        self.rcpt_options = options
        self.rcpttos.append(address)
        _debug("recips:", self.rcpttos)
        self.push("250 OK")

    def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            self.push("501 Syntax: RSET")
            return
        self._set_rset_state()
        self.push("250 OK")

    def smtp_DATA(self, arg: str | None) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        if not self.rcpttos:
            self.push("503 Error: need RCPT command")
            return
        if arg:
            self.push("501 Syntax: DATA")
            return
        self._start_data()
        self.push("354 End data with <CR><LF>.<CR><LF>")

    def _start_data(self) -> None:
        """Switch to reading the message, up to CRLF . CRLF.

        The CRLF that ended the DATA command counts as the start of the
        end marker: put one back in front of the input, so that a message
        that is just ``.`` is seen to end at once (collect_incoming_data()
        drops those two bytes again).
        """
        self.smtp_state = self.DATA
        self.set_terminator(b"\r\n.\r\n")
        self.ac_in_buffer = b"\r\n" + self.ac_in_buffer
        self._data_seeded = True
        self.num_bytes = -2

    def smtp_EXPN(self, arg: str | None) -> None:
        self.push("502 EXPN not implemented")


_SUPPORTED_COMMANDS = "EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
_COMMAND_SYNTAX = {
    "EHLO": "EHLO hostname",
    "HELO": "HELO hostname",
    "MAIL": "MAIL FROM: <address>",
    "RCPT": "RCPT TO: <address>",
    "DATA": "DATA",
    "RSET": "RSET",
    "NOOP": "NOOP",
    "QUIT": "QUIT",
    "VRFY": "VRFY <address>",
}
_PARAMETERS_SYNTAX = " [SP <mail-parameters>]"

# The name-mangled attribute names of Python 2's smtpd, still used by old
# subclasses, and the public attribute each one stands for.
_DEPRECATED_ALIASES = {
    "server": "smtp_server",
    "line": "received_lines",
    "state": "smtp_state",
    "greeting": "seen_greeting",
    "mailfrom": "mailfrom",
    "rcpttos": "rcpttos",
    "data": "received_data",
    "fqdn": "fqdn",
    "peer": "peer",
    "conn": "conn",
    "addr": "addr",
}


def _deprecated_alias(old: str, new: str) -> property:
    """A property for ``_SMTPChannel__<old>`` that forwards to ``new``."""
    advice = f"SMTPChannel attribute __{old} is deprecated; use {new!r} instead"

    def get(self: SMTPChannel) -> Any:
        warnings.warn(advice, DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    def set(self: SMTPChannel, value: Any) -> None:
        warnings.warn(advice, DeprecationWarning, stacklevel=2)
        setattr(self, new, value)

    return property(get, set, doc=f"Deprecated alias of {new}.")


for _old, _new in _DEPRECATED_ALIASES.items():
    setattr(SMTPChannel, f"_SMTPChannel__{_old}", _deprecated_alias(_old, _new))
del _old, _new


def _report_exception(dispatcher: Any) -> None:
    """Log the exception being handled, as asyncore's handle_error does."""
    _, kind, value, where = asyncore.compact_traceback()
    try:
        name = repr(dispatcher)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the report
        name = "<dispatcher at %#x>" % id(dispatcher)
    dispatcher.log_info(
        f"uncaptured python exception in {name} ({kind}:{value} {where})", "error"
    )


class SMTPServer(asyncore.dispatcher):
    """Listens on ``localaddr`` and runs an SMTP session per connection.

    Subclasses implement ``process_message()``; ``remoteaddr`` is kept for
    those that relay.
    """

    # The class used for each connection.
    channel_class = SMTPChannel

    # Seconds of silence after which a client is sent 421 and disconnected;
    # None (the default, as in CPython) waits forever.
    idle_timeout: float | None = None
    _next_idle_sweep = 0.0
    _accept_paused_until = 0.0

    def __init__(
        self,
        localaddr: tuple[Any, ...],
        remoteaddr: Any,
        data_size_limit: int | None = DATA_SIZE_DEFAULT,
        map: dict | None = None,
        enable_SMTPUTF8: bool = False,
        decode_data: bool = False,
        *,
        idle_timeout: float | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self._localaddr = localaddr
        self._remoteaddr = remoteaddr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        if enable_SMTPUTF8 and decode_data:
            raise ValueError(
                "decode_data and enable_SMTPUTF8 cannot be set to True at the same time"
            )
        asyncore.dispatcher.__init__(self, map=map)
        try:
            host, port = localaddr[:2]
            family, kind = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][
                :2
            ]
            self.create_socket(family, kind)
            self.set_reuse_addr()
            self.bind(localaddr)
            self.listen(_LISTEN_BACKLOG)
        except BaseException:
            self.close()
            raise
        _debug(
            "%s started at %s\n\tLocal addr: %s\n\tRemote addr:%s"
            % (type(self).__name__, time.ctime(time.time()), localaddr, remoteaddr)
        )

    def readable(self) -> bool:
        # asyncore asks every dispatcher this on each pass of its loop, which
        # makes it the place to run timers without threads of our own.
        now = time.monotonic()
        if self.idle_timeout is not None and now >= self._next_idle_sweep:
            self._next_idle_sweep = now + min(1.0, self.idle_timeout / 2)
            self._close_idle_channels(now)
        return now >= self._accept_paused_until

    def _close_idle_channels(self, now: float) -> None:
        timeout = self.idle_timeout
        for dispatcher in list(self._map.values()):  # type: ignore[attr-defined]
            if isinstance(dispatcher, SMTPChannel) and dispatcher.smtp_server is self:
                dispatcher._close_if_idle(now, timeout)

    def handle_accept(self) -> None:
        # A pass of asyncore's loop costs time in proportion to the number of
        # connections: taking one connection per pass made a burst of
        # clients wait thousands of passes.  Take what is queued, up to a
        # bound, so that connected clients are served meanwhile.
        for _ in range(_ACCEPTS_PER_PASS):
            try:
                pair = self.accept()
            except OSError as err:
                if err.errno not in _OUT_OF_RESOURCES:
                    raise
                # Out of file descriptors: asking again at once would only
                # spin.  Pending clients wait in the backlog until some close.
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                self.log_info("cannot accept connections: %s" % err, "warning")
                return
            if pair is None:  # nobody (left) waiting
                return
            self.handle_accepted(*pair)

    def handle_accepted(self, conn: Any, addr: Any) -> None:
        _debug("Incoming connection from %s" % repr(addr))
        self.channel_class(
            self,
            conn,
            addr,
            self.data_size_limit,
            self._map,  # type: ignore[attr-defined]
            self.enable_SMTPUTF8,
            self._decode_data,
        )

    def handle_error(self) -> None:
        """Report the exception and keep listening (asyncore would close)."""
        _report_exception(self)

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kwargs: Any
    ) -> str | None:
        """Deal with one message; subclasses must override this.

        ``peer`` is the client's address, ``mailfrom`` the envelope sender
        and ``rcpttos`` the list of envelope recipients.  ``data`` is the
        message with the SMTP transparency dots removed and its lines
        joined by LF: bytes, or str when the server has decode_data=True.
        Without decode_data the keyword arguments ``mail_options`` and
        ``rcpt_options`` carry the upper-cased ESMTP parameters of MAIL
        and RCPT.

        Return None to answer ``250 OK``, or the SMTP reply to send (a
        str such as ``'550 No such user'``).
        """
        raise NotImplementedError


class DebuggingServer(SMTPServer):
    """Prints every message it receives on standard output."""

    def _print_message_content(self, peer: Any, data: Any) -> None:
        in_headers = True
        for line in data.splitlines():
            if in_headers and not line:
                peer_header = "X-Peer: " + peer[0]
                if not isinstance(data, str):
                    peer_header = repr(peer_header.encode("utf-8"))
                print(peer_header)
                in_headers = False
            print(line if isinstance(data, str) else repr(line))

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kwargs: Any
    ) -> str | None:
        print("---------- MESSAGE FOLLOWS ----------")
        if kwargs.get("mail_options"):
            print("mail options: %s" % kwargs["mail_options"])
        if kwargs.get("rcpt_options"):
            print("rcpt options: %s\n" % kwargs["rcpt_options"])
        self._print_message_content(peer, data)
        print("------------ END MESSAGE ------------")
        return None


class PureProxy(SMTPServer):
    """Relays every message to the SMTP server at ``remoteaddr``.

    This is an open relay for whoever can connect: bind it to a trusted
    address only.
    """

    # Seconds to wait for the upstream server at each step.
    relay_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("enable_SMTPUTF8") or (len(args) > 4 and args[4]):
            raise ValueError("PureProxy does not support SMTPUTF8.")
        super().__init__(*args, **kwargs)

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kwargs: Any
    ) -> str | None:
        refused = self._relay(peer, mailfrom, rcpttos, data)
        return _relay_status(rcpttos, refused)

    def _relay(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any
    ) -> dict[str, Any]:
        """Relay to ``rcpttos`` with an X-Peer header; return the refusals."""
        refused = self._deliver(mailfrom, rcpttos, _relayable_message(data, peer[0]))
        if refused:
            _debug("we got some refusals:", refused)
        return refused

    def _deliver(self, mailfrom: str, rcpttos: list[str], data: Any) -> dict[str, Any]:
        """Send one message upstream; return the refused recipients.

        The result maps each refused recipient to (code, message); the
        code is -1 when the upstream server could not be reached.
        """
        import smtplib

        refused: dict[str, Any] = {}
        try:
            host, port = self._remoteaddr
            with smtplib.SMTP(host, port, timeout=self.relay_timeout) as relay:
                refused = relay.sendmail(mailfrom, rcpttos, data)
        except smtplib.SMTPRecipientsRefused as exc:
            _debug("got SMTPRecipientsRefused")
            refused = dict(exc.recipients)
        except (OSError, smtplib.SMTPException) as exc:
            _debug("got", exc.__class__)
            code = getattr(exc, "smtp_code", -1)
            text = getattr(exc, "smtp_error", str(exc))
            refused = {recipient: (code, text) for recipient in rcpttos}
        return refused


_MAILMAN_UNAVAILABLE = "451 Requested action aborted: Mailman is not available"

# Local-part suffix of a list address -> the metadata flag that tells
# Mailman's incoming queue runner what the message is for (as Python 3.10's
# MailmanProxy queued it).
_MAILMAN_FLAGS = {
    "": "tolist",
    "admin": "toadmin",
    "owner": "toowner",
    "request": "torequest",
    "join": "tojoin",
    "leave": "toleave",
}


class MailmanProxy(PureProxy):
    """Hands mail for GNU Mailman 2 lists to Mailman, relays the rest.

    A recipient whose local part is ``list`` or ``list-admin``,
    ``list-owner``, ``list-request``, ``list-join`` or ``list-leave``
    (compared in lower case), where Mailman knows ``list``, is put into
    Mailman's incoming queue, flagged with what it is for; every other
    recipient is relayed to
    ``remoteaddr`` as PureProxy does.  Mailman's ``Mailman`` package must
    be importable; while it is not, every message is answered with a 451
    reply so that clients try again later.

    Deprecated, as it was in Python 3.10.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "MailmanProxy is deprecated and will be removed in future",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kwargs: Any
    ) -> str | None:
        try:
            # Mailman 2 is not on PyPI: mypy cannot know it.
            from Mailman import (  # type: ignore[import-not-found]
                MailList,
                Message,
                Utils,
                mm_cfg,
            )
            from Mailman.Queue.sbcache import (  # type: ignore[import-not-found]
                get_switchboard,
            )
        except ImportError as exc:
            _debug("cannot import Mailman:", exc)
            return _MAILMAN_UNAVAILABLE

        list_rcpts = []  # (recipient, list name, suffix)
        other_rcpts = []
        for rcpt in rcpttos:
            target = self._list_target(rcpt, Utils.list_exists)
            if target is None:
                other_rcpts.append(rcpt)
            else:
                list_rcpts.append((rcpt, *target))

        refused: dict[str, Any] = {}
        _debug("forwarding recips:", " ".join(other_rcpts))
        if other_rcpts:
            refused = self._relay(peer, mailfrom, other_rcpts, data)

        if list_rcpts:
            msg = self._mailman_message(data, mailfrom, Message.Message)
            incoming = get_switchboard(mm_cfg.INQUEUE_DIR)
            loaded = set()
            for rcpt, listname, suffix in list_rcpts:
                _debug("sending message to", rcpt)
                if listname not in loaded:
                    # Loading the list (unlocked) makes sure Mailman can
                    # read it before anything is queued for it.
                    MailList.MailList(listname, lock=0)
                    loaded.add(listname)
                incoming.enqueue(msg, listname=listname, **{_MAILMAN_FLAGS[suffix]: 1})
        return _relay_status(rcpttos, refused)

    @staticmethod
    def _list_target(rcpt: str, list_exists: Any) -> tuple[str, str] | None:
        """(list name, suffix) when rcpt is one of a list's addresses."""
        local = rcpt.lower().split("@")[0]
        listname, _, suffix = local.partition("-")
        if "-" in suffix or suffix not in _MAILMAN_FLAGS:
            return None
        if not listname or not list_exists(listname):
            return None
        return listname, suffix

    @staticmethod
    def _mailman_message(data: Any, mailfrom: str, message_class: Any) -> Any:
        """Parse the message into Mailman's Message class.

        Bytes (decode_data=False) are parsed with message_from_bytes: its
        surrogateescape decoding keeps 8-bit text in any charset, which a
        UTF-8 decode would not.  Mailman needs From: and Date:, which
        MTAs add when missing, so they are added here as well.
        """
        import email
        import email.utils

        if isinstance(data, bytes):
            msg = email.message_from_bytes(data, message_class)
        else:
            msg = email.message_from_string(data, message_class)
        if not msg.get("from"):
            msg["From"] = mailfrom
        if not msg.get("date"):
            msg["Date"] = email.utils.formatdate(localtime=True)
        return msg


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _relayable_message(data: Any, peer_host: str) -> bytes:
    """The message as bytes with CRLF line ends and an X-Peer header.

    The header goes before the blank line that ends the headers (at the
    end when there is none).  Normalising every line end to CRLF means a
    bare LF + "." + LF in the payload cannot end the upstream DATA early.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    lines = _LINE_END.split(data)
    header_end = lines.index(b"") if b"" in lines else len(lines)
    lines.insert(header_end, b"X-Peer: " + peer_host.encode("ascii", "replace"))
    return b"\r\n".join(lines)


def _relay_status(rcpttos: list[str], refused: dict[str, Any]) -> str | None:
    """The reply to the client after relaying: None for 250 OK."""
    if not refused or len(refused) < len(set(rcpttos)):
        return None
    codes = [code for code, _ in refused.values()]
    if any(code == -1 or 400 <= code < 500 for code in codes):
        return "451 Requested action aborted: upstream server unavailable"
    return "554 Transaction failed: all recipients refused by the upstream server"


class Options:
    """Settings from the command line, filled in by parseargs()."""

    setuid = True
    classname = "PureProxy"
    size_limit: int | None = None
    enable_SMTPUTF8 = False
    idle_timeout: float | None = None
    # Set by parseargs() from the positional arguments.
    localhost: str
    localport: int
    remotehost: str
    remoteport: int


def parseargs() -> Options:
    """Read sys.argv; exit through usage() on any error."""
    global DEBUGSTREAM
    try:
        opts, args = getopt.getopt(
            sys.argv[1:],
            "nVhc:s:dut:",
            [
                "class=",
                "nosetuid",
                "version",
                "help",
                "size=",
                "debug",
                "smtputf8",
                "idle-timeout=",
            ],
        )
    except getopt.error as exc:
        usage(1, exc)

    options = Options()
    for opt, value in opts:
        if opt in ("-h", "--help"):
            usage(0)
        elif opt in ("-V", "--version"):
            print(__version__)
            sys.exit(0)
        elif opt in ("-n", "--nosetuid"):
            options.setuid = False
        elif opt in ("-c", "--class"):
            options.classname = value
        elif opt in ("-d", "--debug"):
            DEBUGSTREAM = sys.stderr
        elif opt in ("-u", "--smtputf8"):
            options.enable_SMTPUTF8 = True
        elif opt in ("-s", "--size"):
            options.size_limit = _parse_size_option(value)
        elif opt in ("-t", "--idle-timeout"):
            options.idle_timeout = _parse_timeout_option(value)

    if len(args) > 2:
        usage(1, "Invalid arguments: %s" % COMMASPACE.join(args))
    localspec = args[0] if args else "localhost:8025"
    remotespec = args[1] if len(args) > 1 else "localhost:25"
    options.localhost, options.localport = _parse_spec("local", localspec)
    options.remotehost, options.remoteport = _parse_spec("remote", remotespec)
    return options


def _parse_size_option(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:  # CPython accepted negative sizes, then refused every message
        print("Invalid size: " + value, file=sys.stderr)
        sys.exit(1)
    return size


def _parse_timeout_option(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        print("Invalid timeout: " + value, file=sys.stderr)
        sys.exit(1)
    return seconds


def _parse_spec(which: str, spec: str) -> tuple[str, int]:
    try:
        return _protocol.parse_hostport(spec)
    except _protocol.SpecError as exc:
        usage(1, "Bad %s %s: %s" % (which, exc.part, spec))


def _server_class(name: str) -> Any:
    """The class named on the command line, or exit with a message."""
    module_name, dot, class_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name) if dot else sys.modules[__name__]
        server_class = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        print("Cannot find server class %r: %s" % (name, exc), file=sys.stderr)
        sys.exit(1)
    if not callable(server_class):
        print("Not a server class: %r" % name, file=sys.stderr)
        sys.exit(1)
    return server_class


def _drop_privileges() -> None:
    """Become the user 'nobody', or exit with a message."""
    try:
        import pwd
    except ImportError:
        print(
            'Cannot import module "pwd"; try running with -n option.', file=sys.stderr
        )
        sys.exit(1)
    nobody = pwd.getpwnam("nobody")[2]
    try:
        os.setuid(nobody)
    except PermissionError:
        print('Cannot setuid "nobody"; try running with -n option.', file=sys.stderr)
        sys.exit(1)


def _main() -> None:
    """The command line: ``python -m smtpd_compat [options] [local [remote]]``."""
    options = parseargs()
    server_class = _server_class(options.classname)
    local = (options.localhost, options.localport)
    extra = {}
    if options.idle_timeout is not None:
        # Only when asked for: user classes may not take the argument.
        extra["idle_timeout"] = options.idle_timeout
    _raise_open_file_limit()
    try:
        server_class(
            local,
            (options.remotehost, options.remoteport),
            options.size_limit,
            enable_SMTPUTF8=options.enable_SMTPUTF8,
            **extra,
        )
    except (OSError, ValueError) as exc:
        print(
            "Cannot start %s on %s:%s: %s" % (options.classname, *local, exc),
            file=sys.stderr,
        )
        sys.exit(1)
    if options.setuid:
        _drop_privileges()
    try:
        # A short timeout keeps the idle-timeout sweep punctual; poll()
        # has no select() limit of about 1000 connections.
        asyncore.loop(timeout=1.0, use_poll=hasattr(select, "poll"))
    except KeyboardInterrupt:
        pass


def _raise_open_file_limit() -> None:
    """Allow as many connections as the hard limit on open files permits."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass
