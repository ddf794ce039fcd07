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
import typing
import warnings

# get_addr_spec and get_angle_addr: names of Python's smtpd module
# that subclasses copied from its code reach through it.
from email._header_value_parser import get_addr_spec, get_angle_addr  # noqa: F401
from typing import Any, NoReturn
from warnings import warn

from . import _auth, _protocol
from .asynchat import async_chat, asyncore

# (A name TYPE_CHECKING here would be public: CPython's test__all__ objects.)
if typing.TYPE_CHECKING:
    import ssl

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
_PLAIN_SHUTDOWN = socket.socket.shutdown
_LISTEN_BACKLOG = 1024
# accept() errors that mean "not now" rather than "broken", and how long
# (seconds) to stop accepting after one.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE = 0.1
_ACCEPTS_PER_PASS = 64
_LOCAL_ERROR = "451 Requested action aborted: local error in processing"
_BAD_SYNTAX = "500 Error: bad syntax"
# Python's smtpd kept an entry in command_size_limits for every command an
# EHLO client sent; past this many, unknown verbs are no longer stored.
_COMMAND_LIMITS_KEPT = 256


def _debugging() -> bool:
    """Whether DEBUGSTREAM prints go anywhere (and so are worth building)."""
    return type(DEBUGSTREAM) is not Devnull


def _debug(*values: object) -> None:
    if _debugging():
        print(*values, file=DEBUGSTREAM)


def _server_fqdn(server: Any) -> str:
    """The host name for replies, looked up once per server.

    The cached name is tied to the ``socket`` module and the ``getfqdn``
    function that produced it, so a test that swaps ``smtpd_compat.socket``
    or patches ``socket.getfqdn`` gets a fresh lookup, as it did when
    Python's smtpd asked on every connection.
    """
    getfqdn = socket.getfqdn
    cached = getattr(server, "_smtpd_compat_fqdn", None)
    if isinstance(cached, tuple) and cached[0] is getfqdn:
        return cached[1]
    fqdn = getfqdn()
    try:
        server._smtpd_compat_fqdn = (getfqdn, fqdn)
    except AttributeError:
        pass
    return fqdn


@functools.lru_cache(maxsize=256)
def _accepted_options(process_message: Any) -> frozenset | None:
    """Which of mail_options/rcpt_options a process_message takes.

    None means all of them: it has ``**kwargs``, or its parameters cannot
    be read at all, and then it is called as 3.11's smtpd called every
    handler, with both.  Handlers written before Python 3.5 take none, and
    were called without them.

    Nothing here needs the annotations to evaluate: with PEP 649 (Python
    3.14) evaluating them raises NameError for a name imported only under
    ``TYPE_CHECKING``, and a handler must not lose its mail over that.
    """
    try:
        names = _keyword_parameters(process_message)
    except Exception:  # noqa: BLE001 - unreadable: fall back to 3.11's call
        return None
    if names is None:
        return None
    return frozenset(names & _HANDLER_KEYWORDS)


# The keyword arguments process_message() may get, each only when it takes
# it: mail_options/rcpt_options (3.11's), auth_login and tls_version (with
# TLS and AUTH turned on).
_HANDLER_KEYWORDS = frozenset(
    {"mail_options", "rcpt_options", "auth_login", "tls_version"}
)


def _keyword_parameters(function: Any) -> set[str] | None:
    """Parameter names ``function`` accepts by keyword; None for ``**kwargs``.

    A plain function is read from its code object, which holds no
    annotations.  Anything else (a decorated function, a callable object,
    functools.partial ...) goes through inspect.signature, which on 3.14+
    is told to leave unresolvable annotations as forward references; if
    that fails, from the code object that a call would run, if there is one.
    """
    if inspect.isfunction(function) and not (
        {"__wrapped__", "__signature__"} & function.__dict__.keys()
    ):
        return _code_parameters(function.__code__)
    try:
        return _signature_parameters(function)
    except Exception:
        code = _code_behind(function)
        if code is None:
            raise
        return _code_parameters(code)


def _code_parameters(code: Any) -> set[str] | None:
    # co_varnames starts with the parameters: positional-only ones (which
    # take no keyword), the other positional ones, then keyword-only ones.
    if code.co_flags & inspect.CO_VARKEYWORDS:
        return None
    end = code.co_argcount + code.co_kwonlyargcount
    return set(code.co_varnames[code.co_posonlyargcount : end])


def _signature_parameters(function: Any) -> set[str] | None:
    signature: Any = inspect.signature
    try:
        annotationlib: Any = importlib.import_module("annotationlib")
    except ImportError:  # before 3.14 signature() evaluates nothing
        parameters = signature(function).parameters.values()
    else:
        forward = annotationlib.Format.FORWARDREF
        parameters = signature(function, annotation_format=forward).parameters.values()
    names = set()
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in _NO_KEYWORD:  # neither can be passed by name
            continue
        names.add(parameter.name)
    return names


_NO_KEYWORD = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)


def _code_behind(function: Any) -> Any:
    """The code object a call of ``function`` runs, or None if not known.

    The innermost function of a decorated one, a function-like object's own
    ``__code__`` (as Cython functions have), or a callable object's
    ``__call__``.
    """
    try:
        function = inspect.unwrap(function)
    except Exception:  # noqa: BLE001, S110 - a cycle or an odd __wrapped__
        pass
    if inspect.isfunction(function):
        return function.__code__
    code = getattr(function, "__code__", None)
    if inspect.iscode(code):
        return code
    call = inspect.getattr_static(type(function), "__call__", None)
    return call.__code__ if inspect.isfunction(call) else None


def _options_for(process_message: Any, options: dict[str, list[str]]) -> dict:
    try:
        target = getattr(process_message, "__func__", process_message)
    except Exception:  # noqa: BLE001 - an odd callable: inspect it as it is
        target = process_message
    try:
        accepted = _accepted_options(target)
    except TypeError:  # unhashable callable
        accepted = _accepted_options.__wrapped__(target)
    if accepted is None:
        return options
    return {name: value for name, value in options.items() if name in accepted}


