"""The systems under test: message sinks on 127.0.0.1.

Run as a script in each target's own interpreter (``python -I servers.py
--serve KIND --loop poll|select``), so it imports only the standard
library at module level and nothing from this package.  It prints
``READY <port> <module file>`` once it listens.  On SIGUSR1 it prints
``CPU <seconds>``, the user+system CPU time the process has used so far
(with the kernel's full precision, unlike the clock ticks of
``/proc/<pid>/stat``): the orchestrator reads it before and after a
measurement.

With ``--tls CERT KEY --auth USER:PASSWORD`` (compat and aiosmtpd only)
the server offers STARTTLS with that certificate (``require_starttls``),
then AUTH (PLAIN or LOGIN, against that one account), and refuses MAIL
before both.

KIND is one of:

``stdlib``, ``compat``
    an ``SMTPServer`` subclass whose ``process_message()`` drops the
    message, from ``smtpd`` or ``smtpd_compat``, run by
    ``asyncore.loop()`` with ``poll()`` or ``select()``;
``aiosmtpd``
    an ``aiosmtpd.smtp.SMTP`` protocol from ``loop.create_server()`` with
    a handler whose ``handle_DATA`` returns ``250 OK``;
``limit``
    the least a server can do for the same work on this machine: one
    ``selectors`` loop that answers every command with a fixed reply and
    throws the message away without looking at it, except to find the
    end-of-data mark (also when a read splits it).
"""

from __future__ import annotations

import resource
import signal
import ssl
import sys
import time
from typing import NamedTuple

HOST = "127.0.0.1"


class Secure(NamedTuple):
    """The certificate, key and only account of a TLS+AUTH server."""

    cert: str
    key: str
    user: str
    password: str


def raise_fd_limit() -> None:
    """Lift the soft limit on open files to the hard limit (as clients.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def report_cpu(signum: int, frame: object) -> None:
    """SIGUSR1: print the CPU time used so far (all threads)."""
    print("CPU %.6f" % time.process_time(), flush=True)


def serve(kind: str, loop: str, secure: Secure | None) -> None:
    raise_fd_limit()
    signal.signal(signal.SIGUSR1, report_cpu)
    if secure is not None and kind not in ("compat", "aiosmtpd"):
        raise SystemExit("servers.py: %s has no TLS" % kind)
    if kind == "aiosmtpd":
        serve_aiosmtpd(secure)
    elif kind == "limit":
        serve_limit()
    else:
        serve_asyncore(kind, loop, secure)


def server_tls_context(secure: Secure) -> ssl.SSLContext:
    """A server-side SSLContext with the certificate and key of ``secure``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(secure.cert, secure.key)
    return context


def serve_asyncore(kind: str, loop: str, secure: Secure | None) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore

        if kind == "stdlib":
            import smtpd
        else:
            import smtpd_compat as smtpd

    class Sink(smtpd.SMTPServer):  # type: ignore[misc,name-defined]
        """Takes every message and drops it."""

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):  # type: ignore[no-untyped-def]
            return None

    options = {}
    if secure is not None:
        options = {
            "tls_context": server_tls_context(secure),
            "require_starttls": True,
            "authenticator": {secure.user: secure.password},
            "auth_required": True,
        }
    server = Sink((HOST, 0), None, **options)
    print("READY %d %s" % (server.socket.getsockname()[1], smtpd.__file__), flush=True)
    asyncore.loop(timeout=30.0, use_poll=(loop == "poll"))


def serve_aiosmtpd(secure: Secure | None) -> None:
    import asyncio

    import aiosmtpd
    from aiosmtpd.smtp import SMTP

    class Sink:
        """Handler that accepts every message and drops it."""

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    options = {} if secure is None else aiosmtpd_tls_options(secure)

    async def main() -> None:
        handler = Sink()
        event_loop = asyncio.get_running_loop()
        server = await event_loop.create_server(
            lambda: SMTP(handler, **options), HOST, 0
        )
        port = server.sockets[0].getsockname()[1]
        print("READY %d %s" % (port, aiosmtpd.__file__), flush=True)
        await server.serve_forever()

    asyncio.run(main())


