"""``python -m smtpd -n -c DebuggingServer`` as a throw-away dev mail server.

Re-creates the development recipe of Sjord/Sjord.github.io
(_posts/2019-01-07-quickly-set-up-a-test-mail-server.md) and of countless
READMEs: start ``python -m smtpd -n -c DebuggingServer host:port`` in a
subprocess, point the application's mail settings at it, and read the
messages it prints on standard output.  Here the "application" is
smtplib; the server is stopped with Ctrl-C (SIGINT) and its output shown.

The server is asked for port 0; the port the kernel picked is read from
/proc (the listening socket among the child's file descriptors).
"""

import json
import os
import signal
import smtplib
import subprocess
import sys
import time


def listening_port(pid, deadline):
    """The TCP port process ``pid`` listens on, from /proc (Linux)."""
    while time.monotonic() < deadline:
        inodes = set()
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
        with open("/proc/%d/net/tcp" % pid) as table:
            for row in table.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    return int(fields[1].split(":")[1], 16)
        time.sleep(0.01)
    raise RuntimeError("the server never listened")


server = subprocess.Popen(
    [sys.executable, "-m", "smtpd", "-n", "-c", "DebuggingServer", "127.0.0.1:0"],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
)
try:
    port = listening_port(server.pid, time.monotonic() + 10)
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail(
            "dev@example.com",
            ["user@example.com", "admin@example.com"],
            "From: dev@example.com\r\nSubject: Password reset\r\n\r\n"
            "Click the link:\r\nhttp://localhost/reset/abc\r\n",
        )
        client.ehlo("devbox")
        client.sendmail(
            "dev@example.com",
            ["user@example.com"],
            b"Subject: 8bit\r\n\r\ncaf\xc3\xa9\r\n",
            mail_options=["BODY=8BITMIME"],
        )
finally:
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=10)

print(
    json.dumps(
        {"exit_status": server.returncode, "stdout": out.decode().splitlines()},
        indent=1,
    )
)
