#!/usr/bin/env python3
"""Run the running interpreter's own test_smtplib.py against smtpd_compat.

CPython's smtplib tests talk to servers built on smtpd (DebuggingServer
and SMTPChannel subclasses).  Each release takes smtpd from a different
place: 3.11 the deprecated standard library module, 3.12 ``test/smtpd.py``,
3.13 and later ``test/support/smtpd.py`` (the private spellings
``test.support._smtpd`` and ``_asyncore``, which CPython's main branch used
for a while, are accepted too).  This script reads the running
interpreter's ``test/test_smtplib.py``, rewrites its smtpd and asyncore
imports to use smtpd_compat (and smtpd_compat's asyncore, whose socket map
the servers register in), imports that copy from a scratch directory and
runs it.

The unmodified file is run as well, in a child process, as the baseline.
Exit status is 0 only when the adapted run has as many tests as the
baseline and every one passed; a skip or expected failure is accepted only
for a test that the unmodified file skips (or expects to fail) too on this
machine.  The final line printed is always::

    conformance: N passed, M failed
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import subprocess
import sys
import unittest

from _harness import (
    ConformanceSetupError,
    result_summary,
    rewrite_lines,
    run_adapted,
)

ENV_OVERRIDE = "SMTPD_COMPAT_CPYTHON_SMTPLIB_TESTS"
UPSTREAM_NAME = "test_smtplib.py"
UPSTREAM_MODULE = "test.test_smtplib"
ADAPTED_MODULE = "cpython_test_smtplib_adapted"
BASELINE_MARKER = "BASELINE-JSON: "
# Bounds for a run that hangs: the child baseline, and this whole process.
BASELINE_TIMEOUT = 600
RUN_TIMEOUT = 900

# The import lines of 3.11, 3.12 and 3.13 (still those of CPython's main
# branch), then the private spelling that main used in 2021-2022 (bpo-28533)
# and may take up again, in that order in each tuple.
REWRITES = [
    (
        (
            "asyncore = warnings_helper.import_deprecated('asyncore')",
            "from test.support import asyncore",
            "from test.support import _asyncore as asyncore",
        ),
        "asyncore = __import__({module!r}, fromlist=['asyncore']).asyncore",
    ),
    (
        (
            "smtpd = warnings_helper.import_deprecated('smtpd')",
            "from . import smtpd",
            "from test.support import smtpd",
            "from test.support import _smtpd as smtpd",
        ),
        "import {module} as smtpd",
    ),
]


def find_upstream_tests() -> str:
    """The test_smtplib.py of the running interpreter (or the override)."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        if os.path.isdir(override):
            override = os.path.join(override, UPSTREAM_NAME)
        if not os.path.isfile(override):
            raise ConformanceSetupError(
                f"{ENV_OVERRIDE} names {override!r}, which is not a file"
            )
        return override
    try:
        import test
    except ImportError as exc:
        raise ConformanceSetupError(
            f"this interpreter has no 'test' package ({exc}); install CPython's "
            f"test suite or set {ENV_OVERRIDE}"
        ) from exc
    path = os.path.join(os.path.dirname(test.__file__), UPSTREAM_NAME)
    if not os.path.isfile(path):
        raise ConformanceSetupError(f"{path} does not exist")
    return path


def load_unmodified(path: str):
    """Import the upstream file as it is, inside the ``test`` package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(UPSTREAM_MODULE, path)
    if spec is None or spec.loader is None:
        raise ConformanceSetupError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[UPSTREAM_MODULE] = module
    spec.loader.exec_module(module)
    return module


def run_baseline_here(path: str) -> int:
    """Child process: run the unmodified file, print its outcome as JSON."""
    module = load_unmodified(path)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
    print(BASELINE_MARKER + json.dumps(result_summary(result)))
    return 0


def run_baseline(path: str) -> dict:
    """Run the unmodified file in a child interpreter; its summary."""
    env = dict(os.environ, **{ENV_OVERRIDE: path})
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--baseline-child"],
        capture_output=True,
        text=True,
        env=env,
        timeout=BASELINE_TIMEOUT,
        check=False,  # the exit status is judged from the output below
    )
    for line in child.stdout.splitlines():
        if line.startswith(BASELINE_MARKER):
            return json.loads(line[len(BASELINE_MARKER) :])
    raise ConformanceSetupError(
        "the unmodified tests did not report a result (exit status "
        f"{child.returncode}):\n{child.stdout}\n{child.stderr}"
    )


def describe(label: str, summary: dict) -> str:
    return (
        f"{label}: ran {summary['run']} tests: {len(summary['failures'])} failures, "
        f"{len(summary['errors'])} errors, {len(summary['skipped'])} skipped, "
        f"{len(summary['expected_failures'])} expected failures, "
        f"{len(summary['unexpected_successes'])} unexpected successes"
    )


def judge(adapted: dict, baseline: dict) -> tuple[int, list[str], list[str]]:
    """(passed, problems, accepted) for the adapted run against the baseline."""
    problems = [f"failed: {name}" for name in adapted["failures"]]
    problems += [f"error: {name}" for name in adapted["errors"]]
    problems += [
        f"unexpected success: {name}" for name in adapted["unexpected_successes"]
    ]
    accepted = []
    for name, reason in sorted(adapted["skipped"].items()):
        if name in baseline["skipped"]:
            accepted.append(f"skipped, as in the unmodified run: {name} -- {reason}")
        else:
            problems.append(
                f"skipped (the unmodified file runs it): {name} -- {reason}"
            )
    for name in adapted["expected_failures"]:
        if name in baseline["expected_failures"]:
            accepted.append(f"expected failure, as in the unmodified run: {name}")
        else:
            problems.append(f"expected failure: {name}")
    passed = adapted["run"] - len(problems) - len(accepted)
    return passed, problems, accepted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--module",
        default="smtpd_compat",
        help="module to test in place of smtpd (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list every test")
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    faulthandler.dump_traceback_later(RUN_TIMEOUT, exit=True)

    try:
        upstream = find_upstream_tests()
        if args.baseline_child:
            return run_baseline_here(upstream)
        print(f"upstream tests: {upstream}")
        print(f"module under test: {args.module}")
        print(f"interpreter: {sys.executable} ({sys.version.split()[0]})")
        sys.stdout.flush()
        with open(upstream, encoding="utf-8") as handle:
            adapted_source = rewrite_lines(handle.read(), REWRITES, args.module)
        baseline = run_baseline(upstream)
    except (ConformanceSetupError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}")
        print("conformance: 0 passed, 0 failed")
        return 2
    print(describe("unmodified file", baseline))

    try:
        adapted = result_summary(
            run_adapted(ADAPTED_MODULE, adapted_source, args.verbose)
        )
    except ConformanceSetupError as exc:
        print(f"error: {exc}")
        print("conformance: 0 passed, 0 failed")
        return 1

    print(describe("adapted file", adapted))
    passed, problems, accepted = judge(adapted, baseline)
    for line in accepted + problems:
        print(line)
    if adapted["run"] != baseline["run"]:
        problems.append("count")
        print(
            f"error: {adapted['run']} tests ran, the unmodified file ran {baseline['run']}"
        )
    ok = not problems
    print("result: " + ("OK" if ok else "NOT OK"))
    print(f"conformance: {passed} passed, {adapted['run'] - passed} failed")
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
