"""Process control for the orchestrator: child processes and what the
kernel says about them (CPU, memory, listen-queue drops).

The servers (``servers.py``) and the client workers (``clients.py``) run
as separate scripts; ``Child`` starts one and collects its stdout lines,
``Server`` is a running target, ``run_workers()`` starts a set of client
workers, lets them go at the same moment and sums their results.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from . import HERE

SERVERS_SCRIPT = os.path.join(HERE, "servers.py")
CLIENTS_SCRIPT = os.path.join(HERE, "clients.py")


def cpu_seconds_of(pid: int) -> float | None:
    """User+system CPU time used so far by process ``pid``."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy_seconds() -> float | None:
    """CPU seconds all processors have spent busy (not idle) since boot."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def memory_kb_of(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of process ``pid``, in kB."""
    found = {}
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped for a full listen queue.

    System-wide, so other programs can add to it; a jump during one
    measurement still shows a server whose backlog was too short.
    """
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            if "ListenOverflows" in table:
                return int(table["ListenOverflows"])
    return None


class Failed(Exception):
    """A scenario could not be measured for a target."""


class Child:
    """A subprocess whose stdout lines are collected by a reader thread."""

    def __init__(self, argv: list[str]) -> None:
        # closed by kill(), which every user calls in a finally clause
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            cwd=tempfile.gettempdir(),
        )
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with prefix (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed("no %r from child within %.0f s" % (prefix, timeout))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise Failed(
                    "child exited (status %s) before %r: %s"
                    % (self.proc.wait(), prefix, self.stderr_tail())
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 300) -> str:
        """The last line the child wrote to stderr (for a traceback, the
        exception)."""
        try:
            self.stderr_file.seek(0)
            text = self.stderr_file.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][-limit:] if lines else "(no output on stderr)"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self.stderr_file.close()


class Server:
    """A running target server."""

    def __init__(
        self,
        target: Any,
        loop: str,
        timeout: float = 30.0,
        options: list[str] | None = None,
    ) -> None:
        argv = [target.python, "-I", SERVERS_SCRIPT, "--serve", target.kind]
        argv += ["--loop", loop, *(options or [])]
        self.child = Child(argv)
        try:
            port, _, self.module_file = self.child.expect("READY", timeout).partition(
                " "
            )
            self.port = int(port)
        except BaseException:
            self.child.kill()
            raise
        self.pid = self.child.pid

    def memory(self) -> dict[str, int]:
        return memory_kb_of(self.pid)

    def cpu(self) -> float | None:
        """User+system CPU seconds the server has used so far.

        Asked of the server itself (SIGUSR1, see servers.py), which knows
        it to the microsecond; /proc's clock ticks are the fallback.
        """
        if self.child.alive():
            os.kill(self.pid, signal.SIGUSR1)
            try:
                return float(self.child.expect("CPU", 10))
            except (Failed, ValueError):
                pass
        return cpu_seconds_of(self.pid)

    def check_alive(self) -> None:
        if not self.child.alive():
            raise Failed(
                "server died (status %s): %s"
                % (self.child.proc.returncode, self.child.stderr_tail())
            )

    def stop(self) -> None:
        self.child.kill()


def clients_argv(mode: str, spec: dict[str, Any]) -> list[str]:
    """The command line of a client worker (--worker) or holder (--hold)."""
    return [sys.executable, "-I", CLIENTS_SCRIPT, mode, json.dumps(spec)]


def run_workers(
    server: Server, specs: list[dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """Start client workers, let them go together, and sum their results."""
    workers = []
    try:
        for spec in specs:
            workers.append(Child(clients_argv("--worker", spec)))
        for worker in workers:
            worker.expect("READY", 60)
        cpu_before = server.cpu()
        machine_before = machine_busy_seconds()
        for worker in workers:
            worker.send("GO")
        deadline = time.monotonic() + timeout
        results = []
        for worker in workers:
            left = max(1.0, deadline - time.monotonic())
            try:
                results.append(json.loads(worker.expect("RESULT", left)))
            except Failed as exc:
                if not server.child.alive():
                    raise
                raise Failed(
                    "clients not done after %.0f s: the server hung or is very"
                    " slow (%s)" % (timeout, exc)
                ) from None
        cpu_after = server.cpu()
        machine_after = machine_busy_seconds()
    finally:
        for worker in workers:
            worker.kill()
    errors = [error for result in results for error in result["errors"]]
    error_count = sum(result["error_count"] for result in results)
    sent = sum(result["sent"] for result in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    server.check_alive()
    if error_count:
        raise Failed("%d client errors, e.g. %s" % (error_count, "; ".join(errors[:3])))
    server_cpu = machine_cpu = server_cpu_seconds = None
    if cpu_before is not None and cpu_after is not None:
        server_cpu_seconds = cpu_after - cpu_before
        if wall > 0:
            server_cpu = server_cpu_seconds / wall
    if machine_before is not None and machine_after is not None and wall > 0:
        machine_cpu = (machine_after - machine_before) / wall
    return {
        "machine_cpu": machine_cpu,
        "sent": sent,
        "seconds": wall,
        "server_cpu": server_cpu,
        "server_cpu_seconds": server_cpu_seconds,
        "client_cpu": sum(r["cpu"] for r in results) / wall if wall > 0 else None,
        "client_processes": len(specs),
    }


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]
