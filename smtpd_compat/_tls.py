"""TLS for SMTP channels: the handshake, driven by the asyncore loop.

While a connection's TLS handshake runs (after ``STARTTLS``, or as soon as
an implicit-TLS connection is accepted) its descriptor belongs in the socket
map to a ``Handshake``, not to the channel: the channel's methods - maybe a
legacy subclass's ``handle_read()`` or ``readable()`` - never see the
handshake, and the loop never blocks on it.  When the handshake is done the
descriptor is handed (back) to the channel, now an ``ssl.SSLSocket``.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Callable

from .asynchat import asyncore

# Errors that mean "try again when the socket is ready".
WANT_READ = ssl.SSLWantReadError
WANT_WRITE = ssl.SSLWantWriteError
WANT = (WANT_READ, WANT_WRITE)


class Handshake(asyncore.dispatcher):
    """Runs one server-side TLS handshake without blocking the loop.

    ``flush`` (the STARTTLS case) is a channel whose queued output - the
    ``220 Ready to start TLS`` reply - must leave in plaintext before the
    socket is wrapped; nothing is read from the socket until then, so the
    client's ClientHello is never taken for a command.  ``on_done(sock)``
    gets the wrapped socket; ``on_failed(error)`` runs when the peer goes
    away, sends garbage or is cut off by ``abort()`` (``error``: the
    exception, when there was one).
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        sock_map: dict,
        on_done: Callable[[ssl.SSLSocket], None],
        on_failed: Callable[[BaseException | None], None],
        flush: Any = None,
        server: Any = None,
    ) -> None:
        # Not through dispatcher.__init__(sock), which asks the socket for
        # its peer name: a client may be gone already.
        asyncore.dispatcher.__init__(self, map=sock_map)
        sock.setblocking(False)  # accept() may hand out a blocking socket
        self.socket = sock
        self._fileno = sock.fileno()
        self.connected = True
        self.add_channel(sock_map)
        # The SMTPServer whose idle timeout applies to this handshake.
        self.tls_handshake_for = server
        self.started = time.monotonic()
        self._context = context
        self._on_done = on_done
        self._on_failed = on_failed
        self._flush = flush
        self._want_write = False
        self._finished = False
        if flush is None:
            self._wrap()

    def __repr__(self) -> str:
        return "<%s.Handshake fd=%s>" % (__name__, self._fileno)

    def _wrap(self) -> bool:
        """Wrap the socket for the handshake; False if that failed."""
        self._flush = None
        plain: Any = self.socket
        try:
            self.socket = self._context.wrap_socket(
                plain, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as err:  # the client is gone already
            self._fail(err)
            return False
        return True

    # The loop asks these on every pass.
    def readable(self) -> bool:
        return self._flush is None and not self._want_write

    def writable(self) -> bool:
        return self._flush is not None or self._want_write

    def handle_read(self) -> None:
        self._step()

    def handle_write(self) -> None:
        if self._flush is not None:
            channel = self._flush
            channel.initiate_send()
            if not channel.connected:
                self._fail(None)
                return
            if channel.producer_fifo:
                return  # the rest of the reply when the socket takes it
            if not self._wrap():
                return
        self._step()

    def _step(self) -> None:
        try:
            sock: Any = self.socket
            sock.do_handshake()
        except WANT_READ:
            self._want_write = False
            return
        except WANT_WRITE:
            self._want_write = True
            return
        except (OSError, ValueError) as err:
            # Garbage instead of a ClientHello, a peer that went away,
            # a certificate the context refused: this connection only.
            self._fail(err)
            return
        self._finish()

    def _finish(self) -> None:
        sock: Any = self.socket
        self._finished = True
        self.del_channel()
        self.connected = False
        try:
            self._on_done(sock)
        except asyncore.ExitNow:
            raise
        except Exception:  # noqa: BLE001 - reported; this connection only
            # A fault in the code taking the connection over: reported as
            # asyncore reports any dispatcher's, and the connection closed.
            self.handle_error()
            sock.close()
            self._on_failed(None)

    def _fail(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        asyncore.dispatcher.close(self)
        self._on_failed(error)

    def handle_close(self) -> None:
        self._fail(None)

    def handle_expt(self) -> None:
        self._fail(None)

    # handle_error() is asyncore's: it reports the exception, then calls
    # handle_close().

    def close(self) -> None:
        """Close the connection (also for asyncore.close_all())."""
        if self._finished:
            asyncore.dispatcher.close(self)
        else:
            self._fail(None)

    def abort(self) -> None:
        """Cut the connection off from within readable() (idle timeout).

        Closing now would give select() a closed descriptor: the socket is
        only shut down, and the next pass of the loop sees the end and
        closes.  The plain socket's shutdown() is used, since an
        SSLSocket's would also forget its TLS state.
        """
        try:
            sock: Any = self.socket
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def facts(sock: Any) -> tuple[str | None, Any, Any]:
    """(protocol version, cipher, peer certificate) of an SSLSocket."""
    try:
        peercert = sock.getpeercert() if sock.context.verify_mode else None
    except (ValueError, OSError):
        peercert = None
    return sock.version(), sock.cipher(), peercert or None
