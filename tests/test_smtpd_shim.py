"""The top-level ``smtpd`` module installed with the package (smtpd.py).

On Python 3.12+ ``import smtpd`` must give smtpd_compat itself and
``python -m smtpd`` its command line; on 3.11 and older the standard
library's smtpd must win, even when our smtpd.py comes first on sys.path.
"""

import os
import smtplib
import subprocess
import sys
import sysconfig
import warnings

import pytest
from conftest import TIMEOUT, start_cli, subprocess_env

import smtpd_compat

NEW_PYTHON = sys.version_info >= (3, 12)
only_new = pytest.mark.skipif(not NEW_PYTHON, reason="stdlib has smtpd before 3.12")
only_old = pytest.mark.skipif(NEW_PYTHON, reason="stdlib has no smtpd since 3.12")


def import_smtpd():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import smtpd
    return smtpd


def under(path, directory):
    path = os.path.realpath(path)
    directory = os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


@only_new
def test_import_smtpd_is_smtpd_compat():
    smtpd = import_smtpd()
    assert smtpd is smtpd_compat
    assert sys.modules["smtpd"] is smtpd_compat


@only_new
def test_debugstream_assignment_reaches_smtpd_compat(monkeypatch):
    smtpd = import_smtpd()
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", sys.stderr)
    assert smtpd_compat.DEBUGSTREAM is sys.stderr


@only_old
def test_import_smtpd_is_the_standard_library_one():
    smtpd = import_smtpd()
    assert smtpd is not smtpd_compat
    assert under(smtpd.__file__, sysconfig.get_paths()["stdlib"])


@only_old
def test_standard_library_smtpd_wins_even_when_shim_comes_first():
    """subprocess_env() puts the directory holding our smtpd.py on PYTHONPATH."""
    code = (
        "import warnings; warnings.simplefilter('ignore');"
        "import smtpd, sys; print(smtpd.__file__); print(smtpd.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    path, name = result.stdout.split()
    assert name == "smtpd"
    assert under(path, sysconfig.get_paths()["stdlib"])


@only_new
def test_python_m_smtpd_runs_the_command_line():
    process, port = start_cli(
        ["-n", "-c", "DebuggingServer"], module="smtpd", text=True
    )
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.sendmail(
                "a@example.com",
                ["b@example.com"],
                b"Subject: shim\r\n\r\nhello through smtpd\r\n",
            )
    finally:
        process.terminate()
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            out, err = process.communicate()
    assert "---------- MESSAGE FOLLOWS ----------" in out, err
    assert "b'Subject: shim'" in out
    assert "b'X-Peer: 127.0.0.1'" in out
    assert "b'hello through smtpd'" in out
