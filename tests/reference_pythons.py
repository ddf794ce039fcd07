"""Finding the CPython interpreters whose standard library is the reference.

CPython 3.11's smtpd, asynchat and asyncore are the behavioural
specification, and 3.10's smtpd is the last with MailmanProxy.  Several
tests run them side by side with smtpd_compat; this module is the one place
that knows where they are: an environment variable when set, else the
newest matching pyenv installation.

It is imported by tests and by the scripts under tests/conformance and
tests/differential, so it depends on nothing but the standard library.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

#: Environment variable naming the interpreter for each reference version.
INTERPRETER_VARIABLES = {
    11: "SMTPD_COMPAT_REFERENCE_PYTHON",
    10: "SMTPD_COMPAT_REFERENCE_PYTHON_3_10",
}


def pyenv_root() -> str:
    """pyenv's root: ``pyenv root``, else ``$PYENV_ROOT``, else ``~/.pyenv``."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            answer = subprocess.run(
                [pyenv, "root"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            answer = ""
        if answer:
            return answer
    return os.environ.get("PYENV_ROOT") or os.path.join(
        os.path.expanduser("~"), ".pyenv"
    )


def newest_pyenv_prefix(minor: int) -> str | None:
    """The directory of the newest pyenv CPython 3.<minor>.N, or None."""
    found = []
    for path in glob.glob(os.path.join(pyenv_root(), "versions", "3.%d.*" % minor)):
        patch = os.path.basename(path).split(".")[2]
        # Skips 3.11-dev, 3.11.0rc1 and the like: only releases count.
        if patch.isdigit() and os.access(os.path.join(path, "bin", "python"), os.X_OK):
            found.append((int(patch), path))
    return max(found)[1] if found else None


def where_to_look(minor: int) -> str:
    """The pyenv pattern searched, for messages that say what was missing."""
    return os.path.join(pyenv_root(), "versions", "3.%d.*" % minor)


def reference_python(minor: int = 11) -> str | None:
    """The reference CPython 3.<minor> interpreter, or None when there is none.

    Its variable in INTERPRETER_VARIABLES wins over pyenv.
    """
    chosen = os.environ.get(INTERPRETER_VARIABLES[minor])
    if chosen:
        return chosen
    prefix = newest_pyenv_prefix(minor)
    return os.path.join(prefix, "bin", "python") if prefix else None


def reference_stdlib_file(minor: int, *parts: str) -> str | None:
    """A file of the newest pyenv CPython 3.<minor>'s standard library, or None."""
    prefix = newest_pyenv_prefix(minor)
    if prefix is None:
        return None
    path = os.path.join(prefix, "lib", "python3.%d" % minor, *parts)
    return path if os.path.isfile(path) else None
