"""Tearing everything down with asyncore.close_all() while clients are connected.

Re-creates the debugging_server() helper of python/cpython's old
Lib/test/test_smtplib.py (Python 2.6 to 3.2): a ``smtpd.DebuggingServer``
is served by ``asyncore.loop(timeout=.01, count=...)`` in a thread whose
``finally:`` calls ``asyncore.close_all()``; the test captures stdout to
compare the printed message.  Here, when the thread tears down, one client
has finished a message, one is idle after EHLO and one is in the middle of
DATA: close_all() must close every channel and the listener, the half
message must never be printed, and each client must see the connection
end.
"""

import asyncore
import contextlib
import io
import json
import smtpd
import smtplib
import socket
import threading

output = io.StringIO()
server = smtpd.DebuggingServer(("127.0.0.1", 0), ("nowhere", -1), decode_data=True)
address = server.socket.getsockname()[:2]
finish = threading.Event()


def debugging_server():
    with contextlib.redirect_stdout(output):
        try:
            while not finish.is_set():
                asyncore.loop(timeout=0.01, count=1)
        finally:
            asyncore.close_all()


thread = threading.Thread(target=debugging_server, daemon=True)
thread.start()
results = {}
try:
    with smtplib.SMTP(*address, timeout=5) as done:
        done.sendmail(
            "a@example.com", ["b@example.com"], "Subject: complete\r\n\r\nfull body\r\n"
        )
    idle = smtplib.SMTP(*address, timeout=5)
    idle.ehlo("idle")
    partial = socket.create_connection(address, timeout=5)
    partial.recv(1024)
    partial.sendall(
        b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
    )
    replies = b""
    while b"354" not in replies:
        replies += partial.recv(1024)
    partial.sendall(b"Subject: half\r\n\r\nnever finished\r\n")
    # The half message is in; make sure the server has read it (NOOP is
    # part of the message text here, so ask on the idle connection).
    idle.noop()
finally:
    finish.set()
    thread.join(5)
results["loop_thread_done"] = not thread.is_alive()
results["map_entries"] = len(asyncore.socket_map)
results["server_socket_closed"] = server.socket is None or server.socket.fileno() == -1
try:
    idle.noop()
    results["idle_client"] = "still served"
except smtplib.SMTPServerDisconnected:
    results["idle_client"] = "disconnected"
results["partial_client_reads"] = repr(partial.recv(100))
partial.close()
idle.close()
results["printed"] = output.getvalue().splitlines()
print(json.dumps(results, indent=1, sort_keys=True))
