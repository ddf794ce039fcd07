"""The command line: ``python -m benchmarks [options]`` from the checkout.

Prepares the targets, runs every scenario round by round (inside a round
the targets take turns, A B C D, A B C D, ..., so slow drifts of a shared
machine hit all of them alike) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time

from . import AIOSMTPD_VERSION, HERE, REPO
from .clients import raise_fd_limit
from .report import format_number, print_report
from .scenarios import Scenario, Settings, build_scenarios, measure
from .venvs import ALL_TARGETS, DEFAULT_TARGETS, Target, prepare_targets

TARGET_HELP = """\
targets (--targets):
  stdlib-3.11    the smtpd module of CPython 3.11, run by Python 3.11
  compat-3.11    smtpd_compat from this checkout, under Python 3.11
  compat-3.13    smtpd_compat from this checkout, under Python 3.13
  aiosmtpd       aiosmtpd (--aiosmtpd-version) under Python 3.11
  aiosmtpd-3.13  the same under Python 3.13 (not run by default)
  limit          a selectors SMTP stub under Python 3.11: fixed replies,
                 message bytes thrown away unread but for the end mark;
                 the least work this machine can do for the same load
"""


def scenario_help(scenarios: list[Scenario]) -> str:
    """One paragraph per scenario: what it sends, what it reports, and
    what limits it by design."""
    lines = ["scenarios (--scenarios):"]
    indent = " " * 12
    for scenario in scenarios:
        lines.append("  %-9s %s" % (scenario.name, scenario.title))
        rows = ", ".join(
            "%s (%s is better)"
            % (metric.unit, "higher" if metric.higher_is_better else "lower")
            for metric in scenario.metrics
        )
        limits = "; ".join(dict.fromkeys(metric.limit for metric in scenario.metrics))
        for text in ("reports " + rows, "limited by " + limits):
            lines.append(
                textwrap.fill(
                    text, 79, initial_indent=indent, subsequent_indent=indent + "  "
                )
            )
    return "\n".join(lines)


def git_state(repo: str) -> str:
    """The commit of ``repo``, with "+dirty" for uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of a run."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark smtpd_compat against Python 3.11's smtpd, aiosmtpd and"
            " the limit of this machine (see benchmarks/README.rst)."
        ),
        epilog=TARGET_HELP + "\n" + scenario_help(build_scenarios()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds (default 5, quick 2)"
    )
    parser.add_argument("--quick", action="store_true", help="small counts, 2 rounds")
    parser.add_argument("--json", metavar="FILE", help="write all raw results to FILE")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated, from: %s" % ", ".join(ALL_TARGETS),
    )
    parser.add_argument(
        "--scenarios", default="", help="comma-separated scenario names"
    )
    parser.add_argument(
        "--idle-cap", type=int, default=0, help="(d) cap, default 10000"
    )
    parser.add_argument(
        "--idle-rounds",
        type=int,
        default=2,
        help="rounds for the slow idle-capacity scenarios (default 2)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="worker processes for the smtplib clients (default 2)",
    )
    parser.add_argument("--venv-dir", default=HERE, help="where the .venv-* live")
    parser.add_argument("--repo", default=REPO, help="smtpd_compat checkout to install")
    parser.add_argument("--aiosmtpd-version", default=AIOSMTPD_VERSION)
    parser.add_argument("--python311", help="Python 3.11 executable")
    parser.add_argument("--python313", help="Python 3.13 executable")
    parser.add_argument(
        "--stat",
        choices=("median", "best"),
        default="median",
        help="summarize the rounds by their median (default) or best value",
    )
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="print the tables of a run saved with --json, without running",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and exit")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the benchmark (or list its scenarios, or reprint a saved run)."""
    args = parse_args(argv)
    scenarios = build_scenarios()
    if args.from_json:
        with open(args.from_json) as saved:
            run = json.load(saved)
        print_report(run["meta"], run["results"], scenarios, args.stat)
        return 0
    if args.list:
        for scenario in scenarios:
            print("%-9s %s" % (scenario.name, scenario.title))
        return 0
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = set(wanted) - {s.name for s in scenarios}
        if unknown:
            print("unknown scenarios: %s" % ", ".join(sorted(unknown)), file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s.name in wanted]
    target_names = args.targets.split(",")
    unknown = set(target_names) - set(ALL_TARGETS)
    if unknown:
        print("unknown targets: %s" % ", ".join(sorted(unknown)), file=sys.stderr)
        return 2
    targets = [Target(name, *ALL_TARGETS[name]) for name in target_names]
    settings = Settings(args)
    fd_limit = raise_fd_limit()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    began = time.monotonic()
    prepare_targets(targets, args, log)
    for target in targets:
        log("%-12s %s" % (target.name, target.info or target.setup_error))

    raw = []
    for scenario in scenarios:
        rounds = settings.idle_rounds if scenario.idle else settings.rounds
        for round_number in range(1, rounds + 1):
            for target in targets:
                result = measure(target, scenario, settings)
                result["target"] = target.name
                result["scenario"] = scenario.name
                result["round"] = round_number
                raw.append(result)
                if result.get("ok") is None:
                    continue
                if result.get("ok") or "value" in result:
                    shown = (
                        format_number(result["value"]) + " " + scenario.metrics[0].unit
                    )
                    if not result.get("ok"):
                        shown += " (%s)" % result.get("note", "failed")
                    per_msg = result.get("cpu_us_per_msg")
                    if per_msg is not None:
                        shown += ", server CPU %s us/msg" % format_number(per_msg)
                    cpu = result.get("server_cpu")
                    if cpu is not None:
                        shown += ", cpu server %.0f%%" % (100 * cpu)
                    cpu = result.get("client_cpu")
                    if cpu is not None:
                        shown += " client %.0f%%" % (100 * cpu)
                    if result.get("listen_overflows"):
                        shown += ", %d listen overflows" % result["listen_overflows"]
                else:
                    shown = "FAILED: %s" % result["error"]
                shown += " [%.1f s]" % result["wall"]
                log(
                    "[%s] round %d/%d %-12s %s"
                    % (scenario.name, round_number, rounds, target.name, shown)
                )

    meta = {
        "repo": args.repo,
        "git": git_state(args.repo),
        "mode": "quick" if args.quick else "full",
        "rounds": settings.rounds,
        "idle_rounds": settings.idle_rounds,
        "counts": {
            "smtplib_1kb_msgs": settings.small_msgs,
            "pipelined_1kb_msgs": settings.pipelined_msgs,
            "smtplib_1mb_msgs": settings.big_msgs,
            "connect_per_msg_msgs": settings.connect_msgs,
            "starttls_auth_sessions": settings.tls_sessions,
            "huge_bytes": settings.huge_size,
            "idle_cap": settings.idle_cap,
            "idle_rss_conns": settings.idle_rss_conns,
        },
        "targets": {t.name: t.info or t.setup_error for t in targets},
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "fd_limit": fd_limit,
        "client_python": platform.python_version(),
        "client_processes": settings.client_processes,
        "seconds": time.monotonic() - began,
    }
    print()
    print_report(meta, raw, scenarios, args.stat)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "results": raw}, out, indent=1)
        print("\nraw results written to %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
