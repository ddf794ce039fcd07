"""Shared pieces of the scripts that run CPython's own tests against us.

A conformance script takes one of CPython's test files at run time, swaps a
few of its import lines for imports of smtpd_compat, imports the result from
a scratch directory (nothing adapted is ever stored in the repository) and
runs it with unittest.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
import tempfile
import traceback
import unittest
from typing import Iterable, Sequence, Tuple

# One rewrite: the import lines it may replace (exactly one of them must
# occur in the file, exactly once) and the replacement, a format template
# with a {module} field.
Rewrite = Tuple[Sequence[str], str]

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class ConformanceSetupError(Exception):
    """The upstream tests cannot be found or adapted."""


def check_module_name(module: str) -> str:
    if not _MODULE_NAME.match(module):
        raise ConformanceSetupError(f"not a module name: {module!r}")
    return module


def rewrite_lines(text: str, rewrites: Iterable[Rewrite], module: str) -> str:
    """Apply each rewrite to *text*; raise if a line is missing or repeated."""
    check_module_name(module)
    lines = text.splitlines(True)
    for originals, template in rewrites:
        positions = [
            index
            for index, line in enumerate(lines)
            if line.rstrip("\r\n") in originals
        ]
        if len(positions) != 1:
            raise ConformanceSetupError(
                f"expected exactly one of the lines {list(originals)!r} in the "
                f"upstream file, found {len(positions)}; the upstream tests "
                "changed and the conformance script needs updating"
            )
        index = positions[0]
        stripped = lines[index].rstrip("\r\n")
        ending = lines[index][len(stripped) :]
        lines[index] = template.format(module=module) + ending
    return "".join(lines)


def import_from_directory(name: str, source: str, workdir: str):
    """Write *source* as ``<workdir>/<name>.py`` and import it."""
    path = f"{workdir}/{name}.py"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(source)
    sys.path.insert(0, workdir)
    try:
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        sys.path.remove(workdir)


def run_adapted(name: str, source: str, verbose: bool) -> unittest.TestResult:
    """Import *source* as module *name* from a scratch directory, run its tests.

    The scratch directory and the imported module are gone afterwards.
    Raises ConformanceSetupError (after printing the traceback) when the
    module cannot be imported, or skips itself as a whole.
    """
    workdir = tempfile.mkdtemp(prefix="smtpd-compat-conformance-")
    try:
        try:
            module = import_from_directory(name, source, workdir)
        except unittest.SkipTest as exc:
            raise ConformanceSetupError(
                f"the whole upstream module skipped itself: {exc}"
            ) from exc
        except Exception as exc:
            traceback.print_exc(file=sys.stdout)
            raise ConformanceSetupError(
                "importing the adapted upstream tests failed"
            ) from exc
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        runner = unittest.TextTestRunner(
            stream=sys.stdout, verbosity=2 if verbose else 1
        )
        return runner.run(suite)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        sys.modules.pop(name, None)


def short_id(test_id: str) -> str:
    """``module.Class.method`` -> ``Class.method`` (modules differ by run)."""
    return test_id.split(".", 1)[1] if "." in test_id else test_id


def result_summary(result: unittest.TestResult) -> dict:
    """The outcome of a unittest run as plain data (for JSON)."""
    return {
        "run": result.testsRun,
        "failures": [short_id(test.id()) for test, _ in result.failures],
        "errors": [short_id(test.id()) for test, _ in result.errors],
        "skipped": {short_id(test.id()): reason for test, reason in result.skipped},
        "expected_failures": [
            short_id(test.id()) for test, _ in result.expectedFailures
        ],
        "unexpected_successes": [
            short_id(test.id()) for test in result.unexpectedSuccesses
        ],
    }
