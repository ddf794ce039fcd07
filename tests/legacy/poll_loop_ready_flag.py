"""A notification test: a ready flag on the server, a poll()-based loop.

Re-creates fail2ban/fail2ban fail2ban/tests/action_d/test_smtp.py: the
server keeps what it received as attributes of itself (``peer``,
``mailfrom``, ``rcpttos``, ``org_data`` and an unfolded ``data``) and sets
``ready``; the test triggers the action that sends mail (here: smtplib
from a worker thread, as the action runs in its own thread), then polls
``server.ready`` while the asyncore loop runs with ``use_poll=True`` on the
server's own socket map, in the test's thread, a pass at a time.
"""

import asyncore
import json
import re
import smtpd
import smtplib
import threading
import time


class TestSMTPServer(smtpd.SMTPServer):
    def __init__(self, *args):
        smtpd.SMTPServer.__init__(self, *args)
        self.ready = False

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.peer = peer
        self.mailfrom = mailfrom
        self.rcpttos = rcpttos
        self.org_data = data
        self.data = re.sub(r"\n[\t ]", " ", data.decode("utf-8"))
        self.ready = True


def wait_for(condition, socket_map, timeout=5):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        asyncore.loop(timeout=0.01, use_poll=True, map=socket_map, count=1)
    return condition()


def action_ban(port, ip, failures):
    message = (
        "Subject: [Fail2Ban] sshd: banned %s from myhost\r\n"
        "From: Fail2Ban <fail2ban@localhost>\r\n"
        "To: root\r\n"
        "\r\n"
        "Hi,\r\n\r\nThe IP %s has just been banned by Fail2Ban after\r\n"
        "%d attempts against sshd.\r\n\r\nRegards,\r\n\r\nFail2Ban\r\n"
        % (ip, ip, failures)
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail("fail2ban", ["root"], message)


socket_map = {}
server = TestSMTPServer(("127.0.0.1", 0), None, smtpd.DATA_SIZE_DEFAULT, socket_map)
port = server.socket.getsockname()[1]
results = {}
try:
    for ip, failures in (("127.0.0.2", 3), ("192.0.2.1", 5)):
        server.ready = False
        worker = threading.Thread(
            target=action_ban, args=(port, ip, failures), daemon=True
        )
        worker.start()
        ready = wait_for(lambda: server.ready, socket_map)
        # The worker still waits for the reply to its QUIT: keep serving.
        wait_for(lambda worker=worker: not worker.is_alive(), socket_map)
        results[ip] = {
            "ready": ready,
            "peer": server.peer[0],
            "mailfrom": server.mailfrom,
            "rcpttos": server.rcpttos,
            "subject_ok": "Subject: [Fail2Ban] sshd: banned %s" % ip in server.data,
            "attempts_ok": "%d attempts" % failures in server.data,
            "raw_type": type(server.org_data).__name__,
        }
    # Let the last connection's QUIT be handled before tearing down.
    results["channels_closed"] = wait_for(lambda: len(socket_map) == 1, socket_map)
finally:
    server.close()
    asyncore.close_all(map=socket_map)
results["global_map_untouched"] = len(asyncore.socket_map) == 0
print(json.dumps(results, indent=1, sort_keys=True))