def usage(code: int, msg: object = "") -> NoReturn:
    """Print the command line help (and msg) on stderr, exit with code."""
    print(_USAGE % {"version": __version__}, file=sys.stderr)
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
  --tls-cert FILE --tls-key FILE
                      offer STARTTLS (RFC 3207) with this certificate
                      (PEM, chain included) and private key
  --smtps             implicit TLS instead: every connection is TLS from
                      its first byte (needs --tls-cert and --tls-key)
  --require-starttls  refuse every command but EHLO, HELO, NOOP, QUIT and
                      STARTTLS until TLS is up
  --auth-user USER:PASSWORD
                      offer AUTH (PLAIN, LOGIN, CRAM-MD5) and require it
                      before MAIL; repeat for more users.  With TLS, AUTH
                      is only offered once TLS is up
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

    def __own_command_size_limits(self) -> collections.defaultdict[str, int]:
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
        # Python's smtpd cleared the table each connection starts from (the
        # class's) here; a subclass that writes to it before this channel
        # has a table of its own sees that, as before.
        self.command_size_limits.clear()
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
        extensions = _Extensions.of(server)
        if extensions is not None:
            self._ext = extensions
            if _is_tls_socket(conn):  # implicit TLS: the handshake is done
                self.__note_tls(conn)
        _debug("Peer:", repr(self.peer))
        self.push("220 %s %s" % (self.fqdn, __version__))

    def _set_post_data_state(self) -> None:
        """Reset the transaction, as after a message: the greeting stays."""
        self.smtp_state = self.COMMAND
        self.mailfrom: str | None = None
        self.rcpttos: list[str] = []
        self.require_SMTPUTF8 = False
        self.num_bytes = 0
        self.set_terminator(b"\r\n")

    def _set_rset_state(self) -> None:
        """Reset everything but the greeting (RSET, HELO, EHLO)."""
        self._set_post_data_state()
        self.received_data: Any = ""
        self.received_lines: list[Any] = []

    # -- TLS and AUTH (opt-in) -------------------------------------------
    #
    # Class-level defaults, so that a channel of a server without these
    # options carries nothing more than Python 3.11's did.

    # The server's TLS/AUTH settings (_Extensions); None when it has none,
    # and then the channel behaves exactly as 3.11's.
    _ext: _Extensions | None = None
    # True once the connection is encrypted (after STARTTLS, or at once
    # with implicit TLS).
    _tls_active = False
    # The AUTH exchange waiting for the client's next response line.
    _auth_exchange: _auth.Exchange | None = None
    #: The login the client authenticated as (None before AUTH succeeds).
    auth_login: str | None = None
    #: The TLS protocol version in use ("TLSv1.3"), or None in plaintext.
    tls_version: str | None = None
    #: ``ssl.SSLSocket.cipher()`` of the connection, or None in plaintext.
    cipher: tuple[str, str, int] | None = None
    #: The client's certificate (a dict) when the context asked for one.
    peercert: dict | None = None

    # -- the wire --------------------------------------------------------

    # When the client was last heard from (time.monotonic()): set by every
    # read, and on connection when the server has an idle timeout.
    _last_activity = 0.0
    _idle_notice_sent = False
    # Set while the reply to a message of an SMTPUTF8 transaction is pushed.
    _reply_in_utf8 = False

    def handle_read(self) -> None:
        # Input read only to be dropped (after QUIT or the idle notice) is
        # not activity: a client that sends but never reads would otherwise
        # hold its connection forever.
        if not self._input_closed:
            self._last_activity = time.monotonic()
        async_chat.handle_read(self)
        if self._tls_active:
            self.__drain_tls()

    def __drain_tls(self) -> None:
        """Read what the TLS layer decrypted but the kernel no longer holds.

        select()/poll() only see the kernel's buffer: input that the
        SSLSocket already took from it would wait for the client's next
        packet.
        """
        sock = self.socket
        while self.connected and self.socket is sock:
            try:
                if not sock.pending():
                    return
            except (OSError, ValueError):  # closed meanwhile
                return
            async_chat.handle_read(self)

    def recv(self, buffer_size: int) -> bytes:
        if not self._tls_active:
            return async_chat.recv(self, buffer_size)
        try:
            return async_chat.recv(self, buffer_size)
        except _tls_module().WANT:
            # An incomplete TLS record: nothing to hand on yet, as for a
            # plain socket with no data (asynchat returns quietly).
            raise BlockingIOError(errno.EAGAIN, "incomplete TLS record") from None

    def send(self, data: Any) -> int:
        if not self._tls_active:
            return async_chat.send(self, data)
        try:
            return async_chat.send(self, data)
        except _tls_module().WANT:
            return 0  # sent again, unchanged, when the socket is writable

    def __close_if_idle(self, now: float, timeout: float | None) -> None:
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
                if self._tls_active:
                    # The plain socket's shutdown(): an SSLSocket's would
                    # drop its TLS state and send later bytes in clear.
                    _PLAIN_SHUTDOWN(self.socket, _SHUT_RDWR)
                else:
                    self.socket.shutdown(_SHUT_RDWR)
            except OSError:
                pass
            return
        self._idle_notice_sent = True
        self._last_activity = now
        self._ac_close_input()
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
        data = self.__encode_reply(msg)
        async_chat.push(
            self, data if data is not None else b"500 Error: bad syntax\r\n"
        )

    def __encode_reply(self, msg: str) -> bytes | None:
        """The reply line as bytes with its CRLF, or None if it is unsendable."""
        if _protocol.has_control_characters(msg):
            return None
        try:
            utf8 = self.require_SMTPUTF8 or self._reply_in_utf8
            return (msg + "\r\n").encode("utf-8" if utf8 else "ascii")
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
        if self._decode_data:
            # str, as subclasses expect; surrogateescape keeps it lossless
            # (a character split across reads is put together again in
            # found_terminator())
            self.received_lines.append(data.decode("utf-8", "surrogateescape"))
        elif self.smtp_state == self.DATA and self._ac_batching():
            # A message is unstuffed as it arrives (_protocol.Unstuffer),
            # while each piece is fresh, so that its end costs one copy.
            # Only where no subclass hook can look at received_lines
            # meanwhile: they see the list of pieces Python's smtpd kept.
            # With DEBUGSTREAM in use the message is kept as sent, in one
            # growing buffer, for the "Data:" line.
            lines = self.received_lines
            if not lines:
                if _debugging():
                    lines.append(bytearray(data))
                else:
                    unstuffer = _protocol.Unstuffer()
                    unstuffer.feed(data)
                    lines.append(unstuffer)
            elif isinstance(lines[-1], _protocol.Unstuffer):
                lines[-1].feed(data)
            else:
                lines[-1] += data
        else:
            self.received_lines.append(data)

    def found_terminator(self) -> None:
        """Act on a complete command line or a complete message."""
        line = self.__take_received()
        if _debugging():
            shown = line if self._ext is None else self.__loggable(line)
            print("Data:", repr(self.__decoded_for_debug(shown)), file=DEBUGSTREAM)
        if self.smtp_state == self.COMMAND:
            if isinstance(line, _protocol.Unstuffer):
                # the state was changed in the middle of a message
                line = line.finish()
            self.__handle_command_line(line)
        elif self.smtp_state == self.DATA:
            self.__handle_message(line)
        else:
            self.push("451 Internal confusion")
            self.num_bytes = 0

    def __take_received(self) -> bytes | bytearray | _protocol.Unstuffer:
        """Everything collected since the last terminator, in one piece."""
        chunks = self.received_lines
        self.received_lines = []
        if self._decode_data:
            return "".join(chunks).encode("utf-8", "surrogateescape")
        if len(chunks) == 1:
            return chunks[0]  # no copy: a message's buffer, or a short line
        if chunks and isinstance(chunks[0], _protocol.Unstuffer):
            # batching stopped in the middle of the message
            for chunk in chunks[1:]:
                chunks[0].feed(bytes(chunk))
            return chunks[0]
        return b"".join(chunks)

    def __decoded_for_debug(self, line: Any) -> Any:
        if isinstance(line, _protocol.Unstuffer):
            # DEBUGSTREAM came into use in the middle of this message: the
            # form it was sent in is gone, so it is shown unstuffed.
            return line.so_far()
        if isinstance(line, bytearray):
            return bytes(line)
        if self._decode_data:
            try:
                return line.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return line

    def __handle_command_line(self, raw: bytes | bytearray) -> None:
        size, self.num_bytes = self.num_bytes, 0
        if self._auth_exchange is not None:
            self.__run_guarded(self.__continue_auth, raw, size)
            return
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
        if size > self.__command_limit(command):
            self.push("500 Error: line too long")
            return
        if not valid:
            self.push(_BAD_SYNTAX)
            return
        if self._ext is not None:
            refusal = self.__refusal(command)
            if refusal is not None:
                self.push(refusal)
                return
        method = getattr(self, "smtp_" + command, None)
        if not method and self._ext is not None:
            # STARTTLS and AUTH, when the server offers them; a subclass's
            # own smtp_STARTTLS/smtp_AUTH (found above) comes first.
            method = self.__extension_command(command)
            if method is not None:
                self.__run_guarded(method, arg)
                return
        if not method:
            self.push('500 Error: command "%s" not recognized' % command)
            return
        try:
            if getattr(method, "__func__", None) in _BUILTIN_COMMANDS:
                method(arg)
            else:
                self._ac_run_unbatched(method, arg)
        except asyncore.ExitNow:
            raise
        except Exception:  # noqa: BLE001 - a failing handler must not end the session
            self.__recover_from_handler_error()

    def __run_guarded(self, function: Any, *args: Any) -> None:
        """Run a command handler; an exception gets 451, not a dropped session."""
        try:
            function(*args)
        except asyncore.ExitNow:
            raise
        except Exception:  # noqa: BLE001 - a failing handler must not end the session
            self.__recover_from_handler_error()

    def __command_limit(self, command: str) -> int:
        if not self.extended_smtp:
            return self.command_size_limit
        limits = self.command_size_limits
        if command in limits or len(limits) < _COMMAND_LIMITS_KEPT:
            return limits[command]  # stores the default, as smtpd did
        # A client sending ever new verbs must not grow the table for ever.
        factory = limits.default_factory
        return factory() if factory is not None else limits[command]

    def __handle_message(self, raw: bytes | bytearray | _protocol.Unstuffer) -> None:
        if self.data_size_limit and self.num_bytes > self.data_size_limit:
            self._set_post_data_state()
            self.push("552 Error: Too much mail data")
            return
        if isinstance(raw, _protocol.Unstuffer):
            self.received_data = raw.finish()
            self.__deliver(
                {"mail_options": self.mail_options, "rcpt_options": self.rcpt_options}
            )
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
        self.__deliver(options)

    def __deliver(self, options: dict[str, Any]) -> None:
        """Hand the message to the server and answer the client."""
        process_message = self.smtp_server.process_message
        if self._ext is not None:
            options = dict(options, **self.__extension_keywords())
        try:
            status = self._ac_run_unbatched(
                functools.partial(
                    process_message,
                    self.peer,
                    self.mailfrom,
                    self.rcpttos,
                    self.received_data,
                    **_options_for(process_message, options),
                )
            )
            reply = self.__status_reply(status)
        except asyncore.ExitNow:
            raise
        except NotImplementedError:
            # SMTPServer itself: it has no process_message to run.
            self._set_post_data_state()
            self.push(_LOCAL_ERROR)
            raise
        except Exception:  # noqa: BLE001 - the client gets 451, handle_error() the rest
            self._set_post_data_state()
            self.__recover_from_handler_error()
            return
        # The reply belongs to the transaction, and may be UTF-8 if it used
        # SMTPUTF8, although the reset (first, as in Python's smtpd) clears
        # require_SMTPUTF8.
        smtputf8 = self.require_SMTPUTF8
        self._set_post_data_state()
        self._reply_in_utf8 = smtputf8
        try:
            self.push(reply)
        finally:
            self._reply_in_utf8 = False

    def __status_reply(self, status: Any) -> str:
        if not status:
            return "250 OK"
        if not isinstance(status, str):
            # Python's smtpd sent bytes(status + "\r\n", "ascii"): what that
            # raised is raised here too, for the log line handle_error()
            # writes; a status that "+" turns into a str was sent.
            line = status + "\r\n"
            if not isinstance(line, str):
                bytes(line, "ascii")  # raises TypeError: not a str
            status = line[:-2] if line.endswith("\r\n") else line
        if not (self.require_SMTPUTF8 or status.isascii()):
            (status + "\r\n").encode("ascii")  # raises as Python's smtpd did
        if self.__encode_reply(status) is None:
            raise ValueError(
                f"process_message() returned an unsendable reply: {status!r}"
            )
        return status

    def __recover_from_handler_error(self) -> None:
        """Answer 451, then let handle_error() see the exception in flight."""
        self.push(_LOCAL_ERROR)
        self._handling_handler_error = True
        try:
            self._ac_run_unbatched(self.handle_error)
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

    def __accept_greeting(self, command: str, arg: str | None) -> bool:
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
        if self.__accept_greeting("HELO", arg):
            self.push("250 %s" % self.fqdn)

    def smtp_EHLO(self, arg: str | None) -> None:
        if not self.__accept_greeting("EHLO", arg):
            return
        self.extended_smtp = True
        self.push("250-%s" % self.fqdn)
        if self.data_size_limit:
            self.push("250-SIZE %s" % self.data_size_limit)
            self.__own_command_size_limits()["MAIL"] += 26
        if not self._decode_data:
            self.push("250-8BITMIME")
        if self.enable_SMTPUTF8:
            self.push("250-SMTPUTF8")
            self.__own_command_size_limits()["MAIL"] += 10
        if self._ext is not None:
            self.__ehlo_extensions()
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
        self._ac_close_input()

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
        supported, syntaxes = _SUPPORTED_COMMANDS, _COMMAND_SYNTAX
        if self._ext is not None:
            supported, syntaxes = self.__extended_help()
        if not arg:
            self.push("250 Supported commands: " + supported)
            return
        command = arg.upper()
        syntax = syntaxes.get(command)
        if syntax is None:
            self.push("501 Supported commands: " + supported)
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

    def __envelope_syntax_error(self, command: str) -> str:
        reply = "501 Syntax: " + _COMMAND_SYNTAX[command]
        if self.extended_smtp:
            reply += _PARAMETERS_SYNTAX
        return reply

    def __parse_envelope_arg(
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
        syntax_error = self.__envelope_syntax_error("MAIL")
        parsed = self.__parse_envelope_arg("FROM:", arg, syntax_error)
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
            too_big = _protocol.size_exceeds(size_param, self.data_size_limit)
            if too_big is None:
                self.push(syntax_error)
                return
            if too_big:
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
        syntax_error = self.__envelope_syntax_error("RCPT")
        parsed = self.__parse_envelope_arg("TO:", arg, syntax_error)
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
        self.__start_data()
        self.push("354 End data with <CR><LF>.<CR><LF>")

    def __start_data(self) -> None:
        """Switch to reading the message, up to CRLF . CRLF.

        The CRLF that ended the DATA command counts as the start of the
        end marker, so an empty message - a ``.`` line right away - ends
        the data too (Python's smtpd waited for another CRLF . CRLF).
        """
        self.smtp_state = self.DATA
        self.set_terminator(b"\r\n.\r\n")
        self._initial_terminator = b".\r\n"

    def smtp_EXPN(self, arg: str | None) -> None:
        self.push("502 EXPN not implemented")

    # -- STARTTLS (RFC 3207) and AUTH (RFC 4954), opt-in --------------------
    #
    # Only reached when the server has tls_context/ssl_context or an
    # authenticator (self._ext); these are not smtp_* methods, so that a
    # channel of a server without them answers STARTTLS and AUTH as 3.11's
    # did, and subclasses find no new smtp_* names.

    def __refusal(self, command: str) -> str | None:
        """The reply refusing ``command`` in this state, or None to run it."""
        ext = self._ext
        assert ext is not None
        if (
            ext.require_starttls
            and not self._tls_active
            and command not in _ALLOWED_BEFORE_STARTTLS
        ):
            return "530 Must issue a STARTTLS command first"
        if command == "MAIL" and ext.auth_required and self.auth_login is None:
            return _auth.REQUIRED
        return None

    def __extension_command(self, command: str) -> Any:
        ext = self._ext
        assert ext is not None
        if command == "STARTTLS" and ext.tls_context is not None:
            return self.__starttls
        if command == "AUTH" and ext.authenticator is not None:
            return self.__auth
        return None

    def __ehlo_extensions(self) -> None:
        ext = self._ext
        assert ext is not None
        if ext.tls_context is not None and not self._tls_active:
            self.push("250-STARTTLS")
        if ext.authenticator is not None and (
            self._tls_active or not ext.auth_require_tls
        ):
            self.push("250-AUTH " + " ".join(ext.mechanisms))
            limits = self.__own_command_size_limits()
            limits["AUTH"] = max(limits["AUTH"], _AUTH_LINE_LIMIT)

    def __extended_help(self) -> tuple[str, dict[str, str]]:
        """HELP's command list and syntax table, with STARTTLS/AUTH if on."""
        ext = self._ext
        assert ext is not None
        syntaxes = dict(_COMMAND_SYNTAX)
        if ext.tls_context is not None:
            syntaxes["STARTTLS"] = "STARTTLS"
        if ext.authenticator is not None:
            syntaxes["AUTH"] = "AUTH <mechanism> [initial-response]"
        return " ".join(syntaxes), syntaxes

    def __extension_keywords(self) -> dict[str, Any]:
        """process_message() keywords for what the server turned on."""
        ext = self._ext
        assert ext is not None
        keywords: dict[str, Any] = {}
        if ext.authenticator is not None:
            keywords["auth_login"] = self.auth_login
        if ext.tls_context is not None or ext.ssl_context is not None:
            keywords["tls_version"] = self.tls_version
        return keywords

    def __loggable(self, line: Any) -> Any:
        """``line`` as DEBUGSTREAM may show it: credentials hidden."""
        if self.smtp_state != self.COMMAND or not isinstance(line, (bytes, bytearray)):
            return line
        if self._auth_exchange is not None:
            return b"***"  # a response inside an AUTH exchange
        if line[:5].upper() == b"AUTH ":
            return _auth.redacted(bytes(line))
        return line

    def __starttls(self, arg: str | None) -> None:
        if arg:
            self.push("501 Syntax error (no parameters allowed)")
            return
        if self._tls_active:
            self.push("503 5.5.1 Error: TLS already active")
            return
        ext = self._ext
        assert ext is not None
        self.push("220 Ready to start TLS")
        # Whatever the client sent after STARTTLS in plaintext is dropped
        # unread: it must not run as if it had come encrypted (the
        # CVE-2011-0411 kind of command injection).
        self.ac_in_buffer = b""
        # The descriptor goes to a Handshake until TLS is up; it sends the
        # 220 in plaintext first, then wraps the socket.
        sock = self.socket
        self.del_channel()
        _tls_module().Handshake(
            sock,
            ext.tls_context,
            self._map,
            on_done=self.__tls_started,
            on_failed=self.__tls_failed,
            flush=self,
            server=self.smtp_server,
        )

    def __tls_started(self, sock: Any) -> None:
        """The handshake after STARTTLS is done: start the session over."""
        self.set_socket(sock)
        self.conn = sock
        self.__note_tls(sock)
        # RFC 3207, 4.2: forget what the client said before TLS.
        self.seen_greeting = ""
        self.extended_smtp = False
        self._set_rset_state()
        self.__dict__.pop("auth_login", None)
        self.__dict__.pop("_auth_exchange", None)
        if self._last_activity:
            self._last_activity = time.monotonic()
        if sock.pending():
            self.handle_read()

    def __tls_failed(self, error: BaseException | None) -> None:
        _debug("TLS handshake failed:", repr(self.peer), error)
        self.close()

    def __note_tls(self, sock: Any) -> None:
        self._tls_active = True
        self.tls_version, self.cipher, self.peercert = _tls_module().facts(sock)
        _debug("TLS:", self.tls_version, self.cipher)

    def __auth(self, arg: str | None) -> None:
        ext = self._ext
        assert ext is not None
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        if ext.auth_require_tls and not self._tls_active:
            self.push(_auth.ENCRYPTION_REQUIRED)
            return
        if self.auth_login is not None:
            self.push(_auth.ALREADY)
            return
        if self.mailfrom:
            self.push(_auth.IN_TRANSACTION)
            return
        if not arg:
            self.push(_auth.SYNTAX)
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ext.mechanisms:
            self.push(_auth.UNRECOGNIZED)
            return
        exchange = _auth.Exchange(mechanism, initial.strip() or None, self.fqdn)
        self.__auth_step(exchange, exchange.start)

    def __continue_auth(self, raw: bytes | bytearray, size: int) -> None:
        """A response line inside an AUTH exchange (after a 334 challenge)."""
        exchange = self._auth_exchange
        assert exchange is not None
        if size > self.max_command_size_limit:
            self.__dict__.pop("_auth_exchange", None)
            self.push("500 Error: line too long")
            return
        try:
            text = bytes(raw).decode("ascii")
        except UnicodeDecodeError:
            self.__dict__.pop("_auth_exchange", None)
            self.push(_auth.CANNOT_DECODE)
            return
        self.__auth_step(exchange, exchange.feed, text)

    def __auth_step(self, exchange: _auth.Exchange, step: Any, *args: Any) -> None:
        """Run one step of the exchange and answer: 334, 235 or an error."""
        self.__dict__.pop("_auth_exchange", None)
        # The input buffer is cut lazily; cut it now, so that the line with
        # the credentials is not kept until the client sends again.
        self.ac_in_buffer = self.ac_in_buffer
        try:
            result = step(*args)
        except _auth.AuthError as err:
            self.push(err.reply)
            return
        if isinstance(result, str):
            self._auth_exchange = exchange
            self.push("334 " + result)
            return
        ext = self._ext
        assert ext is not None
        # The authenticator is the user's code: unbatched, as commands are.
        if self._ac_run_unbatched(_auth.verify, ext.authenticator, self, result):
            self.auth_login = result.login
            self.push(_auth.SUCCEEDED)
        else:
            self.push(_auth.FAILED)


# The commands SMTPChannel itself implements.  They run while replies are
# batched; any other smtp_* method is the user's and runs unbatched (see
# smtpd_compat.asynchat).
_BUILTIN_COMMANDS = frozenset(
    function for name, function in vars(SMTPChannel).items() if name.startswith("smtp_")
)
SMTPChannel._batching_class = SMTPChannel
SMTPChannel._batching_methods = {
    name: getattr(SMTPChannel, name)
    for name in (
        "send",
        "initiate_send",
        "handle_write",
        "handle_read",
        "handle_close",
        "close",
        "readable",
        "writable",
        "push",
        "collect_incoming_data",
        "found_terminator",
    )
}

_SUPPORTED_COMMANDS = "EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"

# With require_starttls, the commands a client may send before TLS is up.
_ALLOWED_BEFORE_STARTTLS = frozenset({"EHLO", "HELO", "NOOP", "QUIT", "STARTTLS"})
# Longest AUTH line (command or response) taken after EHLO offered AUTH:
# RFC 4954, section 4, asks servers to take at least 12288 octets.
_AUTH_LINE_LIMIT = 12288


class _Extensions:
    """A server's TLS and AUTH settings, as its channels read them."""

    __slots__ = (
        "auth_require_tls",
        "auth_required",
        "authenticator",
        "mechanisms",
        "require_starttls",
        "ssl_context",
        "tls_context",
    )

    def __init__(self, server: Any) -> None:
        self.tls_context = getattr(server, "tls_context", None)
        self.ssl_context = getattr(server, "ssl_context", None)
        self.require_starttls = bool(getattr(server, "require_starttls", False))
        self.authenticator = getattr(server, "authenticator", None)
        self.auth_required = bool(getattr(server, "auth_required", False))
        self.auth_require_tls = bool(getattr(server, "auth_require_tls", True))
        self.mechanisms = (
            _auth.mechanisms_for(self.authenticator)
            if self.authenticator is not None
            else ()
        )

    def __repr__(self) -> str:
        # Never the authenticator itself: it may be a dict of passwords.
        return "<_Extensions tls=%s smtps=%s auth=%s>" % (
            self.tls_context is not None,
            self.ssl_context is not None,
            self.mechanisms,
        )

    @classmethod
    def of(cls, server: Any) -> _Extensions | None:
        """The settings of ``server``; None when it turned nothing on."""
        if (
            getattr(server, "tls_context", None) is None
            and getattr(server, "ssl_context", None) is None
            and getattr(server, "authenticator", None) is None
        ):
            return None
        return cls(server)


def _tls_module() -> Any:
    """smtpd_compat._tls, imported on first use (it imports ssl)."""
    from . import _tls

    return _tls


def _is_tls_socket(sock: Any) -> bool:
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)


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
    """A property for ``_SMTPChannel__<old>`` that forwards to ``new``.

    The warning texts are Python's own: programs filter on them.
    """
    on_get = (
        f"Access to __{old} attribute on SMTPChannel is deprecated, use '{new}' instead"
    )
    on_set = (
        f"Setting __{old} attribute on SMTPChannel is deprecated, set '{new}' instead"
    )

    def get(self: SMTPChannel) -> Any:
        warnings.warn(on_get, DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    def set(self: SMTPChannel, value: Any) -> None:
        warnings.warn(on_set, DeprecationWarning, stacklevel=2)
        setattr(self, new, value)

    return property(get, set, doc=f"Deprecated alias of {new}.")


for _old, _new in _DEPRECATED_ALIASES.items():
    setattr(SMTPChannel, f"_SMTPChannel__{_old}", _deprecated_alias(_old, _new))
del _old, _new


def _report_exception(dispatcher: Any) -> None:
    """Log the exception being handled, in the words of asyncore's handle_error.

    The line is asyncore's to the byte, "closing channel" included, also
    where smtpd_compat keeps the channel or server open: programs filter
    their logs on it.
    """
    _, kind, value, where = asyncore.compact_traceback()
    try:
        name = repr(dispatcher)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the report
        name = "<__repr__(self) failed for object at %0x>" % id(dispatcher)
    dispatcher.log_info(
        "uncaptured python exception, closing channel %s (%s:%s %s)"
        % (name, kind, value, where),
        "error",
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
    # TLS and AUTH, all off by default (see __init__).
    tls_context: Any = None
    ssl_context: Any = None
    require_starttls = False
    authenticator: Any = None
    auth_required = False
    auth_require_tls = True
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
        tls_context: ssl.SSLContext | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        authenticator: _auth.Authenticator | None = None,
        auth_required: bool = False,
        auth_require_tls: bool = True,
    ) -> None:
        """Listen on ``localaddr``; the arguments up to ``decode_data`` are 3.11's.

        Keyword-only, all off by default (the server is then 3.11's):

        * ``idle_timeout``: seconds after which a silent client gets 421
          and is disconnected.
        * ``tls_context``: a server-side ``ssl.SSLContext``; EHLO offers
          STARTTLS (RFC 3207).  ``ssl_context``: the same for implicit TLS
          (SMTPS): every connection is TLS from its first byte.
        * ``require_starttls``: refuse every command but EHLO, HELO, NOOP,
          QUIT and STARTTLS with 530 until TLS is up.
        * ``authenticator``: offer AUTH (RFC 4954).  A mapping of login to
          password (PLAIN, LOGIN and CRAM-MD5 are offered), or a callable
          ``(channel, mechanism, login, password) -> bool`` (PLAIN, LOGIN).
        * ``auth_required``: MAIL is refused with 530 until AUTH succeeded.
        * ``auth_require_tls``: AUTH is offered and taken only over TLS
          (538 before); on by default.
        """
        if require_starttls and tls_context is None and ssl_context is None:
            raise ValueError("require_starttls needs a tls_context")
        if auth_required and authenticator is None:
            raise ValueError("auth_required needs an authenticator")
        self.idle_timeout = idle_timeout
        # Set only when given, so that the instance of a server without
        # them holds what 3.11's did.
        for name, value, default in (
            ("tls_context", tls_context, None),
            ("ssl_context", ssl_context, None),
            ("require_starttls", require_starttls, False),
            ("authenticator", authenticator, None),
            ("auth_required", auth_required, False),
            ("auth_require_tls", auth_require_tls, True),
        ):
            if value is not default:
                setattr(self, name, value)
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
                dispatcher._SMTPChannel__close_if_idle(now, timeout)
            elif (
                getattr(dispatcher, "tls_handshake_for", None) is self
                and now - dispatcher.started > timeout
            ):
                # A TLS handshake that has not finished within the timeout.
                dispatcher.abort()

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
            if self.ssl_context is not None:
                self.__start_implicit_tls(*pair)
            else:
                self.handle_accepted(*pair)

    def __start_implicit_tls(self, conn: Any, addr: Any) -> None:
        """SMTPS: the handshake first; handle_accepted() once it is done."""
        _debug("Incoming TLS connection from %s" % repr(addr))

        def accepted(sock: Any) -> None:
            try:
                self.handle_accepted(sock, addr)
            except asyncore.ExitNow:
                raise
            except Exception:  # noqa: BLE001 - as an error in handle_accept()
                sock.close()
                self.handle_error()

        _tls_module().Handshake(
            conn,
            self.ssl_context,
            self._map,  # type: ignore[attr-defined]
            on_done=accepted,
            on_failed=lambda error: _debug("TLS handshake failed:", repr(addr), error),
            server=self,
        )

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

    ``process_message()`` adds an ``X-Peer:`` header naming the client and
    hands the message to ``_deliver()`` - the method programs override to
    queue, filter or rewrite mail instead of relaying it - in the shape
    CPython 3.11 gave it.  The refusals ``_deliver()`` returns decide the
    client's reply (see ``_relay_status()``).

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
        """Relay the message with ``_deliver()``; None (250 OK) unless it failed."""
        refused = self._deliver(mailfrom, rcpttos, _with_peer_header(data, peer[0]))
        _debug("we got some refusals:", refused)
        return _relay_status(rcpttos, refused)

    def _deliver(self, mailfrom: str, rcpttos: list[str], data: Any) -> dict[str, Any]:
        """Send one message upstream; return the refused recipients.

        ``data`` is str or bytes with any line ends; it goes on the wire
        as bytes with CRLF line ends (see ``_relayable_message()``).  The
        result maps each refused recipient to ``(code, reply)`` as smtplib
        reports them.  When the exchange fails as a whole, every recipient
        gets the error's code and text, or ``(-1, 'ignore')`` when it has
        none (the upstream server could not be reached, say).
        """
        import smtplib

        message = _relayable_message(data)
        refused: dict[str, Any] = {}
        try:
            relay = smtplib.SMTP(timeout=self.relay_timeout)
            try:
                relay.connect(self._remoteaddr[0], self._remoteaddr[1])
                relay.ehlo_or_helo_if_needed()
                options = []
                if not message.isascii() and relay.has_extn("8bitmime"):
                    options.append("BODY=8BITMIME")
                refused = relay.sendmail(mailfrom, rcpttos, message, options)
            finally:
                _end_relay_session(relay)
        except smtplib.SMTPRecipientsRefused as exc:
            _debug("got SMTPRecipientsRefused")
            refused = exc.recipients
        except UnicodeEncodeError as exc:
            # smtplib sends commands in ASCII: a non-ASCII address cannot
            # be relayed without SMTPUTF8, which PureProxy does not offer.
            _debug("got", exc.__class__)
            refused = {rcpt: _NON_ASCII_ADDRESS for rcpt in rcpttos}
        except (OSError, smtplib.SMTPException) as exc:
            _debug("got", exc.__class__)
            errcode = getattr(exc, "smtp_code", -1)
            errmsg = getattr(exc, "smtp_error", "ignore")
            refused = {rcpt: (errcode, errmsg) for rcpt in rcpttos}
        return refused


# How _deliver() reports every recipient when smtplib cannot put an address
# into a command (it only sends ASCII).
_NON_ASCII_ADDRESS = (553, b"5.6.7 Non-ASCII address needs SMTPUTF8")

_MAILMAN_UNAVAILABLE = "451 Requested action aborted: Mailman is not available"

# Mailman failed after part of the message had gone on (relayed, or queued
# for a list).  A 4xx reply would make the client send it to everyone again;
# failing for good instead bounces it to the sender with this text.
_MAILMAN_FAILED_AFTER_DELIVERY = (
    "554 Transaction failed: Mailman failed after part of the message was delivered"
)

# Local-part suffix of a list address -> the flag Message.Enqueue() gets,
# and the Subject: header set first (None: none), as Python 3.10 queued
# them: -join and -leave mail becomes a subscription command.
_MAILMAN_COMMANDS = {
    "": ("tolist", None),
    "admin": ("toadmin", None),
    "owner": ("toowner", None),
    "request": ("torequest", None),
    "join": ("torequest", "subscribe"),
    "leave": ("torequest", "unsubscribe"),
}


class MailmanProxy(PureProxy):
    """Hands mail for GNU Mailman lists to Mailman, relays the rest.

    A recipient whose local part is ``list`` or ``list-admin``,
    ``list-owner``, ``list-request``, ``list-join`` or ``list-leave``
    (compared in lower case), where ``Mailman.Utils.list_exists(list)``,
    is given to Mailman through ``Message.Enqueue()``, as Python 3.10 did;
    every other recipient goes to ``_deliver()`` (the message as received,
    without ``X-Peer:``).  The ``Mailman`` package must be importable;
    while it is not, every message gets a 451 reply so that clients try
    again later.

    Whatever can fail before anything has gone on (parsing the message,
    loading the lists) is done first, then the relay, then the queueing:
    see ``process_message()`` for the replies.

    Deprecated, as it was in Python 3.10.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Through the module's ``warn``, which Python 3.10 called.
        warn(
            "MailmanProxy is deprecated and will be removed in future",
            DeprecationWarning,
            stacklevel=2,
        )
        if kwargs.get("enable_SMTPUTF8") or (len(args) > 4 and args[4]):
            raise ValueError("MailmanProxy does not support SMTPUTF8.")
        # Past PureProxy.__init__: its check would name the wrong class.
        super(PureProxy, self).__init__(*args, **kwargs)

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kwargs: Any
    ) -> str | None:
        """Queue the list recipients' copies with Mailman, relay the rest.

        The list recipients are removed from ``rcpttos`` (as in Python
        3.10).  A failure before anything has gone on leaves the client
        free to retry: ``451``, from the relay or (for an exception) from
        the channel.  Once the relay took the message for a recipient or
        Mailman queued a copy, a retry would duplicate it, so a later
        Mailman error fails the transaction for good (``554``).  Relay
        refusals of only some recipients are accepted, as by PureProxy.
        """
        try:
            # Mailman 2 is not on PyPI: mypy cannot know it.
            from Mailman import (  # type: ignore[import-not-found]
                MailList,
                Message,
                Utils,
            )
        except ImportError as exc:
            _debug("cannot import Mailman:", exc)
            return _MAILMAN_UNAVAILABLE

        list_rcpts = _mailman_recipients(rcpttos, Utils.list_exists)
        for rcpt, _, _ in list_rcpts:
            rcpttos.remove(rcpt)
        msg = _mailman_message(Message.Message, data, mailfrom)
        mlists: dict[str, Any] = {}
        for _, listname, _ in list_rcpts:
            if listname not in mlists:
                mlists[listname] = MailList.MailList(listname, lock=0)

        passed_on = False
        _debug("forwarding recips:", " ".join(rcpttos))
        if rcpttos:
            refused = self._deliver(mailfrom, rcpttos, data)
            _debug("we got refusals:", refused)
            status = _relay_status(rcpttos, refused)
            if status is None:
                passed_on = True
            elif not list_rcpts or status.startswith("4"):
                # Nothing has gone anywhere yet: a retry duplicates nothing.
                return status
        try:
            for rcpt, listname, command in list_rcpts:
                _debug("sending message to", rcpt)
                flag, subject = _MAILMAN_COMMANDS[command]
                if subject is not None:
                    msg["Subject"] = subject
                msg.Enqueue(mlists[listname], **{flag: 1})
                passed_on = True
        except Exception:
            if not passed_on:
                raise
            _report_exception(self)
            return _MAILMAN_FAILED_AFTER_DELIVERY
        return None


def _mailman_recipients(
    rcpttos: list[str], list_exists: Any
) -> list[tuple[str, str, str]]:
    """(recipient, list name, command) for each list address in rcpttos.

    As in Python 3.10, list_exists() is asked about the first part of every
    local part that has at most one hyphen, whatever follows it.
    """
    found = []
    for rcpt in rcpttos:
        parts = rcpt.lower().split("@")[0].split("-")
        if len(parts) > 2:
            continue
        listname = parts[0]
        command = parts[1] if len(parts) == 2 else ""
        if list_exists(listname) and command in _MAILMAN_COMMANDS:
            found.append((rcpt, listname, command))
    return found


def _mailman_message(message_class: Any, data: Any, mailfrom: str) -> Any:
    """The message parsed by Mailman's Message class, From:/Date: ensured.

    The class reads a file object of text.  Bytes (``decode_data=False``)
    are decoded as the email package's BytesParser decodes them, ASCII
    with surrogate escapes, so 8-bit text in any charset survives.
    Mailman needs From: and Date:, which MTAs add when missing.
    """
    from io import StringIO

    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("ascii", "surrogateescape")
    msg = message_class(StringIO(data))
    if not msg.get("from"):
        msg["From"] = mailfrom
    if not msg.get("date"):
        msg["Date"] = time.ctime(time.time())
    return msg


def _with_peer_header(data: Any, peer_host: Any) -> Any:
    """``data`` with ``X-Peer: <peer_host>`` after its last header line.

    The header goes before the first empty line (at the end when there is
    none), lines being split on LF and joined with LF, as CPython's
    PureProxy did: an overridden ``_deliver()`` gets the text it got there.
    Bytes get the same, with the header in ASCII.
    """
    header = "X-Peer: %s" % (peer_host,)
    if isinstance(data, (bytes, bytearray)):
        lines = bytes(data).split(b"\n")
        lines.insert(_header_end(lines), header.encode("ascii", "backslashreplace"))
        return b"\n".join(lines)
    lines = data.split("\n")
    lines.insert(_header_end(lines), header)
    return "\n".join(lines)


def _header_end(lines: list[Any]) -> int:
    """Index of the first empty line, or len(lines)."""
    for index, line in enumerate(lines):
        if not line:
            return index
    return len(lines)


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _relayable_message(data: Any) -> bytes:
    """``data`` as it goes on the wire: bytes with CRLF line ends.

    str is encoded as UTF-8 (smtplib would insist on ASCII).  Each CRLF,
    CR or LF becomes CRLF, as smtplib does for str only: a bare-LF
    ``\\n.\\n`` is then a line of its own that smtplib dot-stuffs, and
    cannot end the upstream DATA early.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return _LINE_END.sub(b"\r\n", bytes(data))


def _end_relay_session(relay: Any) -> None:
    """Say QUIT if still connected, and close; errors here change nothing.

    The upstream server's reply to the message decided its fate.  Turning
    a failed QUIT into refusals (as CPython did) made the client send a
    delivered message again.
    """
    import smtplib

    if relay.sock is None:
        return
    try:
        relay.quit()
    except (OSError, smtplib.SMTPException):
        relay.close()


def _relay_status(rcpttos: list[str], refused: Any) -> str | None:
    """The reply to the client after relaying: None for 250 OK.

    Only when every recipient was refused did the message fail: for now
    if any refusal had no SMTP code (-1: the upstream server was
    unreachable) or was temporary, each said as such; for good otherwise.  ``refused`` comes from
    ``_deliver()``, which a subclass may have replaced: anything but a
    dict counts as no refusal, as in CPython, which always answered 250.
    """
    if not refused or not isinstance(refused, dict):
        return None
    if len(refused) < len(set(rcpttos)):
        return None
    codes = [_refusal_code(refusal) for refusal in refused.values()]
    if -1 in codes:
        return "451 Requested action aborted: upstream server unavailable"
    if any(400 <= code < 500 for code in codes):
        return (
            "451 Requested action aborted: upstream server refused the message for now"
        )
    return "554 Transaction failed: all recipients refused by the upstream server"


def _refusal_code(refusal: Any) -> int:
    """The SMTP code of one refused-dict value; -1 when it has none."""
    try:
        code, _ = refusal
    except (TypeError, ValueError):
        return -1
    return code if isinstance(code, int) else -1


class Options:
    """Settings from the command line, filled in by parseargs()."""

    setuid = True
    classname = "PureProxy"
    size_limit: int | None = None
    enable_SMTPUTF8 = False
    idle_timeout: float | None = None
    # TLS and AUTH (all off unless asked for).
    tls_cert: str | None = None
    tls_key: str | None = None
    smtps = False
    require_starttls = False
    # login -> password, from --auth-user; None without it.
    auth_users: dict[str, str] | None = None
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
                "tls-cert=",
                "tls-key=",
                "smtps",
                "require-starttls",
                "auth-user=",
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
        elif opt == "--tls-cert":
            options.tls_cert = value
        elif opt == "--tls-key":
            options.tls_key = value
        elif opt == "--smtps":
            options.smtps = True
        elif opt == "--require-starttls":
            options.require_starttls = True
        elif opt == "--auth-user":
            login, password = _parse_auth_user_option(value)
            if options.auth_users is None:
                options.auth_users = {}
            options.auth_users[login] = password
    _check_tls_options(options)

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


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    print(message, file=sys.stderr)
    sys.exit(1)


def _parse_auth_user_option(value: str) -> tuple[str, str]:
    # The password may hold colons: only the first one separates.  The
    # message never repeats the value, which holds a password.
    login, colon, password = value.partition(":")
    if not colon or not login:
        _fail("Invalid --auth-user: USER:PASSWORD expected")
    return login, password


def _check_tls_options(options: Options) -> None:
    if (options.tls_cert is None) != (options.tls_key is None):
        _fail("--tls-cert and --tls-key must be given together")
    if options.tls_cert is None:
        if options.smtps:
            _fail("--smtps needs --tls-cert and --tls-key")
        if options.require_starttls:
            _fail("--require-starttls needs --tls-cert and --tls-key")


def _tls_server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side context with the command line's certificate, or exit."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        _fail(
            "Cannot load TLS certificate %s and key %s: %s" % (cert_file, key_file, exc)
        )
    return context


