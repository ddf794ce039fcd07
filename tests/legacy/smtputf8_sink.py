"""An SMTPUTF8 test sink: international addresses, options via **kwargs.

Re-creates the SMTPUTF8 server of python/cpython Lib/test/test_smtplib.py
(SimSMTPUTF8Server/SMTPUTF8SimTests, written afresh): an SMTPServer with
``enable_SMTPUTF8=True`` whose process_message(**kwargs) records
``mail_options`` and ``rcpt_options``; the client uses smtplib with
``mail_options=['SMTPUTF8', 'BODY=8BITMIME']`` and send_message() of an
EmailMessage with non-ASCII addresses, and checks the EHLO features.
Also checks that the constructor refuses ``decode_data=True`` together
with SMTPUTF8, with the same message.
"""

import asyncore
import json
import smtpd
import smtplib
import threading
from email.message import EmailMessage


class UTF8Sink(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.last = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.last.append(
            {
                "mailfrom": mailfrom,
                "rcpttos": rcpttos,
                "data": data.decode("utf-8"),
                "mail_options": kwargs["mail_options"],
                "rcpt_options": kwargs["rcpt_options"],
            }
        )


results = {}
try:
    smtpd.SMTPServer(("127.0.0.1", 0), None, enable_SMTPUTF8=True, decode_data=True)
except ValueError as error:
    results["both_flags"] = str(error)

server = UTF8Sink(("127.0.0.1", 0), None, enable_SMTPUTF8=True)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("me")
        results["features"] = sorted(client.esmtp_features)
        results["size"] = client.esmtp_features.get("size")
        client.sendmail(
            "Jőhn@example.com",
            ["Sally@exámple.com"],
            "Subject: Üñíçödé\r\n\r\nmoré text\r\n".encode(),
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
        message = EmailMessage()
        message["From"] = "Páolo <főo@bar.com>"
        message["To"] = "Dinsdale <dinsdale@example.com>"
        message["Subject"] = "Nudge nudge, wink, wink \u1f609"
        message.set_content("oh là là, know what I mean, know what I mean?\n\n")
        client.send_message(message)
        # Without SMTPUTF8, a non-ASCII address is refused.
        try:
            client.sendmail("plain@example.com", ["béta@example.com"], b"x")
        except smtplib.SMTPRecipientsRefused as error:
            results["no_smtputf8"] = {
                k: [v[0], v[1].decode()] for k, v in error.recipients.items()
            }
        except UnicodeEncodeError as error:
            results["no_smtputf8"] = "client: " + type(error).__name__
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
results["received"] = server.last
print(json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False))
