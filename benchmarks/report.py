"""The tables: medians (or best rounds) per target, their ratios, the CPU
use behind each number, and the failures.

Ratios are given against the stdlib (``x stdlib``), against aiosmtpd
(``x aiosmtpd``) and against the limit server (``x limit``, how close a
target comes to the least work this machine can do for the same load).
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from .scenarios import Metric, Scenario
from .venvs import ALL_TARGETS, Target


def format_number(value: float) -> str:
    """About three significant digits, no exponent."""
    if value >= 1000:
        return "%.0f" % value
    if value >= 100:
        return "%.1f" % value
    if value >= 10:
        return "%.2f" % value
    return "%.3f" % value


def summarize(
    runs: list[dict[str, Any]], metric: Metric, stat: str = "median"
) -> tuple[float | None, str, str]:
    """(summary value, cell text, CPU use and pace) for one target/metric.

    The summary is the median of the rounds, or with stat "best" the best
    round (highest or lowest, as the metric prefers).
    """
    if not runs:
        return None, "-", ""
    if all(run.get("ok") is None for run in runs):
        return None, "n/a", ""
    good = [run for run in runs if run.get("ok") and metric.key in run]
    capacity = metric.scenario in ("d", "d-select") and metric.key == "value"
    if capacity:
        # how many were held counts even when the server failed afterwards
        good = [run for run in runs if metric.key in run]
    if not good:
        return None, "failed", ""
    values = [run[metric.key] for run in good]
    if stat == "best":
        median = max(values) if metric.higher_is_better else min(values)
    else:
        median = statistics.median(values)
    text = format_number(median)
    if capacity and not all(run.get("ok") for run in good):
        text += " FAIL"
    elif len(good) < len(runs):
        text += " (%d/%d)" % (len(good), len(runs))
    return median, text, pace_text(good)


def spread(runs: list[dict[str, Any]], metric: Metric) -> str:
    """The lowest and highest value of the good rounds, as "low-high"."""
    values = [run[metric.key] for run in runs if run.get("ok") and metric.key in run]
    values = [value for value in values if value is not None]
    if not values:
        return "-"
    return "%s-%s" % (format_number(min(values)), format_number(max(values)))


def pace_text(runs: list[dict[str, Any]]) -> str:
    """Median CPU use of server/client/machine and what set the pace."""

    def middle(key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    server, client, machine = (
        middle("server_cpu"),
        middle("client_cpu"),
        middle("machine_cpu"),
    )
    if server is None:
        return ""
    shares = [server, client, machine]
    text = "/".join(
        "-" if share is None else "%.0f" % (100 * share) for share in shares
    )
    cores = os.cpu_count() or 1
    if server >= 0.85:
        limit = "server"
    elif (middle("listen_overflows") or 0) > 0:
        limit = "backlog"
    elif machine is not None and machine >= 0.85 * cores:
        limit = "machine"
    else:
        limit = "waits"
    return "%s %s" % (text, limit)


def render_table(rows: list[list[str]], header: list[str]) -> str:
    """Columns padded to their widest cell; the first left-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    out = []
    for index, row in enumerate([header, *rows]):
        cells = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def ratio(numerator: float | None, denominator: float | None) -> str:
    """numerator/denominator as text, or "-" where either is missing."""
    if numerator is None or denominator is None or denominator == 0:
        return "-"
    return "%.2f" % (numerator / denominator)


