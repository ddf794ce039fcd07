"""``python -m smtpd -c package.module.Class``: a content filter as a plugin.

Re-creates the Postfix content-filter setup of smontanaro/spambayes
(spambayes/postfixproxy.py): a module with a PureProxy subclass is handed
to the smtpd command line with ``-c``.  The module does
``import __main__ as smtpd`` and falls back to ``import smtpd`` when
``__main__`` has no PureProxy, so that it shares the running smtpd's
globals.  Its process_message() rejects spam with an error string and
relays the rest, with an added header, through ``self._deliver()``.

Here the plugin is written to a temporary directory put on PYTHONPATH,
the downstream ("after-filter") server is an SMTPServer in this process,
and the client is smtplib.
"""

import asyncore
import json
import os
import signal
import smtpd
import smtplib
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

PLUGIN = textwrap.dedent(
    """
    import __main__ as smtpd
    if not hasattr(smtpd, "PureProxy"):
        import smtpd


    class HeaderFilter(smtpd.PureProxy):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            if b"Subject: buy now" in data:
                return "550 Error: probable spam"
            refused = self._deliver(mailfrom, rcpttos, b"X-Filtered: yes\\r\\n" + data)
            if refused:
                return "250 OK (refused downstream: %s)" % ", ".join(sorted(refused))
    """
)


class Downstream(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        smtpd.SMTPServer.__init__(self, *args, **kwargs)
        self.received = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if "bounce@example.net" in rcpttos:
            return "550 No such user"
        self.received.append([mailfrom, rcpttos, data.decode("ascii")])


def listening_port(pid, deadline):
    """The TCP port process ``pid`` listens on, from /proc (Linux)."""
    while time.monotonic() < deadline:
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/%d/net/tcp" % pid) as table:
            for row in table.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    return int(fields[1].split(":")[1], 16)
        time.sleep(0.01)
    raise RuntimeError("the filter never listened")


downstream = Downstream(("127.0.0.1", 0), None)
downstream_port = downstream.socket.getsockname()[1]
stop = threading.Event()


def serve():
    while not stop.is_set():
        asyncore.loop(timeout=0.01, count=1)


loop_thread = threading.Thread(target=serve, daemon=True)
loop_thread.start()

results = []
try:
    with tempfile.TemporaryDirectory() as plugin_dir:
        with open(os.path.join(plugin_dir, "mailfilter.py"), "w") as plugin:
            plugin.write(PLUGIN)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [plugin_dir, env.get("PYTHONPATH")])
        )
        command = [
            sys.executable,
            "-m",
            "smtpd",
            "-n",
            "-c",
            "mailfilter.HeaderFilter",
            "127.0.0.1:0",
            "127.0.0.1:%d" % downstream_port,
        ]
        proxy = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            port = listening_port(proxy.pid, time.monotonic() + 10)
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                for subject, recipients in [
                    ("hello", ["a@example.net"]),
                    ("buy now", ["a@example.net"]),
                    ("partly", ["a@example.net", "bounce@example.net"]),
                ]:
                    client.ehlo_or_helo_if_needed()
                    client.mail("sender@example.org")
                    for recipient in recipients:
                        client.rcpt(recipient)
                    code, text = client.data("Subject: %s\r\n\r\nbody\r\n" % subject)
                    results.append([subject, code, text.decode()])
        finally:
            proxy.send_signal(signal.SIGINT)
            proxy.communicate(timeout=10)
finally:
    stop.set()
    loop_thread.join(5)
    downstream.close()
print(
    json.dumps(
        {
            "client": results,
            "downstream": downstream.received,
            "exit_status": proxy.returncode,
        },
        indent=1,
    )
)