def aiosmtpd_tls_options(secure: Secure) -> dict[str, object]:
    """The SMTP() keywords of aiosmtpd for STARTTLS and AUTH as in compat."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    account = (secure.user.encode(), secure.password.encode())

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        """PLAIN or LOGIN with the one account; anything else fails."""
        known = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == account
        )
        return AuthResult(success=known, handled=False)

    return {
        "tls_context": server_tls_context(secure),
        "require_starttls": True,
        "authenticator": authenticator,
        "auth_required": True,
        "auth_require_tls": True,
    }


# The fixed replies of the limit server, by command verb.
LIMIT_GREETING = b"220 limit.example.org ESMTP\r\n"
LIMIT_REPLIES = {
    b"EHLO": b"250-limit.example.org\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n"
    b"250 HELP\r\n",
    b"HELO": b"250 limit.example.org\r\n",
    b"MAIL": b"250 OK\r\n",
    b"RCPT": b"250 OK\r\n",
    b"RSET": b"250 OK\r\n",
    b"NOOP": b"250 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"QUIT": b"221 Bye\r\n",
}
LIMIT_UNKNOWN = b"500 Error: command not recognized\r\n"
END_OF_DATA = b"\r\n.\r\n"


class LimitConnection:
    """What the limit server keeps per connection."""

    __slots__ = ("closing", "commands", "in_data", "out", "sock", "tail")

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.commands = b""  # an incomplete command line
        self.in_data = False
        # The last bytes of the message so far: the end mark may be split
        # between two reads.  The CRLF that ended DATA starts it.
        self.tail = b""
        self.out = b""  # replies the socket did not take yet
        self.closing = False


def serve_limit() -> None:
    import selectors
    import socket

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    print("READY %d %s" % (listener.getsockname()[1], __file__), flush=True)

    def close(connection: LimitConnection) -> None:
        selector.unregister(connection.sock)
        connection.sock.close()  # type: ignore[attr-defined]

    def send(connection: LimitConnection, data: bytes) -> None:
        data = connection.out + data
        try:
            sent = connection.sock.send(data)  # type: ignore[attr-defined]
        except BlockingIOError:
            sent = 0
        except OSError:
            close(connection)
            return
        connection.out = data[sent:]
        if connection.out:
            selector.modify(
                connection.sock,
                selectors.EVENT_READ | selectors.EVENT_WRITE,
                connection,
            )
        elif connection.closing:
            close(connection)

    while True:
        for key, mask in selector.select():
            connection = key.data
            if connection is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connection = LimitConnection(sock)
                selector.register(sock, selectors.EVENT_READ, connection)
                send(connection, LIMIT_GREETING)
                continue
            if mask & selectors.EVENT_WRITE:
                selector.modify(connection.sock, selectors.EVENT_READ, connection)
                send(connection, b"")
                continue
            try:
                data = connection.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(connection)
                continue
            replies = limit_input(connection, data)
            if replies or connection.closing:
                send(connection, replies)


def limit_input(connection: LimitConnection, data: bytes) -> bytes:
    """The replies to one read's worth of input."""
    replies = []
    start = 0
    while start < len(data):
        if connection.in_data:
            # The mark, if it straddles the previous read and this one.
            joined = connection.tail + data[start : start + 4]
            index = joined.find(END_OF_DATA)
            if index >= 0:
                start += index + 5 - len(connection.tail)
            else:
                index = data.find(END_OF_DATA, start)
                if index < 0:
                    last = data[max(start, len(data) - 4) :]
                    connection.tail = (connection.tail + last)[-4:]
                    break
                start = index + 5
            connection.in_data = False
            replies.append(b"250 OK\r\n")
            continue
        end = data.find(b"\r\n", start)
        if end < 0:
            connection.commands += data[start:]
            break
        line = connection.commands + data[start:end]
        connection.commands = b""
        start = end + 2
        verb = line[:4].upper()
        replies.append(LIMIT_REPLIES.get(verb, LIMIT_UNKNOWN))
        if verb == b"DATA":
            connection.in_data = True
            connection.tail = b"\r\n"
        elif verb == b"QUIT":
            connection.closing = True
            break
    return b"".join(replies)


USAGE = (
    "usage: servers.py --serve KIND [--loop poll|select]"
    " [--tls CERT KEY --auth USER:PASSWORD]"
)
# each option and how many values follow it
OPTIONS = {"--loop": 1, "--tls": 2, "--auth": 1}


def parse_options(argv: list[str]) -> dict[str, list[str]] | None:
    """The options after ``--serve KIND``, or None if they do not parse."""
    found: dict[str, list[str]] = {}
    while argv:
        width = OPTIONS.get(argv[0])
        if width is None or len(argv) <= width:
            return None
        found[argv[0]] = argv[1 : width + 1]
        argv = argv[width + 1 :]
    if ("--tls" in found) != ("--auth" in found) or ":" not in "".join(
        found.get("--auth", [":"])
    ):
        return None
    return found


def main(argv: list[str]) -> int:
    """``--serve KIND [--loop poll|select] [--tls CERT KEY --auth USER:PW]``."""
    options = parse_options(argv[2:]) if argv[:1] == ["--serve"] else None
    if options is None or len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    secure = None
    if "--tls" in options:
        user, _, password = options["--auth"][0].partition(":")
        secure = Secure(*options["--tls"], user, password)
    serve(argv[1], options.get("--loop", ["poll"])[0], secure)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
