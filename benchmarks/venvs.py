"""The targets and the interpreters and virtual environments they run in.

A target is a server kind (see servers.py) under one Python version.
The stdlib and limit targets run in the plain interpreter; the others get
a virtual environment under ``benchmarks/.venv-*`` (``--venv-dir``), into
which smtpd_compat is reinstalled from a copy of the checkout on every
run, so the numbers are those of the working tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from typing import Callable

from . import PYENV_ROOT
from .procs import Failed


class Target:
    """One system under test: a server kind run by one Python version."""

    def __init__(self, name: str, version: str, kind: str, venv: str | None) -> None:
        self.name = name
        self.version = version  # "3.11"
        self.kind = kind  # "stdlib", "compat", "aiosmtpd" or "limit"
        self.venv = venv  # directory name under the venv dir, or None
        self.python = ""  # set by prepare_target()
        self.setup_error = ""
        self.info = ""


ALL_TARGETS = {
    "stdlib-3.11": ("3.11", "stdlib", None),
    "compat-3.11": ("3.11", "compat", ".venv-compat-3.11"),
    "compat-3.13": ("3.13", "compat", ".venv-compat-3.13"),
    "aiosmtpd": ("3.11", "aiosmtpd", ".venv-aiosmtpd-3.11"),
    "aiosmtpd-3.13": ("3.13", "aiosmtpd", ".venv-aiosmtpd-3.13"),
    "limit": ("3.11", "limit", None),
}
DEFAULT_TARGETS = ["stdlib-3.11", "compat-3.11", "compat-3.13", "aiosmtpd", "limit"]


def find_python(version: str, override: str | None) -> str:
    """The real executable of Python ``version`` (pyenv shims resolved)."""
    candidates = [override] if override else []
    candidates += (
        [
            os.path.join(PYENV_ROOT, "versions", name, "bin", "python" + version)
            for name in sorted(os.listdir(os.path.join(PYENV_ROOT, "versions")))
            if name.startswith(version + ".")
        ]
        if os.path.isdir(os.path.join(PYENV_ROOT, "versions"))
        else []
    )
    found = shutil.which("python" + version)
    if found:
        candidates.append(found)
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return out
    raise Failed(
        "no python%s found (give it with --python%s)"
        % (version, version.replace(".", ""))
    )


def pip(python: str, *args: str, timeout: float = 600) -> None:
    argv = [python, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Failed(
            "pip %s failed (exit status %d): %s"
            % (" ".join(args), done.returncode, " | ".join(tail))
        )


def source_copy(repo: str, into: str) -> str:
    """A copy of the checkout to build from, so the build leaves no files
    in the repository (a parallel tox run may be using it)."""
    target = os.path.join(into, "src")
    shutil.copytree(
        repo,
        target,
        ignore=shutil.ignore_patterns(
            ".git",
            ".tox",
            ".venv*",
            ".ci-cache",
            ".*_cache",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
        ),
    )
    return target


def prepare_targets(
    targets: list[Target], args: argparse.Namespace, log: Callable[[str], None]
) -> None:
    pythons: dict[str, str] = {}
    venv_dir = os.path.abspath(args.venv_dir)
    build_dir = tempfile.mkdtemp(prefix="smtpd-bench-")
    source = ""
    try:
        for target in targets:
            try:
                if target.version not in pythons:
                    override = getattr(args, "python" + target.version.replace(".", ""))
                    pythons[target.version] = find_python(target.version, override)
                base = pythons[target.version]
                if target.venv is None:
                    target.python = base
                else:
                    home = os.path.join(venv_dir, target.venv)
                    python = os.path.join(home, "bin", "python")
                    fresh = not os.path.exists(python)
                    if fresh:
                        log("creating %s" % home)
                        subprocess.run(
                            [base, "-m", "venv", home],
                            check=True,
                            timeout=300,
                            capture_output=True,
                        )
                    if target.kind == "compat":
                        if not source:
                            source = source_copy(args.repo, build_dir)
                        log(
                            "installing smtpd_compat from %s into %s"
                            % (args.repo, home)
                        )
                        if fresh:
                            pip(python, "install", source)
                        pip(python, "install", "--force-reinstall", "--no-deps", source)
                    else:
                        log(
                            "making sure aiosmtpd==%s is in %s"
                            % (args.aiosmtpd_version, home)
                        )
                        pip(python, "install", "aiosmtpd==%s" % args.aiosmtpd_version)
                    target.python = python
                target.info = describe_target(target)
            except (Failed, OSError, subprocess.SubprocessError) as exc:
                target.setup_error = "setup failed: %s" % exc
                log("%s: %s" % (target.name, target.setup_error))
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def describe_target(target: Target) -> str:
    """The interpreter and the server module a target runs, as a line."""
    if target.kind == "limit":
        return "Python %s, selectors SMTP stub from %s" % (
            python_version(target.python),
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "servers.py"),
        )
    module = {"stdlib": "smtpd", "compat": "smtpd_compat", "aiosmtpd": "aiosmtpd"}[
        target.kind
    ]
    code = (
        "import sys, warnings, importlib\n"
        "warnings.simplefilter('ignore')\n"
        "name, dist = sys.argv[1:3]\n"
        "module = importlib.import_module(name)\n"
        "try:\n"
        "    from importlib.metadata import version\n"
        "    found = version(dist)\n"
        "except Exception:\n"
        "    found = ''\n"
        "print('Python', sys.version.split()[0] + ',', name, found, 'from', module.__file__)\n"
    )
    done = subprocess.run(
        [target.python, "-I", "-c", code, module, module.replace("_", "-")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode:
        raise Failed(
            "cannot import %s (exit status %d): %s"
            % (module, done.returncode, done.stderr.strip()[-300:])
        )
    return done.stdout.strip()


def python_version(python: str) -> str:
    """The version of the interpreter ``python``, e.g. 3.11.7."""
    done = subprocess.run(
        [python, "-I", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode:
        raise Failed("cannot run %s: %s" % (python, done.stderr.strip()[-300:]))
    return done.stdout.strip()
