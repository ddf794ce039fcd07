"""Legacy programs give the same result with smtpd_compat as with 3.11's smtpd.

Each program in tests/legacy/ re-creates one way real projects used
``smtpd`` (its docstring says which, and where it was seen).  A program
imports ``smtpd`` (and ``asyncore``, maybe ``asynchat``) exactly as it
would have on Python 3.11, prints what it observed - replies the client
got, what the server captured - and exits.

Every program runs twice:

* reference: under a CPython 3.11 interpreter (see reference_python() in
  test_api_surface.py), whose standard library provides smtpd, asyncore
  and asynchat.  Done once per session for all programs.
* compat: under this interpreter, with ``smtpd`` being smtpd_compat.
  On Python 3.12+ nothing is arranged: ``import smtpd`` and
  ``python -m smtpd`` find the top-level shim installed with the package.
  On Python 3.11 and older the standard library's smtpd would win, so a
  bootstrap directory is put first on PYTHONPATH.  It holds an ``smtpd.py``
  that replaces itself with smtpd_compat in ``sys.modules`` on import, and
  runs smtpd_compat's command line when run with ``-m``.  PYTHONPATH is
  inherited, so ``python -m smtpd`` started by a program gets it too.
  asyncore and asynchat stay the standard library's there.

The standard output and exit status of the two runs must be identical.
Where a program meets a difference that README.rst documents under
"Differences from the standard library", the reference output is turned
into the expected one by a normaliser listed in DOCUMENTED_DIFFERENCES,
which quotes the README row it relies on (checked to be there).
"""

import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_api_surface import reference_python

LEGACY_DIR = Path(__file__).resolve().parent / "legacy"
README = Path(__file__).resolve().parent.parent / "README.rst"
PROGRAMS = sorted(
    path.name for path in LEGACY_DIR.glob("*.py") if not path.name.startswith("_")
)
# No program should come near this; it only keeps a hung one from hanging
# the suite.
PROGRAM_TIMEOUT = 30
WORKERS = 4

BOOTSTRAP = '''\
"""Test bootstrap (tests/test_legacy_programs.py): smtpd is smtpd_compat."""
import sys

import smtpd_compat

if __name__ == "__main__":
    smtpd_compat._main()
else:
    sys.modules[__name__] = smtpd_compat
'''

Run = collections.namedtuple("Run", "returncode stdout stderr seconds")


# A documented difference: the README text it relies on, and a function
# turning the reference program's stdout into what smtpd_compat must print.
Documented = collections.namedtuple("Documented", "readme_text normalise")


def _old_signature_handler_is_called(reference_stdout):
    """3.11 crashed on a process_message() without **kwargs; we deliver."""
    outcome = json.loads(reference_stdout)
    crashed = outcome["decode_data=False"]
    assert crashed == {
        "console_errors": ["TypeError"],
        "outcome": "disconnected",
        "received": [],
    }
    # The same message, delivered as with decode_data=True.
    outcome["decode_data=False"] = outcome["decode_data=True"]
    return (json.dumps(outcome, indent=1, sort_keys=True) + "\n").encode()


DOCUMENTED_DIFFERENCES = {
    "old_four_argument_handler.py": Documented(
        "A ``process_message()`` without ``**kwargs`` (the old signature) is called"
        " without ``mail_options``/``rcpt_options``.",
        _old_signature_handler_is_called,
    ),
}


def _environment(extra_path=None):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONSTARTUP", None)
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    return env


def _run(python, program, env, cwd):
    started = time.monotonic()
    try:
        done = subprocess.run(
            [python, str(LEGACY_DIR / program)],
            check=False,
            env=env,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROGRAM_TIMEOUT,
        )
    except subprocess.TimeoutExpired as expired:
        return Run(
            "timeout",
            expired.stdout or b"",
            expired.stderr or b"",
            time.monotonic() - started,
        )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _run_all(python, env, cwd):
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {name: pool.submit(_run, python, name, env, cwd) for name in PROGRAMS}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="session")
def legacy_workdir(tmp_path_factory):
    """An empty working directory, and the bootstrap for Python <= 3.11."""
    root = tmp_path_factory.mktemp("legacy")
    bootstrap = root / "bootstrap"
    bootstrap.mkdir()
    (bootstrap / "smtpd.py").write_text(BOOTSTRAP)
    work = root / "work"
    work.mkdir()
    return work, bootstrap


@pytest.fixture(scope="session")
def compat_env(legacy_workdir):
    _, bootstrap = legacy_workdir
    return _environment(None if sys.version_info >= (3, 12) else bootstrap)


@pytest.fixture(scope="session")
def reference_runs(legacy_workdir):
    work, _ = legacy_workdir
    return _run_all(reference_python(11), _environment(), work)


@pytest.fixture(scope="session")
def compat_runs(legacy_workdir, compat_env):
    work, _ = legacy_workdir
    return _run_all(sys.executable, compat_env, work)


def _describe(run):
    return "exit status %s after %.2f s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        run.returncode,
        run.seconds,
        run.stdout.decode("utf-8", "replace"),
        run.stderr.decode("utf-8", "replace")[-4000:],
    )


def test_there_are_enough_distinct_programs():
    assert len(PROGRAMS) >= 25
    for name in PROGRAMS:
        source = (LEGACY_DIR / name).read_text()
        assert source.startswith('"""'), (
            "%s: no docstring saying what it re-creates" % name
        )
        assert "Re-creates" in source.split('"""')[1], name


def test_compat_environment_uses_smtpd_compat(legacy_workdir, compat_env):
    # The comparison is only worth something if the compat run really
    # imports smtpd_compat as smtpd, for `import smtpd` and `-m smtpd`.
    work, _ = legacy_workdir
    probe = subprocess.run(
        [sys.executable, "-c", "import smtpd; print(smtpd.__name__)"],
        check=False,
        env=compat_env,
        cwd=str(work),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.stdout.strip() == "smtpd_compat", probe.stderr
    version = subprocess.run(
        [sys.executable, "-m", "smtpd", "--version"],
        check=False,
        env=compat_env,
        cwd=str(work),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == "Python SMTP proxy version 0.3\n"


def test_documented_differences_are_in_the_readme():
    readme = " ".join(README.read_text().split())
    for name, documented in DOCUMENTED_DIFFERENCES.items():
        assert name in PROGRAMS, name
        assert " ".join(documented.readme_text.split()) in readme, name


@pytest.mark.parametrize("program", PROGRAMS)
def test_same_result_as_python_3_11(program, reference_runs, compat_runs):
    reference = reference_runs[program]
    compat = compat_runs[program]
    assert reference.returncode == 0 and reference.stdout.strip(), (
        "the program fails on the reference interpreter itself:\n"
        + _describe(reference)
    )
    expected = reference.stdout
    documented = DOCUMENTED_DIFFERENCES.get(program)
    if documented is not None:
        expected = documented.normalise(expected)
    assert (compat.returncode, compat.stdout) == (0, expected), (
        "\n=== reference (Python 3.11 smtpd) ===\n%s\n=== smtpd_compat ===\n%s"
        % (_describe(reference), _describe(compat))
    )
