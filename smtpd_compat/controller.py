"""Run an ``SMTPServer`` in a background thread, for test suites.

A test that needs a real SMTP server usually starts one in a thread,
talks to it through the code under test and looks at what arrived.  Done
by hand this tends to go wrong in small ways: the test connects before the
loop runs, the server is never stopped, sockets and threads outlive the
test, or the loop drives asyncore's global map and so every other server in
the process.  ``Controller`` does it once, carefully:

* the server lives on a socket map of its own, driven by a daemon thread;
* ``start()`` returns when the server has answered a real connection;
* ``stop()`` wakes the loop at once, closes every connection and the
  listening socket, joins the thread and reports anything that went wrong
  in it.  It may be called any number of times, from any thread.

Example::

    from smtpd_compat import DebuggingServer
    from smtpd_compat.controller import Controller

    with Controller(DebuggingServer, decode_data=True) as controller:
        send_mail_to(controller.host, controller.port)
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Generic,
    Mapping,
    Tuple,
    TypeVar,
    overload,
)

from .asynchat import asyncore

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Controller", "ControllerError"]

S = TypeVar("S", bound=asyncore.dispatcher)

#: A callable ``(localaddr, map) -> server`` building a listening server
#: that registers itself (and its connections) in ``map``.
ServerFactory = Callable[[Tuple[str, int], Dict[int, Any]], S]

# Where to connect to reach a server bound to a wildcard address.
_WILDCARD_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
# What a probe raises when it runs out of time (socket.timeout is not a
# TimeoutError before Python 3.10).
_TIMEOUTS = (socket.timeout, TimeoutError)
# Longest greeting line read while checking that the server answers.
_MAX_GREETING = 4096
# What to install to get throw-away certificates.
_TLS_EXTRA = "smtpd-compat[tls]"


class ControllerError(RuntimeError):
    """The server could not be started or stopped cleanly.

    The exception that caused it, if any, is chained as ``__cause__``.
    """


class _Waker(asyncore.dispatcher):
    """The read end of a socket pair, in the loop's map.

    Writing a byte to the other end makes the loop's ``poll()`` return at
    once, so ``stop()`` need not wait for a poll timeout.
    """

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        try:
            self.recv(4096)
        except (BlockingIOError, InterruptedError):
            pass


def _bound_address(server: asyncore.dispatcher) -> tuple[str, int]:
    sock = server.socket
    if sock is None:
        raise TypeError(f"{type(server).__name__} has no socket")
    host, port = sock.getsockname()[:2]
    return host, port


class _Certificates:
    """A throw-away CA, and a server certificate it signed, made by trustme.

    The CA's certificate is also written to a file of its own (``ca_file``)
    for clients that want a path; ``remove()`` deletes that file.
    """

    def __init__(self, names: list[str]) -> None:
        try:
            import trustme
        except ImportError as exc:
            raise _missing_trustme() from exc
        self._ca = trustme.CA()
        self._server_cert = self._ca.issue_cert(*names)
        self._directory = tempfile.mkdtemp(prefix="smtpd-compat-ca-")
        self.ca_file = os.path.join(self._directory, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        # From the PEM in memory, not ca_file: the context stays usable
        # after stop() has removed the file.
        return ssl.create_default_context(
            cadata=self._ca.cert_pem.bytes().decode("ascii")
        )

    def remove(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)


def _missing_trustme() -> ImportError:
    return ImportError(
        "TLS in the smtpd_compat test kit needs the trustme package, which "
        f"makes its throw-away certificates: pip install '{_TLS_EXTRA}'",
        name="trustme",
    )


def _certificate_names(host: str) -> list[str]:
    """The names a client may use to reach a server bound to ``host``."""
    names = ["localhost", "127.0.0.1", "::1"]
    if host and host not in _WILDCARD_TO_LOOPBACK and host not in names:
        names.append(host)
    return names


class Controller(Generic[S]):
    """Runs one SMTP server in a daemon thread on a private socket map.

    Give either the server class and its keyword arguments::

        Controller(DebuggingServer, host="127.0.0.1", port=0, decode_data=True)

    which is called as ``server_class((host, port), remoteaddr, map=...,
    **server_kwargs)``, or a ``factory`` that builds the server itself::

        Controller(factory=lambda localaddr, map: MyServer(localaddr, map=map))

    The server must register itself in the map it is given (``SMTPServer``
    does, through its ``map`` argument); a server that ends up in asyncore's
    global map is refused with TypeError.

    ``port=0`` (the default) lets the operating system pick a free port;
    ``host`` and ``port`` hold the address actually bound once ``start()``
    has returned.  ``start()`` waits up to ``ready_timeout`` seconds for the
    server to send its greeting (``expect_greeting=False``: only for a
    connection to be accepted, for servers that do not greet), ``stop()``
    up to ``stop_timeout`` seconds for the thread to end.

    To see that the server answers, ``start()`` makes one connection of
    its own, closed as soon as the greeting has arrived; a server that
    counts connections will see it.

    A stopped controller can be started again; each start builds a new
    server (on a new port, when ``port`` is 0).  After ``stop()`` the
    ``server`` attribute still refers to the last server, so what it
    recorded can be inspected.

    TLS and AUTH, for code that sends mail the way it does in production
    (they need a server class taking SMTPServer's ``tls_context``,
    ``ssl_context``, ``authenticator`` and ``auth_required`` keywords):

    * ``starttls=True`` (or ``tls=True``): the server offers STARTTLS;
      ``smtps=True``: implicit TLS, the whole connection is encrypted
      (``tls=True`` with ``smtps=True`` means the same).  Each ``start()``
      makes a throw-away CA and a certificate for ``localhost``,
      ``127.0.0.1`` and ``::1`` (and ``host``) with the ``trustme`` package,
      the ``tls`` extra of smtpd-compat.  ``ca_file`` is the path of the
      CA's certificate (removed by ``stop()``) and ``client_context()`` an
      SSLContext that trusts it, so that clients verify the server.
    * ``auth={"user": "password", ...}``: the server offers AUTH (PLAIN,
      LOGIN, CRAM-MD5) for these users; ``auth_required=True`` refuses
      MAIL before a successful AUTH.  With TLS on, AUTH is only offered
      once TLS is up, as a production server does; without TLS it is
      offered in plain text (pass ``auth_require_tls`` to decide otherwise).
    """

    #: The server being run (the last one after ``stop()``), or None
    #: before the first ``start()``.
    server: S | None
    #: The address the server is bound to: set by ``start()``.
    host: str | None
    port: int | None
    #: Path of the throw-away CA's certificate (PEM) while a server with TLS
    #: runs, None otherwise.
    ca_file: str | None

    @overload
    def __init__(
        self,
        server_class: type[S],
        *,
        host: str = ...,
        port: int = ...,
        remoteaddr: Any = ...,
        ready_timeout: float = ...,
        stop_timeout: float = ...,
        poll_interval: float = ...,
        expect_greeting: bool = ...,
        tls: bool = ...,
        starttls: bool = ...,
        smtps: bool = ...,
        auth: Mapping[str, str] | None = ...,
        auth_required: bool = ...,
        **server_kwargs: Any,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        factory: ServerFactory[S],
        host: str = ...,
        port: int = ...,
        ready_timeout: float = ...,
        stop_timeout: float = ...,
        poll_interval: float = ...,
        expect_greeting: bool = ...,
    ) -> None: ...

    def __init__(
        self,
        server_class: type[S] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        remoteaddr: Any = None,
        factory: ServerFactory[S] | None = None,
        ready_timeout: float = 5.0,
        stop_timeout: float = 5.0,
        poll_interval: float = 0.5,
        expect_greeting: bool = True,
        tls: bool = False,
        starttls: bool = False,
        smtps: bool = False,
        auth: Mapping[str, str] | None = None,
        auth_required: bool = False,
        **server_kwargs: Any,
    ) -> None:
        if (server_class is None) == (factory is None):
            raise TypeError("Controller() needs either a server class or factory=")
        kit_options = tls or starttls or smtps or auth is not None or auth_required
        if factory is not None and (
            server_kwargs or remoteaddr is not None or kit_options
        ):
            raise TypeError(
                "server arguments cannot be combined with factory=; "
                "let the factory pass them"
            )
        if starttls and smtps:
            raise TypeError("starttls=True and smtps=True exclude each other")
        if (tls or starttls or smtps) and (
            "tls_context" in server_kwargs or "ssl_context" in server_kwargs
        ):
            raise TypeError(
                "tls=/starttls=/smtps= make the server's context; "
                "do not give tls_context= or ssl_context= as well"
            )
        if auth is not None and "authenticator" in server_kwargs:
            raise TypeError("give either auth= or authenticator=, not both")
        if auth_required and auth is None and "authenticator" not in server_kwargs:
            raise TypeError("auth_required=True needs auth={user: password}")
        #: "starttls", "smtps" or None.
        self.tls_mode = "smtps" if smtps else "starttls" if tls or starttls else None
        if self.tls_mode is not None:
            # Fail now, not at start(), when the certificates cannot be made.
            try:
                import trustme  # noqa: F401
            except ImportError as exc:
                raise _missing_trustme() from exc
        if auth is not None:
            # A copy: the server's mapping must not change under it.
            server_kwargs["authenticator"] = dict(auth)
            if self.tls_mode is None:
                server_kwargs.setdefault("auth_require_tls", False)
        if auth_required:
            server_kwargs["auth_required"] = True
        self.server_class = server_class
        self.server_kwargs = server_kwargs
        self.remoteaddr = remoteaddr
        self.factory = factory
        self.requested_address = (host, port)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.expect_greeting = expect_greeting
        self.server = None
        self.host = None
        self.port = None
        self.ca_file = None
        self._certificates: _Certificates | None = None
        # Serialises start() and stop() (stop() from the loop thread
        # itself excepted, see there).
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_socket: socket.socket | None = None
        self._loop_error: BaseException | None = None

    def __repr__(self) -> str:
        what = getattr(self.server_class or self.factory, "__name__", "server")
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {what} {state} at {self.host}:{self.port}>"

    # -- public API ----------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the running server, e.g. for ``smtplib.SMTP``."""
        if self.host is None or self.port is None:
            raise RuntimeError("the controller has not been started")
        return self.host, self.port

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext for clients, trusting the server's throw-away CA.

        It verifies the certificate and the host name as usual: connect to
        ``localhost``, ``127.0.0.1`` or ``::1`` (or ``host``).  Available
        while the server runs with TLS, and still after ``stop()``.
        """
        if self._certificates is None:
            if self.tls_mode is None:
                raise RuntimeError(f"{self!r} was made without tls=True")
            raise RuntimeError("the controller has not been started")
        return self._certificates.client_context()

    def start(self) -> Self:
        """Build the server, start the loop thread, wait until it answers.

        Returns the controller itself.  Exceptions from building the server
        (an address in use, bad arguments) propagate unchanged; if the
        server does not answer within ``ready_timeout`` seconds everything
        is torn down again and ControllerError is raised.
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self!r} is already started")
            sock_map: dict[int, Any] = {}
            self._stopping.clear()
            self._loop_error = None
            certificates = None
            if self.tls_mode is not None:
                certificates = _Certificates(
                    _certificate_names(self.requested_address[0])
                )
            wake_reader, wake_writer = socket.socketpair()
            try:
                _Waker(wake_reader, map=sock_map)
                server = self._build_server(sock_map, certificates)
                host, port = _bound_address(server)
            except BaseException:
                wake_writer.close()
                asyncore.close_all(map=sock_map, ignore_all=True)
                wake_reader.close()  # in case _Waker() itself failed
                if certificates is not None:
                    certificates.remove()
                raise
            self._certificates = certificates
            self.ca_file = certificates.ca_file if certificates else None
            self._wake_socket = wake_writer
            self.server = server
            self.host, self.port = host, port
            loop_entered = threading.Event()
            thread = threading.Thread(
                target=self._run,
                args=(sock_map, loop_entered),
                name=f"smtpd-controller-{self.port}",
                daemon=True,
            )
            self._thread = thread
            thread.start()
            try:
                self._wait_until_ready(loop_entered)
            except BaseException:
                # Tear down what was started.  The readiness error is the one
                # to report: it already has a loop error as its cause, and a
                # thread that would not end keeps the controller "running".
                try:
                    self._stop_locked(self.stop_timeout)
                except ControllerError:
                    pass
                raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server and wait for the loop thread to end.

        Every connection and the listening socket are closed.  Calling it
        again, or concurrently from several threads, is harmless: one call
        does the work and the others wait for it.  Called from inside the
        server (the loop thread), it only asks the loop to end.

        Raises ControllerError if the thread is still running after
        ``timeout`` seconds (default ``stop_timeout``; the controller then
        stays "running" and ``stop()`` may be tried again), or if an
        exception ended the loop (chained as the cause).
        """
        if threading.current_thread() is self._thread:
            self._request_stop()
            return
        with self._lock:
            self._stop_locked(self.stop_timeout if timeout is None else timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------

    def _build_server(
        self, sock_map: dict[int, Any], certificates: _Certificates | None
    ) -> S:
        localaddr = self.requested_address
        if self.factory is not None:
            server = self.factory(localaddr, sock_map)
        else:
            assert self.server_class is not None
            server_class: Any = self.server_class
            kwargs = dict(self.server_kwargs)
            if certificates is not None:
                context_keyword = (
                    "ssl_context" if self.tls_mode == "smtps" else "tls_context"
                )
                kwargs[context_keyword] = certificates.server_context()
            server = server_class(localaddr, self.remoteaddr, map=sock_map, **kwargs)
        if getattr(server, "_map", None) is not sock_map or server not in (
            sock_map.values()
        ):
            # It registered elsewhere (the global map, typically because an
            # old __init__ does not pass map= on): our loop would never see it.
            try:
                server.close()
            finally:
                name = type(server).__name__
                raise TypeError(
                    f"{name} did not register in the socket map it was given; "
                    "pass map= on to SMTPServer.__init__, or use factory="
                )
        return server

    def _run(self, sock_map: dict[int, Any], loop_entered: threading.Event) -> None:
        """The loop thread: serve until asked to stop, then close everything."""
        stopping = self._stopping
        try:
            loop_entered.set()
            while not stopping.is_set():
                if sock_map:
                    asyncore.loop(
                        timeout=self.poll_interval,
                        use_poll=True,
                        map=sock_map,
                        count=1,
                    )
                else:  # everything closed itself: nothing to poll
                    stopping.wait(self.poll_interval)
        except asyncore.ExitNow:
            pass  # a handler asked the loop to end: a normal stop
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._loop_error = exc
        finally:
            asyncore.close_all(map=sock_map, ignore_all=True)

    def _wait_until_ready(self, loop_entered: threading.Event) -> None:
        deadline = time.monotonic() + self.ready_timeout
        loop_entered.wait(self.ready_timeout)
        cause: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if self._loop_error is not None or not self.running:
                cause = self._loop_error
                break
            if remaining <= 0:
                break
            try:
                self._probe(remaining)
                return
            except OSError as exc:
                # A refusal or hang-up says more than a probe that ran out
                # of the time left: keep it as the cause.
                if cause is None or not isinstance(exc, _TIMEOUTS):
                    cause = exc
                time.sleep(min(0.01, max(remaining, 0)))
        raise ControllerError(
            f"{self!r} did not answer within {self.ready_timeout} s"
        ) from cause

    def _probe(self, timeout: float) -> None:
        """Connect to the server and (normally) read its greeting line."""
        assert self.host is not None and self.port is not None
        host = _WILDCARD_TO_LOOPBACK.get(self.host, self.host)
        probe = socket.create_connection((host, self.port), timeout=timeout)
        try:
            if self.tls_mode == "smtps":
                # Implicit TLS: the greeting comes after the handshake, which
                # also shows that the certificate is one clients accept.
                assert self._certificates is not None
                context = self._certificates.client_context()
                probe = context.wrap_socket(probe, server_hostname=host)
            if not self.expect_greeting:
                return
            received = b""
            while b"\n" not in received and len(received) < _MAX_GREETING:
                chunk = probe.recv(_MAX_GREETING)
                if not chunk:
                    raise ConnectionError("the server closed without a greeting")
                received += chunk
        finally:
            probe.close()

    def _request_stop(self) -> None:
        self._stopping.set()
        wake = self._wake_socket
        if wake is not None:
            try:
                wake.send(b"\0")
            except OSError:
                pass  # its buffer is full (a wake-up is pending) or it is gone

    def _stop_locked(self, timeout: float) -> None:
        thread = self._thread
        if thread is None:
            return
        self._request_stop()
        thread.join(timeout)
        if thread.is_alive():
            raise ControllerError(
                f"the loop thread of {self!r} did not end within {timeout} s "
                "(is a handler blocked?)"
            )
        self._thread = None
        if self._wake_socket is not None:
            self._wake_socket.close()
            self._wake_socket = None
        if self._certificates is not None:
            # client_context() keeps working; only the file goes.
            self._certificates.remove()
            self.ca_file = None
        error, self._loop_error = self._loop_error, None
        if error is not None:
            raise ControllerError(
                f"the server loop of {self!r} ended with an exception"
            ) from error
