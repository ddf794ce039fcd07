"""STARTTLS + AUTH under load, and the memory an idle TLS connection costs.

* 200 clients at once, each with STARTTLS, a login and one message: every
  message is captured exactly once, with the login and TLS version of its
  session.
* The server's resident memory per idle TLS connection (TLS up, EHLO
  done, nothing more), measured on a server in a child process and
  printed; README.rst states the figure and the test keeps it honest.
"""

import re
import smtplib
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import TIMEOUT, subprocess_env

from smtpd_compat.capture import CapturingController

USERS = {f"user{number}": f"password {number}" for number in range(20)}
SESSIONS = 200
README = Path(__file__).resolve().parent.parent / "README.rst"


def one_session(sink, number, barrier):
    user = f"user{number % len(USERS)}"
    # Everybody connects at the same moment.
    barrier.wait(TIMEOUT * 6)
    with smtplib.SMTP("localhost", sink.port, timeout=TIMEOUT * 6) as client:
        client.starttls(context=sink.client_context())
        client.login(user, USERS[user])
        client.sendmail(
            f"{user}@example.com",
            ["rcpt@example.com"],
            f"Subject: load {number}\r\nX-Number: {number}\r\n\r\nmessage {number}\r\n",
        )
    return number


def test_concurrent_starttls_auth_sessions():
    started = time.monotonic()
    with CapturingController(tls=True, auth=USERS, auth_required=True) as sink:
        barrier = threading.Barrier(SESSIONS)
        with ThreadPoolExecutor(max_workers=SESSIONS) as pool:
            futures = [
                pool.submit(one_session, sink, number, barrier)
                for number in range(SESSIONS)
            ]
            done = sorted(future.result(timeout=TIMEOUT * 12) for future in futures)
        assert done == list(range(SESSIONS))
        mails = sink.wait_for(SESSIONS, timeout=TIMEOUT)
        time.sleep(0.2)  # nothing more may come
        mails = sink.messages
    assert len(mails) == SESSIONS
    numbers = sorted(int(mail.message["X-Number"]) for mail in mails)
    assert numbers == list(range(SESSIONS)), "lost or duplicated messages"
    for mail in mails:
        number = int(mail.message["X-Number"])
        assert mail.auth_login == f"user{number % len(USERS)}"
        assert mail.mail_from == f"{mail.auth_login}@example.com"
        assert mail.tls in ("TLSv1.2", "TLSv1.3")
    print(f"\n{SESSIONS} STARTTLS+AUTH sessions in {time.monotonic() - started:.1f} s")


# -- memory per idle TLS connection -------------------------------------------

SERVER_SCRIPT = textwrap.dedent(
    """
    import sys
    from smtpd_compat.capture import CapturingController

    sink = CapturingController(tls=True).start()
    print(sink.port, sink.ca_file, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    sink.stop()
    """
)

IDLE_CONNECTIONS = 200
WARM_UP = 20


def resident_bytes(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_idle(port, context, count):
    clients = []
    for _ in range(count):
        client = smtplib.SMTP("localhost", port, timeout=TIMEOUT)
        client.starttls(context=context)
        client.ehlo()
        clients.append(client)
    return clients


def settled_rss(pid):
    """The RSS once it has stopped moving (the loop has caught up)."""
    previous = resident_bytes(pid)
    for _ in range(20):
        time.sleep(0.1)
        current = resident_bytes(pid)
        if current == previous:
            break
        previous = current
    return previous


def readme_figure():
    text = " ".join(README.read_text(encoding="utf-8").split())
    match = re.search(r"about (\d+) KiB of resident memory per idle TLS", text)
    assert match, "README.rst no longer states the memory per idle TLS connection"
    return int(match.group(1))


def test_resident_memory_per_idle_tls_connection():
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=subprocess_env(),
        text=True,
    )
    clients = []
    try:
        port, ca_file = server.stdout.readline().split()
        context = ssl.create_default_context(cafile=ca_file)
        # Warm up: the first connections pay for one-off allocations.
        for client in open_idle(int(port), context, WARM_UP):
            client.quit()
        before = settled_rss(server.pid)
        clients = open_idle(int(port), context, IDLE_CONNECTIONS)
        after = settled_rss(server.pid)
    finally:
        for client in clients:
            client.close()
        server.stdin.close()
        try:
            server.wait(TIMEOUT * 2)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            server.stdout.close()
    per_connection = (after - before) / IDLE_CONNECTIONS / 1024
    print(
        f"\nRSS per idle TLS connection: {per_connection:.1f} KiB "
        f"({IDLE_CONNECTIONS} connections, {before / 2**20:.1f} MiB before, "
        f"{after / 2**20:.1f} MiB after)"
    )
    assert server.returncode == 0
    # README's figure, with room for allocator noise and other versions.
    assert per_connection <= 2 * readme_figure()
