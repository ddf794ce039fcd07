"""Scripts that drive ``python -m smtpd`` and check what it says back.

Re-creates the wrappers around the smtpd command line that dev-setup
guides recommend (Sjord/Sjord.github.io's test-mail-server post,
istommao/pymotw's smtpd page: ``python -m smtpd -n -c DebuggingServer
host:port``, with ``-s`` for a size limit): a script that checks the tool
is there with ``--version``/``-V`` and reports start-up mistakes - an
unknown option, a bad ``--size``, a malformed or non-numeric address, too
many arguments.  Each command line is run with the interpreter's
``-m smtpd`` and its exit status, standard output and last line of
standard error are kept (the full help text is left out: README documents
that ours describes the real defaults).  The last case starts a
DebuggingServer with ``-s`` on a free port, checks that the size limit is
announced and enforced, and stops it with SIGINT, a normal end for smtpd.
"""

import json
import os
import signal
import smtplib
import subprocess
import sys
import time

# 3.11 warns that smtpd, asyncore and asynchat are deprecated; keep that
# noise out of the messages compared.
QUIET = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")


def run(*arguments):
    done = subprocess.run(
        [sys.executable, "-m", "smtpd"] + list(arguments),
        check=False,
        env=QUIET,
        capture_output=True,
        text=True,
        timeout=20,
    )
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    return {
        "status": done.returncode,
        "stdout": done.stdout,
        "last_stderr_line": errors[-1] if errors else None,
    }


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
    raise RuntimeError("never listened")


results = {
    "version_long": run("--version"),
    "version_short": run("-V"),
    "bad_option": run("--bogus"),
    "bad_size": run("-n", "--size", "lots", "127.0.0.1:0"),
    "bad_local_spec": run("-n", "nocolon"),
    "bad_local_port": run("-n", "127.0.0.1:http"),
    "bad_remote_port": run("-n", "127.0.0.1:0", "127.0.0.1:smtp"),
    "too_many_arguments": run("-n", "a:1", "b:2", "c:3"),
}

server = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "smtpd",
        "-n",
        "-c",
        "DebuggingServer",
        "-s",
        "1000",
        "127.0.0.1:0",
    ],
    env=QUIET,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
)
try:
    port = listening_port(server.pid, time.monotonic() + 10)
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("cli")
        results["size_option"] = client.esmtp_features.get("size")
        try:
            client.sendmail("a@example.com", ["b@example.com"], "x" * 2000)
        except smtplib.SMTPSenderRefused as error:
            results["over_size"] = [error.smtp_code, error.smtp_error.decode()]
finally:
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=10)
results["server_exit"] = [
    server.returncode,
    out,
    [line for line in err.splitlines() if "Traceback" in line],
]
print(json.dumps(results, indent=1, sort_keys=True))
