"""Testing logging.handlers.SMTPHandler against an in-process smtpd server.

Re-creates the TestSMTPServer helper of python/cpython
Lib/test/test_logging.py: an SMTPServer on its own socket map
(``map=sockmap``, ``decode_data=True``) that exposes ``port``, hands each
message to a callback, and is served by ``asyncore.loop(poll_interval,
map=...)`` in a daemon thread; stop() closes the server, joins the thread
and calls ``asyncore.close_all(map=..., ignore_all=True)``.  The test logs
a record through SMTPHandler and checks the message the server got.
"""

import asyncore
import json
import logging
import logging.handlers
import smtpd
import threading


class TestSMTPServer(smtpd.SMTPServer):
    def __init__(self, addr, handler, poll_interval, sockmap):
        smtpd.SMTPServer.__init__(self, addr, None, map=sockmap, decode_data=True)
        self.port = self.socket.getsockname()[1]
        self._handler = handler
        self._thread = None
        self.poll_interval = poll_interval

    def process_message(self, peer, mailfrom, rcpttos, data):
        self._handler(peer, mailfrom, rcpttos, data)

    def start(self):
        self._thread = threading.Thread(
            target=self.serve_forever, args=(self.poll_interval,)
        )
        self._thread.daemon = True
        self._thread.start()

    def serve_forever(self, poll_interval):
        asyncore.loop(poll_interval, map=self._map)

    def stop(self):
        self.close()
        self._thread.join(5)
        alive = self._thread.is_alive()
        self._thread = None
        asyncore.close_all(map=self._map, ignore_all=True)
        return alive


messages = []
received = threading.Event()


def process_message(peer, mailfrom, rcpttos, data):
    messages.append(
        {"peer": peer[0], "mailfrom": mailfrom, "rcpttos": rcpttos, "data": data}
    )
    received.set()


sockmap = {}
server = TestSMTPServer(("127.0.0.1", 0), process_message, 0.01, sockmap)
server.start()
try:
    handler = logging.handlers.SMTPHandler(
        ("127.0.0.1", server.port), "me", "you", "Log", timeout=5
    )
    logger = logging.getLogger("legacy.smtphandler")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("Hello \u2713")
    handler.close()
    got_it = received.wait(5)
finally:
    loop_alive = server.stop()
message = messages[0]
data = message.pop("data")
message["headers"] = sorted(
    line.split(":")[0] for line in data.split("\n\n")[0].splitlines() if ":" in line
)
message["subject_line"] = [
    line for line in data.splitlines() if line.startswith("Subject:")
]
message["body_ends_with_check_mark"] = data.endswith("\n\nHello \u2713")
message["data_type"] = type(data).__name__
print(
    json.dumps(
        {
            "received": got_it,
            "message": message,
            "loop_alive_after_stop": loop_alive,
            "map_left": len(sockmap),
        },
        indent=1,
        sort_keys=True,
    )
)