def report_tables(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    targets: list[Target],
    scenarios: list[Scenario],
    stat: str = "median",
) -> str:
    """The value, ratio and CPU tables of one run, as text."""
    names = [target.name for target in targets]
    medians: dict[tuple[str, str, str], float | None] = {}
    value_rows = []
    cpu_rows = []
    spread_rows = []
    for scenario in scenarios:
        for metric in scenario.metrics:
            row = [
                metric.label,
                metric.unit,
                "higher" if metric.higher_is_better else "lower",
            ]
            cpu_row = [metric.label]
            spread_row = [metric.label, metric.unit]
            for name in names:
                runs = results.get((name, scenario.name), [])
                median, text, cpu = summarize(runs, metric, stat)
                medians[(name, scenario.name, metric.key)] = median
                row.append(text)
                cpu_row.append(cpu or "-")
                spread_row.append(spread(runs, metric))
            value_rows.append(row)
            spread_rows.append(spread_row)
            # (the same for every row of a scenario: shown with its first)
            if metric is scenario.metrics[0] and any(
                cell != "-" for cell in cpu_row[1:]
            ):
                cpu_rows.append(cpu_row)

    pairs = []
    if "stdlib-3.11" in names:
        pairs += [(name, "stdlib-3.11") for name in names if name != "stdlib-3.11"]
    compat = [name for name in names if name.startswith("compat")]
    for other in [name for name in names if name.startswith("aiosmtpd")]:
        pairs += [(name, other) for name in compat]
    if "limit" in names:
        pairs += [(name, "limit") for name in compat]
    ratio_rows = []
    for scenario in scenarios:
        for metric in scenario.metrics:
            row = [metric.label, "higher" if metric.higher_is_better else "lower"]
            for top, bottom in pairs:
                row.append(
                    ratio(
                        medians[(top, scenario.name, metric.key)],
                        medians[(bottom, scenario.name, metric.key)],
                    )
                )
            ratio_rows.append(row)

    parts = [
        "%s per target (better: which direction is better)"
        % ("Medians over the rounds" if stat == "median" else "Best round"),
        "",
        render_table(value_rows, ["scenario", "unit", "better", *names]),
        "",
        "Spread: the lowest and highest round",
        "",
        render_table(spread_rows, ["scenario", "unit", *names]),
        "",
    ]
    if pairs:
        parts += [
            (
                "Ratios of those values, target/reference (a ratio > 1 is better when"
                " 'better' is 'higher', < 1 when it is 'lower')"
            ),
            "",
            render_table(
                ratio_rows,
                ["scenario", "better", *["%s/%s" % pair for pair in pairs]],
            ),
            "",
        ]
    parts += [
        "CPU use during the measurement in %% of one core: server/client/whole"
        " machine (%d cores), and what set the pace: server = the server was"
        " busy (>= 85%%); backlog = connections were dropped by a full listen"
        " queue and waited for SYN retransmission; machine = all cores were busy"
        " (client processes, or other load on a shared machine); waits = round"
        " trips." % (os.cpu_count() or 0),
        "",
        render_table(cpu_rows, ["scenario", *names]),
        "",
        "What limits each scenario by design:",
    ]
    for scenario in scenarios:
        for metric in scenario.metrics:
            if not metric.key.startswith("cpu_"):
                parts.append("  %-24s %s" % (metric.label, metric.limit))
    return "\n".join(parts)


def failures_text(
    results: dict[tuple[str, str], list[dict[str, Any]]], scenarios: list[Scenario]
) -> str:
    """Each distinct failure message, per target and scenario."""
    expected = {scenario.name: scenario.expected_failure for scenario in scenarios}
    lines = []
    for (name, scenario), runs in sorted(results.items()):
        seen = set()
        for run in runs:
            message = run.get("error") or (
                run.get("note") if run.get("ok") is False else None
            )
            if message and run.get("ok") is not None and message not in seen:
                seen.add(message)
                if expected.get(scenario):
                    message = "(expected: %s) %s" % (expected[scenario], message)
                lines.append("  %s / %s: %s" % (name, scenario, message))
    return "\n".join(lines)


def print_report(
    meta: dict[str, Any],
    raw: list[dict[str, Any]],
    scenarios: list[Scenario],
    stat: str,
) -> None:
    """Print the header, the tables and the failures of one run."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in raw:
        results.setdefault((result["target"], result["scenario"]), []).append(result)
    present = {result["scenario"] for result in raw}
    scenarios = [scenario for scenario in scenarios if scenario.name in present]
    targets = [Target(name, *ALL_TARGETS[name]) for name in meta["targets"]]
    print(
        "smtpd_compat benchmark: %s rounds (idle capacity: %s), %s, repo %s, %.0f s"
        % (
            meta.get("rounds", "?"),
            meta.get("idle_rounds", "?"),
            meta.get("mode", "?"),
            meta.get("git", "?"),
            meta.get("seconds", 0),
        )
    )
    for name, info in meta["targets"].items():
        print("  %-12s %s" % (name, info))
    print(
        "  machine: %s, %s CPUs, fd limit %s; client: Python %s, %s smtplib"
        " worker processes"
        % tuple(
            meta.get(key, "?")
            for key in (
                "platform",
                "cpus",
                "fd_limit",
                "client_python",
                "client_processes",
            )
        )
    )
    print()
    print(report_tables(results, targets, scenarios, stat))
    failures = failures_text(results, scenarios)
    if failures:
        print()
        print("Failures:")
        print(failures)
