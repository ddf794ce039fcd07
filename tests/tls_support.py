"""Certificates and clients for the STARTTLS/SMTPS/AUTH tests (issue 11).

A throw-away CA made with trustme signs a certificate for ``localhost``
and ``127.0.0.1``; servers get ``server_context()``, clients
``client_context()``, which verifies the server against that CA (never
turning verification off).
"""

import base64
import socket
import ssl
import threading

import trustme
from conftest import TIMEOUT, RawClient


class Certificates:
    """A CA, a server certificate and the two SSL contexts."""

    def __init__(self, tmp_path):
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.ca_file = str(tmp_path / "ca.pem")
        self.cert_file = str(tmp_path / "cert.pem")
        self.key_file = str(tmp_path / "key.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.cert.cert_chain_pems[0].write_to_path(self.cert_file)
        self.cert.private_key_pem.write_to_path(self.key_file)

    def server_context(self):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self):
        context = ssl.create_default_context(cafile=self.ca_file)
        return context


def b64(text):
    if isinstance(text, str):
        text = text.encode("utf-8")
    return base64.b64encode(text).decode("ascii")


def plain(login, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, login, password))


class TLSLineClient(RawClient):
    """conftest's RawClient on a socket that is already connected and wrapped."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.buffer = b""
        self.greeting = None


def starttls(raw_client, context):
    """STARTTLS on a conftest RawClient; returns a TLSLineClient.

    Asserts that nothing but the 220 reply came in plaintext.
    """
    assert raw_client.cmd(b"STARTTLS") == b"220 Ready to start TLS\r\n"
    assert raw_client.buffer == b"", raw_client.buffer
    wrapped = context.wrap_socket(raw_client.sock, server_hostname="localhost")
    raw_client.sock = wrapped  # closed by the connect fixture
    return TLSLineClient(wrapped)


def connection_closed(sock, timeout=TIMEOUT):
    """True when the peer closes ``sock`` (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def tls_socket_pair(certs):
    """A server-side and a client-side SSLSocket over a socket pair."""
    server_end, client_end = socket.socketpair()
    server_end.settimeout(TIMEOUT)
    client_end.settimeout(TIMEOUT)
    server_tls = certs.server_context().wrap_socket(
        server_end, server_side=True, do_handshake_on_connect=False
    )
    result = {}

    def client_side():
        result["sock"] = certs.client_context().wrap_socket(
            client_end, server_hostname="localhost"
        )

    thread = threading.Thread(target=client_side)
    thread.daemon = True
    thread.start()
    server_tls.do_handshake()
    thread.join(TIMEOUT)
    return server_tls, result["sock"]