def _tls_and_auth_arguments(options: Options) -> dict[str, Any]:
    """The SMTPServer keywords the TLS and AUTH options ask for."""
    extra: dict[str, Any] = {}
    tls = options.tls_cert is not None and options.tls_key is not None
    if tls:
        context = _tls_server_context(options.tls_cert, options.tls_key)  # type: ignore[arg-type]
        extra["ssl_context" if options.smtps else "tls_context"] = context
        if options.require_starttls and not options.smtps:
            extra["require_starttls"] = True
    if options.auth_users is not None:
        extra["authenticator"] = options.auth_users
        extra["auth_required"] = True
        if not tls:
            # Without TLS on the command line there is nothing to wait for:
            # AUTH is offered in plaintext (a local test server).
            extra["auth_require_tls"] = False
    return extra


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
    extra: dict[str, Any] = {}
    if options.idle_timeout is not None:
        # Only when asked for: user classes may not take the argument.
        extra["idle_timeout"] = options.idle_timeout
    extra.update(_tls_and_auth_arguments(options))
    _raise_open_file_limit()
    try:
        server_class(
            local,
            (options.remotehost, options.remoteport),
            options.size_limit,
            enable_SMTPUTF8=options.enable_SMTPUTF8,
            **extra,
        )
    except Exception as exc:  # noqa: BLE001 - any failure: one line, exit 1
        # OSError (address in use), ValueError (options the class refuses),
        # TypeError or AttributeError (-c named something that is no server).
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
