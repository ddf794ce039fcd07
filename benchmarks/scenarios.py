"""The declared scenarios: what each one sends, and what it reports.

A scenario runs against one fresh server (``measure()``) and returns a
dict of metrics; each ``Metric`` of the scenario is one row of the tables.
Every scenario that delivers messages also reports the server's CPU time
per message (user+system, read from the server process), the headline
figure next to its throughput: far steadier than throughput on a shared
machine.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable

from .clients import HOST, RECIPIENT, SENDER, expect, make_message
from .procs import (
    Child,
    Failed,
    Server,
    clients_argv,
    listen_overflows,
    machine_busy_seconds,
    run_workers,
    split,
)
from .venvs import Target

# The one account of the STARTTLS+AUTH scenario's servers.
AUTH_USER = "bench"
AUTH_PASSWORD = "bench-password"


def per_message(outcome: dict[str, Any]) -> None:
    """Add the server CPU per message (us and ms) to a workers' outcome."""
    seconds = outcome.get("server_cpu_seconds")
    if seconds is not None and outcome.get("sent"):
        outcome["cpu_us_per_msg"] = seconds / outcome["sent"] * 1e6
        outcome["cpu_ms_per_msg"] = seconds / outcome["sent"] * 1e3


def throughput(
    server: Server,
    mode: str,
    conns: int,
    total_msgs: int,
    size: int,
    processes: int,
    timeout: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    processes = max(1, min(processes, conns))
    per_process = split(conns, processes)
    per_conn = max(1, total_msgs // conns)
    specs = [
        {
            "mode": mode,
            "port": server.port,
            "conns": n,
            "msgs_per_conn": per_conn,
            "size": size,
            "timeout": min(timeout, 60.0),
            **(extra or {}),
        }
        for n in per_process
    ]
    outcome = run_workers(server, specs, timeout)
    expected = per_conn * conns
    if outcome["sent"] != expected:
        raise Failed(
            "only %d of %d messages were accepted" % (outcome["sent"], expected)
        )
    outcome["msgs_per_s"] = outcome["sent"] / outcome["seconds"]
    outcome["mb_per_s"] = outcome["sent"] * size / outcome["seconds"] / 1e6
    per_message(outcome)
    return outcome


def scenario_count(
    mode: str,
    conns: int,
    messages: str,
    size: int,
    value: str,
    one_process: bool = False,
) -> Callable[[Server, Settings], dict[str, Any]]:
    """A fixed number of messages (the Settings attribute ``messages``) of
    ``size`` bytes through ``conns`` connections of client ``mode``; the
    result's ``value`` is its ``msgs_per_s`` or ``mb_per_s``."""

    def run(server: Server, settings: Settings) -> dict[str, Any]:
        result = throughput(
            server,
            mode,
            conns,
            getattr(settings, messages),
            size,
            1 if one_process else settings.client_processes,
            settings.timeout,
        )
        result["value"] = result[value]
        return result

    return run


def scenario_starttls_auth(
    conns: int,
) -> Callable[[Server, Settings], dict[str, Any]]:
    """A new connection per 1 KB message with STARTTLS and AUTH PLAIN from
    ``conns`` clients; the result's ``value`` is sessions per second."""

    def run(server: Server, settings: Settings) -> dict[str, Any]:
        cert, _ = settings.certificate()
        result = throughput(
            server,
            "starttls-auth",
            conns,
            settings.tls_sessions,
            1024,
            settings.client_processes,
            settings.timeout,
            {"cafile": cert, "user": AUTH_USER, "password": AUTH_PASSWORD},
        )
        result["value"] = result["msgs_per_s"]
        return result

    return run


def scenario_rfc2920(conns: int) -> Callable[[Server, Settings], dict[str, Any]]:
    """RFC 2920 pipelining clients, for a fixed time (a slow server gets
    few messages through; a fixed count would take minutes)."""

    def run(server: Server, settings: Settings) -> dict[str, Any]:
        specs = [
            {
                "mode": "rfc2920",
                "port": server.port,
                "conns": n,
                "msgs_per_conn": settings.pipelined_msgs,
                "duration": settings.rfc2920_seconds,
                "size": 1024,
                "timeout": min(settings.timeout, 60.0),
            }
            for n in split(conns, max(1, min(settings.client_processes, conns)))
        ]
        result = run_workers(server, specs, settings.timeout)
        if not result["sent"]:
            raise Failed("no message was accepted")
        result["value"] = result["sent"] / result["seconds"]
        per_message(result)
        return result

    return run


def scenario_huge(server: Server, settings: Settings) -> dict[str, Any]:
    """One 30 MiB message: seconds from DATA to the final reply, peak RSS."""
    message = settings.huge_message()
    with socket.create_connection(
        (HOST, server.port), timeout=settings.timeout
    ) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        expect(sock, buf, 220, "greeting")
        sock.sendall(b"EHLO bench.example.org\r\n")
        expect(sock, buf, 250, "EHLO")
        sock.sendall(b"MAIL FROM:<%s>\r\n" % SENDER.encode())
        expect(sock, buf, 250, "MAIL")
        sock.sendall(b"RCPT TO:<%s>\r\n" % RECIPIENT.encode())
        expect(sock, buf, 250, "RCPT")
        cpu_before = server.cpu()
        machine_before = machine_busy_seconds()
        started = time.monotonic()
        sock.sendall(b"DATA\r\n")
        expect(sock, buf, 354, "DATA")
        sock.sendall(message)
        sock.sendall(b".\r\n")
        expect(sock, buf, 250, "end of data")
        seconds = time.monotonic() - started
        cpu_after = server.cpu()
        machine_after = machine_busy_seconds()
        sock.sendall(b"QUIT\r\n")
    memory = server.memory()
    return {
        "value": seconds,
        "seconds": seconds,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024.0,
        "rss_mb": memory.get("VmRSS", 0) / 1024.0,
        "server_cpu": (
            (cpu_after - cpu_before) / seconds
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        "machine_cpu": (
            (machine_after - machine_before) / seconds
            if machine_before is not None and machine_after is not None
            else None
        ),
        "cpu_ms_per_msg": (
            (cpu_after - cpu_before) * 1e3
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        "message_bytes": len(message),
    }


def fresh_noop(port: int, limit: float = 1.0) -> tuple[bool, float, str]:
    """Connect, wait for the greeting, send NOOP: answered within limit?"""
    started = time.monotonic()
    try:
        with socket.create_connection((HOST, port), timeout=limit) as sock:
            buf = bytearray()
            sock.settimeout(max(0.01, limit - (time.monotonic() - started)))
            expect(sock, buf, 220, "greeting")
            sock.sendall(b"NOOP\r\n")
            sock.settimeout(max(0.01, limit - (time.monotonic() - started)))
            expect(sock, buf, 250, "NOOP")
            sock.sendall(b"QUIT\r\n")
    except Exception as exc:  # noqa: BLE001 - any failure means "not answered"
        return False, time.monotonic() - started, "%s: %s" % (type(exc).__name__, exc)
    elapsed = time.monotonic() - started
    return elapsed <= limit, elapsed, ""


def hold_idle(
    server: Server, cap: int, deadline: float
) -> tuple[Child, dict[str, Any]]:
    holder = Child(
        clients_argv("--hold", {"port": server.port, "cap": cap, "deadline": deadline})
    )
    try:
        held = json.loads(holder.expect("HELD", deadline + 30))
    except BaseException:
        holder.kill()
        raise
    return holder, held


def scenario_idle_max(server: Server, settings: Settings) -> dict[str, Any]:
    holder, held = hold_idle(server, settings.idle_cap, settings.idle_deadline)
    try:
        time.sleep(0.2)
        answered, latency, why = fresh_noop(server.port)
        holder.send("COUNT")
        try:
            still_open = int(holder.expect("OPEN", 30))
        except Failed:
            still_open = -1
        memory = server.memory()
    finally:
        holder.send("QUIT")
        holder.kill()
    alive = server.child.alive()
    note = held["stop_reason"]
    if not alive:
        note += "; server died: %s" % server.child.stderr_tail()
    elif not answered:
        note += "; fresh NOOP not answered within 1 s (%s)" % why
    return {
        "value": held["greeted"],
        "ok": answered and alive,
        "noop_answered": answered,
        "noop_ms": latency * 1000.0,
        "still_open": still_open,
        "server_alive": alive,
        "fill_seconds": held["fill_seconds"],
        "rss_mb": memory.get("VmRSS", 0) / 1024.0,
        "note": note,
    }


def scenario_idle_rss(server: Server, settings: Settings) -> dict[str, Any]:
    count = settings.idle_rss_conns
    # One full session first, so lazily imported modules and first-use
    # caches are in the baseline rather than in the per-connection cost.
    answered, _, why = fresh_noop(server.port, 5.0)
    if not answered:
        raise Failed("warm-up NOOP failed: %s" % why)
    time.sleep(0.2)
    baseline = server.memory().get("VmRSS", 0)
    holder, held = hold_idle(server, count, settings.timeout)
    try:
        if held["greeted"] != count:
            raise Failed(
                "only %d of %d idle connections were greeted (%s)"
                % (held["greeted"], count, held["stop_reason"])
            )
        time.sleep(0.3)
        loaded = server.memory().get("VmRSS", 0)
    finally:
        holder.send("QUIT")
        holder.kill()
    server.check_alive()
    return {
        "value": (loaded - baseline) / count,
        "baseline_rss_mb": baseline / 1024.0,
        "loaded_rss_mb": loaded / 1024.0,
        "connections": count,
    }


def make_certificate() -> tuple[str, str]:
    """A throw-away self-signed certificate for 127.0.0.1 and localhost
    and its key (ECDSA P-256), made by the openssl command: PEM file paths
    in a temporary directory removed when the run ends."""
    directory = tempfile.mkdtemp(prefix="smtpd-bench-tls-")
    atexit.register(shutil.rmtree, directory, True)
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    argv = ["openssl", "req", "-x509", "-nodes", "-days", "2"]
    argv += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    argv += ["-subj", "/CN=localhost"]
    argv += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    argv += ["-keyout", key, "-out", cert]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise Failed("cannot run openssl to make a certificate: %s" % exc) from None
    if done.returncode:
        raise Failed(
            "openssl req failed (exit status %d): %s"
            % (done.returncode, done.stderr.strip()[-300:])
        )
    return cert, key


class Settings:
    """Message counts, durations and timeouts of one run (--quick or not)."""

    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.rounds = args.rounds if args.rounds else (2 if quick else 5)
        self.small_msgs = 1500 if quick else 5000
        self.pipelined_msgs = 5000 if quick else 20000
        self.rfc2920_seconds = 2.0 if quick else 4.0
        self.big_msgs = 12 if quick else 40
        self.connect_msgs = 600 if quick else 2000
        self.tls_sessions = 300 if quick else 1000
        self.huge_size = 30 * (1 << 20)
        self.idle_cap = args.idle_cap or (2000 if quick else 10000)
        self.idle_rounds = min(self.rounds, args.idle_rounds)
        self.idle_deadline = 60.0 if quick else 240.0
        self.idle_rss_conns = 1000
        self.timeout = 60.0 if quick else 120.0
        self.client_processes = args.client_processes
        self._huge: bytes | None = None
        self._certificate: tuple[str, str] | None = None

    def huge_message(self) -> bytes:
        if self._huge is None:
            self._huge = make_message(self.huge_size)
        return self._huge

    def certificate(self) -> tuple[str, str]:
        """The run's one certificate and key (made on first use)."""
        if self._certificate is None:
            self._certificate = make_certificate()
        return self._certificate

    def server_options(self, scenario: Scenario) -> list[str]:
        """The servers.py options a scenario needs (STARTTLS and AUTH)."""
        if not scenario.secure:
            return []
        cert, key = self.certificate()
        return ["--tls", cert, key, "--auth", "%s:%s" % (AUTH_USER, AUTH_PASSWORD)]


class Metric:
    """One row of the result table."""

    def __init__(
        self,
        scenario: str,
        key: str,
        label: str,
        unit: str,
        higher_is_better: bool,
        limit: str,
    ) -> None:
        self.scenario = scenario
        self.key = key
        self.label = label
        self.unit = unit
        self.higher_is_better = higher_is_better
        self.limit = limit


class Scenario:
    """A named measurement: how to run it, and its rows in the tables."""

    def __init__(
        self,
        name: str,
        title: str,
        run: Callable[[Server, Settings], dict[str, Any]],
        metrics: list[Metric],
        loop: str = "poll",
        kinds: tuple[str, ...] = ("stdlib", "compat", "aiosmtpd", "limit"),
        idle: bool = False,
        expected_failure: str = "",
        secure: bool = False,
    ) -> None:
        self.name = name
        self.title = title
        self.run = run
        self.metrics = metrics
        self.loop = loop
        self.kinds = kinds
        self.idle = idle
        self.expected_failure = expected_failure
        self.secure = secure  # STARTTLS and AUTH required (servers.py --tls)


def cpu_metric(scenario: str, label: str, unit: str = "us") -> Metric:
    """The server-CPU-per-message row that goes with a throughput row."""
    return Metric(
        scenario,
        "cpu_%s_per_msg" % unit,
        label + " CPU/msg",
        unit,
        False,
        "server CPU per message (user+system): steady under other load",
    )


def build_scenarios() -> list[Scenario]:
    """Every scenario, in the order of the tables."""
    scenarios = []
    for conns in (1, 10, 100):
        name = "a%d" % conns
        scenarios.append(
            Scenario(
                name,
                "1 KB messages, smtplib, %d persistent connection(s)" % conns,
                scenario_count("smtplib", conns, "small_msgs", 1024, "msgs_per_s"),
                [
                    Metric(
                        name,
                        "value",
                        "(a) 1KB smtplib x%d" % conns,
                        "msg/s",
                        True,
                        "one message in flight per connection: round trips"
                        if conns == 1
                        else "server or client CPU (see cpu%)",
                    ),
                    cpu_metric(name, "(a) 1KB smtplib x%d" % conns),
                ],
            )
        )
    for conns in (1, 10, 100):
        name = "r%d" % conns
        scenarios.append(
            Scenario(
                name,
                "1 KB messages, RFC 2920 pipelining clients, %d connection(s)" % conns,
                scenario_rfc2920(conns),
                [
                    Metric(
                        name,
                        "value",
                        "(a') 1KB pipelined x%d" % conns,
                        "msg/s",
                        True,
                        "round trips: one per message (Nagle stalls them "
                        "where replies leave in separate writes)",
                    ),
                    cpu_metric(name, "(a') 1KB pipelined x%d" % conns),
                ],
            )
        )
    for conns in (1, 10, 100):
        name = "p%d" % conns
        scenarios.append(
            Scenario(
                name,
                "1 KB messages, bulk-pipelined raw client, %d connection(s)" % conns,
                scenario_count(
                    "pipelined",
                    conns,
                    "pipelined_msgs",
                    1024,
                    "msgs_per_s",
                    one_process=True,  # one selector loop drives them all
                ),
                [
                    Metric(
                        name,
                        "value",
                        "(a'') 1KB bulk-pipelined x%d" % conns,
                        "msg/s",
                        True,
                        "server CPU (client is one cheap selector loop)",
                    ),
                    cpu_metric(name, "(a'') 1KB bulk-pipelined x%d" % conns),
                ],
            )
        )
    scenarios.append(
        Scenario(
            "b",
            "1 MB messages, 4 persistent connections",
            # smtplib's own work on a 1 MB message (line end and dot checks
            # in Python) would cost as much CPU as the server's: the raw
            # client keeps its round trips and leaves the CPU to the server.
            scenario_count("raw", 4, "big_msgs", 1 << 20, "mb_per_s"),
            [
                Metric("b", "value", "(b) 1MB x4", "MB/s", True, "server CPU"),
                cpu_metric("b", "(b) 1MB x4", "ms"),
            ],
        )
    )
    scenarios.append(
        Scenario(
            "c",
            "one 30 MiB message: DATA to final reply, peak RSS",
            scenario_huge,
            [
                Metric("c", "seconds", "(c) 30MB DATA time", "s", False, "server CPU"),
                cpu_metric("c", "(c) 30MB", "ms"),
                Metric(
                    "c",
                    "peak_rss_mb",
                    "(c) 30MB peak RSS",
                    "MB",
                    False,
                    "server memory",
                ),
            ],
        )
    )
    scenarios.append(
        Scenario(
            "d",
            "idle connections held, poll()/epoll loop, fresh NOOP within 1 s",
            scenario_idle_max,
            [
                Metric(
                    "d",
                    "value",
                    "(d) idle conns held",
                    "conns",
                    True,
                    "the cap (--idle-cap) or the server's fd handling",
                ),
                Metric(
                    "d",
                    "noop_ms",
                    "(d) NOOP with all held",
                    "ms",
                    False,
                    "one pass of the server's event loop over every connection",
                ),
                Metric(
                    "d",
                    "fill_seconds",
                    "(d) time to open them",
                    "s",
                    False,
                    "accepts per loop pass x cost of a pass (grows with the count)",
                ),
            ],
            idle=True,
        )
    )
    scenarios.append(
        Scenario(
            "d-select",
            "the same with asyncore's default select() loop",
            scenario_idle_max,
            [
                Metric(
                    "d-select",
                    "value",
                    "(d) idle, select loop",
                    "conns",
                    True,
                    "select() cannot watch fd >= 1024",
                )
            ],
            loop="select",
            kinds=("stdlib", "compat"),
            idle=True,
            expected_failure="asyncore's select() loop cannot watch fd >= 1024",
        )
    )
    scenarios.append(
        Scenario(
            "e",
            "RSS per idle connection (1000 connections after the greeting)",
            scenario_idle_rss,
            [
                Metric(
                    "e", "value", "(e) RSS per idle conn", "kB", False, "server memory"
                )
            ],
        )
    )
    scenarios.append(
        Scenario(
            "f",
            "new connection per message (connect, sendmail, quit), 10 clients",
            scenario_count(
                "connect-per-message", 10, "connect_msgs", 1024, "msgs_per_s"
            ),
            [
                Metric(
                    "f",
                    "value",
                    "(f) connect per msg x10",
                    "msg/s",
                    True,
                    "server or client CPU (see cpu%)",
                ),
                cpu_metric("f", "(f) connect per msg x10"),
            ],
        )
    )
    scenarios.append(
        Scenario(
            "t",
            "STARTTLS + AUTH PLAIN + one 1 KB message per connection, 10 clients",
            scenario_starttls_auth(10),
            [
                Metric(
                    "t",
                    "value",
                    "(t) STARTTLS+AUTH x10",
                    "sess/s",
                    True,
                    "server or client CPU: a TLS handshake on each side",
                ),
                Metric(
                    "t",
                    "cpu_ms_per_msg",
                    "(t) STARTTLS+AUTH CPU/sess",
                    "ms",
                    False,
                    "server CPU per session (user+system): steady under other load",
                ),
            ],
            kinds=("compat", "aiosmtpd"),
            secure=True,
        )
    )
    return scenarios


def measure(target: Target, scenario: Scenario, settings: Settings) -> dict[str, Any]:
    """Run one scenario against a fresh server of ``target``."""
    if target.setup_error:
        return {"ok": False, "error": target.setup_error, "wall": 0.0}
    if target.kind not in scenario.kinds:
        return {"ok": None, "error": "not applicable", "wall": 0.0}
    server = None
    started = time.monotonic()
    result: dict[str, Any]
    try:
        server = Server(
            target, scenario.loop, options=settings.server_options(scenario)
        )
        overflows = listen_overflows()
        result = scenario.run(server, settings)
        memory = server.memory()
        result.setdefault("server_peak_rss_mb", memory.get("VmHWM", 0) / 1024.0)
        result.setdefault("ok", True)
        after = listen_overflows()
        if overflows is not None and after is not None:
            result["listen_overflows"] = after - overflows
    except Failed as exc:
        result = {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failed measurement, not a crash
        detail = "%s: %s" % (type(exc).__name__, exc)
        if server is not None and not server.child.alive():
            detail += "; server died: %s" % server.child.stderr_tail()
        result = {"ok": False, "error": detail}
    finally:
        if server is not None:
            server.stop()
    result["wall"] = time.monotonic() - started
    return result
