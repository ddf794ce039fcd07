"""Code that looks at the channel: type checks, terminators, state in hooks.

Re-creates what test helpers and plugins did with the channel object
itself - python/cpython Lib/test/test_smtpd.py checks attributes such as
``smtp_state``, ``received_lines`` and ``num_bytes``, and servers kept the
channel from handle_accepted() (Lib/test/test_smtplib.py stores
``self._SMTPchannel``) to inspect it later:

* ``isinstance(channel, asynchat.async_chat)`` and
  ``isinstance(channel, asyncore.dispatcher)``, as type-checking plugins do;
* ``get_terminator()`` in command state and inside DATA;
* what the channel holds while process_message() runs (3.11 calls it
  before resetting the transaction: state DATA, ``mailfrom``, ``rcpttos``,
  ``received_data``) and right after the reply;
* a channel whose collect_incoming_data() counts the bytes it is handed.
"""

import asynchat
import asyncore
import json
import smtpd
import smtplib
import threading


class CountingChannel(smtpd.SMTPChannel):
    instances = []

    def __init__(self, *args, **kwargs):
        self.bytes_seen = 0
        self.instances.append(self)
        smtpd.SMTPChannel.__init__(self, *args, **kwargs)

    def collect_incoming_data(self, data):
        self.bytes_seen += len(data)
        smtpd.SMTPChannel.collect_incoming_data(self, data)

    def smtp_XSTATE(self, arg):
        self.push(
            "250 state=%d terminator=%r greeting=%s"
            % (self.smtp_state, self.get_terminator(), self.seen_greeting)
        )


class InspectingServer(smtpd.SMTPServer):
    channel_class = CountingChannel

    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.during = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        channel = CountingChannel.instances[-1]
        self.during.append(
            {
                "smtp_state": channel.smtp_state,
                "terminator": repr(channel.get_terminator()),
                "mailfrom": channel.mailfrom,
                "rcpttos": list(channel.rcpttos),
                "received_data_is_data": channel.received_data == data,
                "require_SMTPUTF8": channel.require_SMTPUTF8,
                "is_async_chat": isinstance(channel, asynchat.async_chat),
                "is_dispatcher": isinstance(channel, asyncore.dispatcher),
                "server_is_dispatcher": isinstance(
                    channel.smtp_server, asyncore.dispatcher
                ),
                "smtp_server_is_self": channel.smtp_server is self,
                "conn_is_socket": channel.conn is channel.socket,
                "addr_is_peer": tuple(channel.addr) == tuple(channel.peer),
                "connected": channel.connected,
            }
        )


server = InspectingServer(("127.0.0.1", 0), None, decode_data=True)
port = server.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


thread = threading.Thread(target=serve, daemon=True)
thread.start()
results = {
    "class_checks": [
        issubclass(smtpd.SMTPChannel, asynchat.async_chat),
        issubclass(smtpd.SMTPServer, asyncore.dispatcher),
        issubclass(smtpd.DebuggingServer, smtpd.SMTPServer),
        issubclass(smtpd.PureProxy, smtpd.SMTPServer),
        smtpd.SMTPServer.channel_class is smtpd.SMTPChannel,
    ]
}
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        results["before_helo"] = list(client.docmd("XSTATE"))
        client.helo("inspector")
        results["after_helo"] = list(client.docmd("XSTATE"))
        client.sendmail(
            "a@example.com",
            ["b@example.com", "c@example.com"],
            "Subject: s\r\n\r\n" + "z" * 100,
        )
        results["after_message"] = list(client.docmd("XSTATE"))
        client.mail("d@example.com")
        client.rcpt("e@example.com")
        client.docmd("DATA")
        client.send(b"partial line\r\n")
        client.send(b".\r\n")
        results["second_reply"] = list(client.getreply())
    # Everything the client sent except the line terminators.
    results["bytes_seen"] = CountingChannel.instances[0].bytes_seen
finally:
    stop.set()
    thread.join(5)
    server.close()
    asyncore.close_all()
results["during_process_message"] = server.during
print(json.dumps(results, indent=1, default=repr))
