"""A unittest fixture: the server's asyncore.loop() runs in a thread.

Re-creates the TestReceiver helper of Lucterios2/contacts
(lucterios/mailing/tests.py): setUp() builds an SMTPServer subclass that
keeps every message in a list on the class, and starts
``threading.Thread(target=asyncore.loop, kwargs={"timeout": ...})``;
tearDown() closes the server and joins the thread, which ends once the
socket map is empty.  The tests send with smtplib and look at the list.
"""

import asyncore
import email
import json
import smtpd
import smtplib
import threading
import unittest

results = {}


class RecordingServer(smtpd.SMTPServer):
    emails = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.emails.append((peer[0], mailfrom, list(rcpttos), data, sorted(kwargs)))


class MailingTest(unittest.TestCase):
    def setUp(self):
        RecordingServer.emails = []
        self.server = RecordingServer(("127.0.0.1", 0), None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05})
        self.thread.start()

    def tearDown(self):
        self.server.close()
        self.thread.join(5)
        results.setdefault("loop_thread_alive_after_join", []).append(
            self.thread.is_alive()
        )

    def test_plain_message(self):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
            refused = client.sendmail(
                "sender@example.com",
                ["one@example.com"],
                "Subject: hello\r\n\r\nfirst line\r\n.leading dot\r\n",
            )
        self.assertEqual(refused, {})
        self.assertEqual(len(RecordingServer.emails), 1)
        peer, mailfrom, rcpttos, data, keywords = RecordingServer.emails[0]
        message = email.message_from_bytes(data)
        results["plain"] = {
            "peer": peer,
            "mailfrom": mailfrom,
            "rcpttos": rcpttos,
            "data": data.decode("ascii"),
            "subject": message["Subject"],
            "keywords": keywords,
        }

    def test_many_recipients_and_rset(self):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
            client.ehlo("tester")
            client.mail("a@example.com")
            client.rcpt("dropped@example.com")
            reset = client.rset()
            refused = client.sendmail(
                "b@example.com",
                ["x@example.com", "y@example.com"],
                "Subject: two\r\n\r\nbody",
            )
        results["rset"] = {
            "reset_reply": [reset[0], reset[1].decode()],
            "refused": refused,
            "emails": [entry[1:4] for entry in RecordingServer.emails],
        }

    def test_deliberately_failing(self):
        # A failing assertion must be reported the same way on every Python.
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
            code, text = client.noop()
        self.assertEqual((code, text), (250, b"not what the server says"))


suite = unittest.defaultTestLoader.loadTestsFromTestCase(MailingTest)
outcome = unittest.TestResult()
suite.run(outcome)
results["tests_run"] = outcome.testsRun
results["failures"] = [
    (test.id().split(".")[-1], trace.strip().splitlines()[-1])
    for test, trace in outcome.failures
]
results["errors"] = [
    (test.id().split(".")[-1], trace.strip().splitlines()[-1])
    for test, trace in outcome.errors
]
print(json.dumps(results, indent=1, sort_keys=True, default=repr))
