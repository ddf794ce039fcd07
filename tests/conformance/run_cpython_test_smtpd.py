#!/usr/bin/env python3
"""Run CPython 3.11's own smtpd test module against smtpd_compat.

The upstream test file is not part of this repository.  It is looked up at
run time (see ``find_upstream_tests``), copied into a scratch directory with
two import lines rewritten so that it exercises our package, and executed
with unittest under whatever interpreter runs this script.  The interpreter's
own ``test.support`` and ``test.mock_socket`` helpers are used.

Exit status is 0 only when exactly ``--expect`` tests ran and every one of
them passed; skips, expected failures and unexpected successes all count as
problems.  The final line printed is always::

    conformance: N passed, M failed
"""

import argparse
import os
import sys

from _harness import ConformanceSetupError, rewrite_lines, run_adapted

# tests/, for the lookup of the reference interpreters shared by all tests.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from reference_pythons import reference_stdlib_file, where_to_look

ENV_OVERRIDE = "SMTPD_COMPAT_CPYTHON_TESTS"
UPSTREAM_NAME = "test_smtpd.py"
ADAPTED_MODULE = "cpython_test_smtpd_adapted"
DEFAULT_EXPECT = 153

# (the upstream line, which must appear exactly once; its replacement)
REWRITES = [
    (
        ("smtpd = warnings_helper.import_deprecated('smtpd')",),
        "import {module} as smtpd",
    ),
    (
        ("asyncore = warnings_helper.import_deprecated('asyncore')",),
        "asyncore = smtpd.asyncore",
    ),
]


def find_upstream_tests():
    """Return the path of CPython 3.11's test_smtpd.py or raise."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        candidate = override
        if os.path.isdir(candidate):
            candidate = os.path.join(candidate, UPSTREAM_NAME)
        if not os.path.isfile(candidate):
            raise ConformanceSetupError(
                f"{ENV_OVERRIDE} is set to {override!r} but no {UPSTREAM_NAME} exists there"
            )
        return candidate

    found = reference_stdlib_file(11, "test", UPSTREAM_NAME)
    if found is None:
        raise ConformanceSetupError(
            f"could not find CPython 3.11's {UPSTREAM_NAME} (looked in "
            f"{where_to_look(11)}); install Python 3.11 with pyenv or set "
            f"{ENV_OVERRIDE} to the file"
        )
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--module",
        default="smtpd_compat",
        help="module to test in place of smtpd (default: %(default)s)",
    )
    parser.add_argument(
        "--expect",
        type=int,
        default=DEFAULT_EXPECT,
        help="number of tests that must run and pass (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list every test")
    args = parser.parse_args(argv)

    try:
        upstream = find_upstream_tests()
    except ConformanceSetupError as exc:
        print(f"error: {exc}")
        print("conformance: 0 passed, 0 failed")
        return 2

    print(f"upstream tests: {upstream}")
    print(f"module under test: {args.module}")
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]})")
    sys.stdout.flush()

    try:
        with open(upstream, encoding="utf-8") as handle:
            adapted = rewrite_lines(handle.read(), REWRITES, args.module)
        result = run_adapted(ADAPTED_MODULE, adapted, args.verbose)
    except ConformanceSetupError as exc:
        print(f"error: {exc}")
        print("conformance: 0 passed, 0 failed")
        return 1

    unexpected = len(result.unexpectedSuccesses)
    expected_failures = len(result.expectedFailures)
    skipped = len(result.skipped)
    bad = (
        len(result.failures)
        + len(result.errors)
        + unexpected
        + expected_failures
        + skipped
    )
    passed = result.testsRun - bad

    for test, reason in result.skipped:
        print(f"skipped (counted as failure): {test.id()} -- {reason}")
    for test, _ in result.expectedFailures:
        print(f"expected failure (counted as failure): {test.id()}")
    for test in result.unexpectedSuccesses:
        print(f"unexpected success (counted as failure): {test.id()}")

    ok = bad == 0 and result.testsRun == args.expect
    print(
        "ran {} tests (expected {}): {} failures, {} errors, {} skipped, "
        "{} expected failures, {} unexpected successes -> {}".format(
            result.testsRun,
            args.expect,
            len(result.failures),
            len(result.errors),
            skipped,
            expected_failures,
            unexpected,
            "OK" if ok else "NOT OK",
        )
    )
    if result.testsRun != args.expect:
        print(f"error: {result.testsRun} tests ran but {args.expect} were expected")
    print(f"conformance: {passed} passed, {bad} failed")
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
